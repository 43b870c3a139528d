"""apiwrap as an HTTP service: certified labels per tenant, with budgets, over FastAPI.

``create_app(load_config(path), path)`` builds the app (SIGHUP then reloads the tenants of
``path``); ``apiwrap serve`` runs it on uvicorn (``uvicorn_config``) with its JSON logs
(``configure_logging``). See ``docs/service.md`` for the endpoints, the configuration file and
the guarantees.
"""

from __future__ import annotations

from apiwrap.service._app import CertifyQuery, JobQuery, create_app, reload_tenants
from apiwrap.service._config import (
    DEFAULT_CONFIG,
    PROXY_DEFAULTS,
    MetricsConfig,
    ProxyConfig,
    ServiceConfig,
    TenantConfig,
    TenantKeys,
    VendorConfig,
    add_metrics_key,
    add_tenant,
    create_tenant_keys,
    hash_key,
    load_config,
    write_default_config,
)
from apiwrap.service._http import uvicorn_config
from apiwrap.service._jobs import prune_store
from apiwrap.service._logging import JsonFormatter, configure_logging
from apiwrap.service._store import Store

__all__ = [
    "DEFAULT_CONFIG",
    "PROXY_DEFAULTS",
    "CertifyQuery",
    "JobQuery",
    "JsonFormatter",
    "MetricsConfig",
    "ProxyConfig",
    "ServiceConfig",
    "TenantConfig",
    "TenantKeys",
    "VendorConfig",
    "add_metrics_key",
    "add_tenant",
    "configure_logging",
    "create_app",
    "create_tenant_keys",
    "hash_key",
    "load_config",
    "prune",
    "reload_tenants",
    "uvicorn_config",
    "write_default_config",
]


def prune(config: ServiceConfig, retention_days: float) -> int:
    """Delete the finished jobs older than ``retention_days`` (rows, images, journals); how many.

    Safe while the server runs on the same store: running jobs are never touched.
    """
    store = Store(config.store_path)
    try:
        return len(prune_store(store, config.runs_dir, retention_days))
    finally:
        store.close()
