"""The statistics of certification: counts in, decisions out; no torch, no I/O.

Everything that decides a certificate lives here and imports nothing heavier than
numpy and scipy, so it can be read, tested and replayed on its own:

- :mod:`~apiwrap.statistics.fixed`: Cohen's fixed-n CERTIFY and PREDICT.
- :mod:`~apiwrap.statistics.sequential`: the sequential designs in use (target radius,
  best radius) and candidate selection.
- :mod:`~apiwrap.statistics.procedures`: one image's procedure over a vote source, with
  the job's :class:`CertificationSettings` and the :class:`ImageResult` it produces.
- :mod:`~apiwrap.statistics.allocation`: which images a shared budget funds next.
- :mod:`~apiwrap.statistics.votes`: vote records and the sample index layout.
- :mod:`~apiwrap.statistics.summary`: certified accuracy over images and what a budget bought;
  :mod:`~apiwrap.statistics.radii`: the radii every report reads.
"""

from __future__ import annotations

from apiwrap.statistics.fixed import AbstainReason, Certificate, Prediction, certify, predict
from apiwrap.statistics.procedures import CertificationSettings, ImageResult, decide, run_procedure
from apiwrap.statistics.radii import report_radii
from apiwrap.statistics.summary import certified_accuracy
from apiwrap.statistics.votes import CLEAN_SAMPLE, FAILED_QUERY, QueryRecord

__all__ = [
    "CLEAN_SAMPLE",
    "FAILED_QUERY",
    "AbstainReason",
    "Certificate",
    "CertificationSettings",
    "ImageResult",
    "Prediction",
    "QueryRecord",
    "certified_accuracy",
    "certify",
    "decide",
    "predict",
    "report_radii",
    "run_procedure",
]
