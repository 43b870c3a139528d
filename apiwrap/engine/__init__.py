"""The engine of a job: noise, denoising, vendor queries, retries, money and the journal.

It drives the procedures of :mod:`apiwrap.statistics` with votes it buys from a vendor
adapter, one image's failure never stopping the others:

- :mod:`~apiwrap.engine.jobs`: :class:`JobSpec` and :func:`run_job` compose a job's parts.
- :mod:`~apiwrap.engine.runner`: the :class:`Engine` (images in, results out).
- :mod:`~apiwrap.engine.images`: the one place images are decoded and encoded.
- :mod:`~apiwrap.engine.noise`, :mod:`~apiwrap.engine.samples`: reproducible noise, denoising, PNG.
- :mod:`~apiwrap.engine.scheduler`: rate limits, retries of the same bytes, budget holds.
- :mod:`~apiwrap.engine.journal`: the SQLite journal (resume, replay).
- :mod:`~apiwrap.engine.replay`, :mod:`~apiwrap.engine.allocator`: re-certify from a journal;
  the live budget gate of a sequential job.
"""
