"""The statistics of certification: counts in, decisions out; no torch, no I/O.

Everything that decides a certificate lives here and imports nothing heavier than
numpy and scipy, so it can be read, tested and replayed on its own:

- :mod:`~apiwrap.statistics.fixed`: Cohen's fixed-n CERTIFY and PREDICT.
- :mod:`~apiwrap.statistics.sequential`: the sequential designs in use (target radius,
  best radius) and candidate selection.
- :mod:`~apiwrap.statistics.settings`: the job's resolved :class:`CertificationSettings`.
- :mod:`~apiwrap.statistics.procedures`: one image's procedure over a vote source and the
  :class:`ImageResult` it produces.
- :mod:`~apiwrap.statistics.allocation`: which images a shared budget funds next.
- :mod:`~apiwrap.statistics.soundness` and :mod:`~apiwrap.statistics.cost`: a sequential
  design's exact false-certificate probability and its expected and most votes per image.
- :mod:`~apiwrap.statistics.votes`: vote records and the sample index layout.
- :mod:`~apiwrap.statistics.summary`: certified accuracy over images and what a budget bought;
  :mod:`~apiwrap.statistics.radii`: the radii every report reads.

The names below are imported on first use, so that importing one light module (the settings)
does not load scipy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from apiwrap.statistics.fixed import AbstainReason, Certificate, Prediction, certify, predict
    from apiwrap.statistics.procedures import ImageResult, decide, run_procedure
    from apiwrap.statistics.radii import report_radii
    from apiwrap.statistics.settings import CertificationSettings
    from apiwrap.statistics.summary import certified_accuracy
    from apiwrap.statistics.votes import CLEAN_SAMPLE, FAILED_QUERY, QueryRecord

_LAZY = {
    "AbstainReason": "apiwrap.statistics.fixed",
    "Certificate": "apiwrap.statistics.fixed",
    "Prediction": "apiwrap.statistics.fixed",
    "certify": "apiwrap.statistics.fixed",
    "predict": "apiwrap.statistics.fixed",
    "ImageResult": "apiwrap.statistics.procedures",
    "decide": "apiwrap.statistics.procedures",
    "run_procedure": "apiwrap.statistics.procedures",
    "report_radii": "apiwrap.statistics.radii",
    "CertificationSettings": "apiwrap.statistics.settings",
    "certified_accuracy": "apiwrap.statistics.summary",
    "CLEAN_SAMPLE": "apiwrap.statistics.votes",
    "FAILED_QUERY": "apiwrap.statistics.votes",
    "QueryRecord": "apiwrap.statistics.votes",
}

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


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'apiwrap.statistics' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
