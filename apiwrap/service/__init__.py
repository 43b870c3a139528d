"""apiwrap as an HTTP service: certified labels per tenant, with budgets, over FastAPI.

``create_app(load_config(path))`` builds the app; ``apiwrap serve`` runs it on uvicorn. See
``docs/service.md`` for the endpoints, the configuration file and the guarantees.
"""

from __future__ import annotations

from apiwrap.service._app import CertifyParams, create_app
from apiwrap.service._config import (
    ServiceConfig,
    TenantConfig,
    VendorConfig,
    add_tenant,
    hash_key,
    load_config,
)

__all__ = [
    "CertifyParams",
    "ServiceConfig",
    "TenantConfig",
    "VendorConfig",
    "add_tenant",
    "create_app",
    "hash_key",
    "load_config",
]
