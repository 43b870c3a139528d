"""apiwrap: certified predictions from black-box vision APIs by denoised smoothing.

Sub-packages, each with one job:

- ``apiwrap.statistics``: counts in, certificates out (pure; numpy and scipy only).
- ``apiwrap.engine``: noise, denoising, queries, retries, budgets and the journal of a job.
- ``apiwrap.adapters``: vendors' SDKs and wire formats, and their emulators.
- ``apiwrap.denoisers``: denoiser networks, checkpoints, training and evaluation.
- ``apiwrap.budgets``: prices, caps and reservations.
- ``apiwrap.cli``, ``apiwrap.service``: the command line and the HTTP service.
- ``apiwrap.testing``: a scripted vendor and pytest fixtures for users' own tests.

The names below are imported on first use, so ``import apiwrap`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from apiwrap.adapters.errors import VendorError
    from apiwrap.api import Certifier, JobResult, certify, predict
    from apiwrap.budgets import BudgetError
    from apiwrap.engine.settings import CertificationOptions, SettingsError
    from apiwrap.errors import (
        ApiwrapError,
        ConfigurationError,
        ImageError,
        JobAborted,
        JournalError,
        MissingExtra,
    )
    from apiwrap.statistics.procedures import ImageResult
    from apiwrap.statistics.settings import CertificationSettings

_LAZY = {
    "Certifier": "apiwrap.api",
    "certify": "apiwrap.api",
    "predict": "apiwrap.api",
    "JobResult": "apiwrap.api",
    "CertificationSettings": "apiwrap.statistics.settings",
    "CertificationOptions": "apiwrap.engine.settings",
    "SettingsError": "apiwrap.engine.settings",
    "ImageResult": "apiwrap.statistics.procedures",
    "ApiwrapError": "apiwrap.errors",
    "ConfigurationError": "apiwrap.errors",
    "ImageError": "apiwrap.errors",
    "JobAborted": "apiwrap.errors",
    "JournalError": "apiwrap.errors",
    "MissingExtra": "apiwrap.errors",
    "BudgetError": "apiwrap.budgets",
    "VendorError": "apiwrap.adapters.errors",
}

__all__ = [
    "ApiwrapError",
    "BudgetError",
    "CertificationOptions",
    "CertificationSettings",
    "Certifier",
    "ConfigurationError",
    "ImageError",
    "ImageResult",
    "JobAborted",
    "JobResult",
    "JournalError",
    "MissingExtra",
    "SettingsError",
    "VendorError",
    "__version__",
    "certify",
    "predict",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'apiwrap' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
