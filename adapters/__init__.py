"""Vendor adapters: turn a vendor's answer on exact image bytes into labels.

Adapters are found by name through a lazy registry, so listing vendors never imports
a vendor SDK; a missing SDK fails with the extra to install.
"""

from __future__ import annotations

import importlib
from typing import Any

from apiwrap.adapters.base import (
    NO_LABEL,
    Adapter,
    ImageLimits,
    Label,
    VendorAnswer,
    canonical_label,
    check_adapter,
    top1,
)
from apiwrap.adapters.errors import (
    AnswerLost,
    AuthError,
    Fatal,
    MalformedAnswer,
    Rejected,
    Throttled,
    TimedOut,
    Transient,
    VendorError,
)
from apiwrap.errors import ConfigurationError, MissingExtra

__all__ = [
    "NO_LABEL",
    "Adapter",
    "AnswerLost",
    "AuthError",
    "Fatal",
    "ImageLimits",
    "Label",
    "MalformedAnswer",
    "Rejected",
    "Throttled",
    "TimedOut",
    "Transient",
    "VendorAnswer",
    "VendorError",
    "available_vendors",
    "canonical_label",
    "check_adapter",
    "create_adapter",
    "top1",
]

# name -> ("module:factory", pip extra that provides its SDK)
_REGISTRY: dict[str, tuple[str, str | None]] = {
    "local": ("apiwrap.adapters.local:create", None),
    "aws": ("apiwrap.adapters.aws:create", "aws"),
    "google": ("apiwrap.adapters.google:create", "google"),
    "azure": ("apiwrap.adapters.azure:create", "azure"),
    "clarifai": ("apiwrap.adapters.clarifai:create", "clarifai"),
    "http": ("apiwrap.adapters.http:create", None),
}


def register(name: str, target: str, extra: str | None = None) -> None:
    """Register an adapter factory given as ``"module:callable"`` (imported on first use)."""
    _REGISTRY[name] = (target, extra)


def available_vendors() -> list[str]:
    return sorted(_REGISTRY)


def create_adapter(name: str, **options: Any) -> Adapter:
    """Build the adapter registered as ``name`` with keyword options (endpoint, ...)."""
    try:
        target, extra = _REGISTRY[name]
    except KeyError:
        raise ConfigurationError(
            f"unknown vendor {name!r}; choose one of {', '.join(available_vendors())}"
        ) from None
    module_name, factory_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f": pip install 'apiwrap-certify[{extra}]'" if extra else ""
        raise MissingExtra(
            f"vendor {name!r} needs a package that is not installed ({exc.name}){hint}"
        ) from exc
    return getattr(module, factory_name)(**options)
