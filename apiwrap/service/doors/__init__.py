"""The vendors' own APIs in front of the certification service (docs/proxy.md).

One door per vendor, each speaking that vendor's REST wire protocol as its SDK sends it:
``/aws`` (Rekognition DetectLabels), ``/google`` (Vision images:annotate), ``/azure``
(Computer Vision analyze and tag), ``/clarifai`` (PostModelOutputs over the JSON API). Behind
each, every image is one certification of the service (:mod:`._certify`), answered in the
vendor's shape with the certificate in ``X-Apiwrap-*`` headers.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from apiwrap.service.doors import aws, azure, clarifai, google
from apiwrap.service.doors._cache import CertificateCache
from apiwrap.service.doors._certify import Doors

__all__ = ["Doors", "cache_path", "include_doors", "open_doors"]


def cache_path(runs_dir: Path) -> Path:
    return runs_dir / "proxy-cache.sqlite"


def include_doors(app: FastAPI) -> None:
    """Add every vendor's door to the app (outside its OpenAPI schema: each vendor documents its own)."""
    aws.include(app)
    google.include(app)
    azure.include(app)
    clarifai.include(app)


def open_doors(app: FastAPI) -> Doors:
    """The doors' certifications over the app's job manager; close with :meth:`Doors.aclose`."""
    config = app.state.config
    cache = CertificateCache(cache_path(config.runs_dir), config.proxy.cache_ttl_s)
    return Doors(config, app.state.manager, app.state.vendors, cache)
