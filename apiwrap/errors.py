"""One error tree for the whole of apiwrap: ``except ApiwrapError`` catches anything it raises on purpose.

    ApiwrapError
    ├── ConfigurationError (ValueError)   settings, names or files the user gave are wrong
    │   └── MissingExtra (ImportError)    an optional dependency is not installed: names the extra
    ├── ImageError (ValueError)           one input image cannot be certified; the batch goes on
    ├── VendorError                       a vendor query failed (apiwrap.adapters.errors)
    │   ├── Throttled(retry_after)
    │   ├── Transient
    │   │   └── MalformedAnswer
    │   ├── Rejected
    │   ├── AuthError
    │   └── Fatal
    ├── BudgetError                       money and query caps (apiwrap.budgets)
    │   ├── BudgetExceeded
    │   ├── PriceConfigError
    │   └── ReservationError
    ├── JournalError                      a job's journal cannot be used for this run
    ├── JobAborted                        a failure no other query can avoid stops the job
    └── ServiceError                      the HTTP service's answers (apiwrap.service)

The middle classes let callers catch by category. The built-in bases of ``ConfigurationError``,
``MissingExtra`` and ``ImageError`` keep ``except ValueError`` / ``except ImportError`` working.
This module imports nothing, so every package can raise from this tree.
"""

from __future__ import annotations

__all__ = [
    "ApiwrapError",
    "ConfigurationError",
    "ImageError",
    "JobAborted",
    "JournalError",
    "MissingExtra",
]


class ApiwrapError(Exception):
    """Base of every error apiwrap raises on purpose."""


class ConfigurationError(ApiwrapError, ValueError):
    """A setting, a name (vendor, denoiser) or a file the user gave cannot be used."""


class MissingExtra(ConfigurationError, ImportError):
    """An optional dependency is missing; the message says which extra installs it."""

    def __init__(self, message: str, *, extra: str | None = None) -> None:
        super().__init__(message)
        self.extra = extra


class ImageError(ApiwrapError, ValueError):
    """An input image that cannot be certified, with the reason."""


class JournalError(ApiwrapError, RuntimeError):
    """The journal cannot be used for this job (for example, different parameters)."""


class JobAborted(ApiwrapError, RuntimeError):
    """A failure that no other query can avoid either (refused credentials): the job stops."""
