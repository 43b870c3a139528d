"""Reports people can look at, built from a job's journal with no query to the vendor.

- :func:`write_csv`: one row per image (certificate, votes, queries, spend, model versions).
- :func:`write_png`: certified accuracy against radius with its 95% band, one curve per job.
- :func:`write_html`: one self-contained page: settings, spend, the curve, and per image its
  thumbnail, clean label, certificate or reason for abstaining, top votes, and a few of the
  denoised noisy copies sent (rebuilt from the seed; see :mod:`apiwrap.reports.evidence`).

The PNG needs matplotlib (the ``report`` extra). See docs/reports.md.
"""

from __future__ import annotations

from apiwrap.reports._job import ImageRecord, JobRecord, load_job
from apiwrap.reports.curve import curve_png, write_png
from apiwrap.reports.page import render_html, write_html
from apiwrap.reports.table import CSV_COLUMNS, read_csv, write_csv

__all__ = [
    "CSV_COLUMNS",
    "ImageRecord",
    "JobRecord",
    "curve_png",
    "load_job",
    "read_csv",
    "render_html",
    "write_csv",
    "write_html",
    "write_png",
]
