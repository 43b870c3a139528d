"""The server's configuration: one TOML file with its limits, its vendors and its tenants.

::

    [service]
    runs_dir = "runs/service"          # job journals and the job store (service.sqlite)
    default_vendor = "aws"
    max_request_bytes = 20_000_000     # whole request body, checked before it is read
    max_image_pixels = 16_000_000      # per image, checked from its header before decoding
    max_images_per_job = 256
    max_running_jobs = 32              # beyond it: 503 with Retry-After
    max_running_jobs_per_tenant = 8    # so one tenant cannot take them all
    prices = "prices.toml"             # optional budgets.PriceTable overrides
    certify_wait_s = 60                # /v1/certify answers 202 + Location after this long
    body_timeout_s = 30                # longest wait for the next chunk of a request body
    body_deadline_s = 120              # the whole body must arrive within this (then 408)
    max_connections = 256              # open connections; past it uvicorn answers 503
    retention_days = 30                # finished jobs older than this are pruned (omit: kept)

    [metrics]                          # written by ``apiwrap serve --create-metrics-key``
    key_sha256 = "..."                 # /metrics needs this key (absent: /metrics answers 404)
    tenant_labels = true               # tenant names on spend and budget series

    [vendors.aws]                      # every vendor a client may name; credentials stay here
    requests_per_second = 5            # shared by every tenant (fair round-robin)
    concurrency = 8
    request_timeout_s = 30
    options = { region = "us-east-1" } # create_adapter keyword options (endpoint, ...)

    [proxy]                            # the vendors' doors (docs/proxy.md)
    target_radius = 0.25               # any certification option: the doors' defaults
    max_queries = 200
    cache_ttl_s = 86400                # a certificate is served again for this long (0: no cache)

    [tenants.acme]                     # written by ``apiwrap serve --create-tenant acme``
    key_sha256 = "..."                 # sha256 of the API key; the key itself is never stored
    aws_access_key_id = "AKIA..."      # the /aws door's SigV4 key pair (the secret signs, so it is kept)
    aws_secret_access_key = "..."
    max_usd = "25.00"                  # optional: money cap over all the tenant's jobs
    max_queries = 100000               # optional: billable-query cap
    proxy = { denoiser = "none" }      # optional: this tenant's door options over [proxy]

Vendor credentials come from this file's ``options`` or from the environment the SDKs read
(``AWS_ACCESS_KEY_ID``, ...); clients can only name a configured vendor.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from apiwrap.budgets import parse_usd
from apiwrap.engine.scheduler import VendorLimits
from apiwrap.engine.settings import CertificationOptions, ConnectionOptions, SettingsError, parse_options

__all__ = [
    "DEFAULT_CONFIG",
    "PROXY_DEFAULTS",
    "MetricsConfig",
    "ProxyConfig",
    "ServiceConfig",
    "TenantConfig",
    "TenantKeys",
    "VendorConfig",
    "add_metrics_key",
    "add_tenant",
    "create_tenant_keys",
    "hash_key",
    "load_config",
    "write_default_config",
]

#: What ``apiwrap serve`` starts on when there is no config file: the in-process ``local``
#: vendor (no credentials, no cost), no tenants yet.
DEFAULT_CONFIG = """\
# apiwrap serve: written with the embedded defaults; see docs/service.md for every setting.
[service]
runs_dir = "runs/service"
default_vendor = "local"
retention_days = 30

[vendors.local]
concurrency = 2
"""

_TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_AWS_KEY_ID = re.compile(r"^[A-Z0-9]{16,128}$")
_AWS_KEY_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

#: The doors' certification options when ``[proxy]`` names none: the sequential target design,
#: whose early stop keeps a certificate within an SDK call's time.
PROXY_DEFAULTS: dict[str, Any] = {"target_radius": 0.25, "max_queries": 200}


def hash_key(key: str) -> str:
    """How an API key is stored: a random 256-bit token needs no slow hash, only a one-way one."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class TenantConfig:
    name: str
    key_sha256: str
    max_usd: Decimal | None = None
    max_queries: int | None = None
    #: The /aws door's SigV4 key pair: a signature is an HMAC, so the server keeps the secret.
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    #: Certification options of this tenant's door requests, over ``[proxy]``'s.
    proxy: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProxyConfig:
    """The vendors' doors: their certification options and how long a certificate is cached."""

    options: dict[str, Any] = field(default_factory=lambda: dict(PROXY_DEFAULTS))
    #: A door answers a certificate again from the cache for this long; 0 turns the cache off.
    cache_ttl_s: float = 86_400.0


@dataclass(frozen=True)
class TenantKeys:
    """What ``--create-tenant`` shows once: the API key and the AWS-style key pair."""

    api_key: str
    aws_access_key_id: str
    aws_secret_access_key: str


@dataclass(frozen=True)
class VendorConfig:
    name: str
    limits: VendorLimits = field(default_factory=VendorLimits)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricsConfig:
    #: sha256 of the key a scraper sends as ``Authorization: Bearer``; None: /metrics is off.
    key_sha256: str | None = None
    tenant_labels: bool = True


@dataclass(frozen=True)
class ServiceConfig:
    runs_dir: Path
    vendors: dict[str, VendorConfig]
    tenants: dict[str, TenantConfig]
    default_vendor: str | None = None
    max_request_bytes: int = 20_000_000
    max_image_pixels: int = 16_000_000
    max_images_per_job: int = 256
    max_running_jobs: int = 32
    #: So that one tenant cannot take every slot of ``max_running_jobs`` from the others.
    max_running_jobs_per_tenant: int = 8
    prices: Path | None = None
    #: How long a request may wait for its turn at a vendor shared with other jobs (the vendor's
    #: own timeout starts once it is granted) before its job's scheduler counts it as failed and retries.
    queue_timeout_s: float = 300.0
    #: How long ``POST /v1/certify`` waits for its job before answering 202 with its Location.
    certify_wait_s: float = 60.0
    body_timeout_s: float = 30.0
    #: The whole request body must arrive within this of its headers, however it trickles (408).
    body_deadline_s: float = 120.0
    #: Open connections (idle keep-alive ones included) past which uvicorn answers 503.
    max_connections: int = 256
    #: Finished jobs (row, images, journal) older than this many days are deleted; None: kept.
    retention_days: float | None = None
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)

    def __post_init__(self) -> None:
        if not self.vendors:
            raise ValueError("the service needs at least one [vendors.NAME] table")
        if self.default_vendor is not None and self.default_vendor not in self.vendors:
            raise ValueError(f"default_vendor {self.default_vendor!r} is not a configured vendor")
        for name in (
            "max_request_bytes",
            "max_image_pixels",
            "max_images_per_job",
            "max_running_jobs",
            "max_running_jobs_per_tenant",
            "max_connections",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in (
            "queue_timeout_s",
            "certify_wait_s",
            "body_timeout_s",
            "body_deadline_s",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.retention_days is not None and not self.retention_days > 0:
            raise ValueError("retention_days must be positive (omit it to keep jobs forever)")
        key_ids = [t.aws_access_key_id for t in self.tenants.values() if t.aws_access_key_id]
        if len(key_ids) != len(set(key_ids)):
            raise ValueError("two tenants share an aws_access_key_id")

    @property
    def vendor_names(self) -> list[str]:
        return sorted(self.vendors)

    @property
    def store_path(self) -> Path:
        return self.runs_dir / "service.sqlite"


def _check_keys(where: str, table: dict[str, Any], known: set[str]) -> None:
    # A misspelt limit must not pass silently as "no limit".
    if unknown := set(table) - known:
        raise ValueError(f"unknown keys in [{where}]: {', '.join(sorted(unknown))}")


def _door_options(where: str, options: Any) -> dict[str, Any]:
    """Certification options for the doors, checked against the one settings model."""
    if not isinstance(options, dict):
        raise ValueError(f"{where} must be a table of certification options")
    try:
        parse_options(CertificationOptions, options)
    except SettingsError as exc:
        raise ValueError(f"{where}: {exc}") from None
    return dict(options)


def _proxy(table: dict[str, Any]) -> ProxyConfig:
    options = dict(table)
    ttl = options.pop("cache_ttl_s", ProxyConfig.cache_ttl_s)
    if not isinstance(ttl, int | float) or ttl < 0:
        raise ValueError("proxy.cache_ttl_s must be a number of seconds >= 0")
    return ProxyConfig(_door_options("[proxy]", options or PROXY_DEFAULTS), float(ttl))


def _tenant(name: str, table: dict[str, Any]) -> TenantConfig:
    if not _TENANT_NAME.match(name):
        raise ValueError(f"tenant name {name!r}: letters, digits, '_' or '-' (at most 64)")
    known = {"key_sha256", "max_usd", "max_queries", "aws_access_key_id", "aws_secret_access_key", "proxy"}
    _check_keys(f"tenants.{name}", table, known)
    key_hash = str(table.get("key_sha256", ""))
    if not re.fullmatch(r"[0-9a-f]{64}", key_hash):
        raise ValueError(f"tenants.{name}.key_sha256 must be 64 lowercase hex digits")
    max_usd = table.get("max_usd")
    max_queries = table.get("max_queries")
    if max_queries is not None and (not isinstance(max_queries, int) or max_queries < 0):
        raise ValueError(f"tenants.{name}.max_queries must be an integer >= 0")
    try:
        usd = None if max_usd is None else parse_usd(max_usd)
    except (ValueError, InvalidOperation) as exc:
        raise ValueError(f"tenants.{name}.max_usd: {exc}") from None
    key_id, secret = table.get("aws_access_key_id"), table.get("aws_secret_access_key")
    if (key_id is None) != (secret is None):
        raise ValueError(f"tenants.{name}: aws_access_key_id and aws_secret_access_key go together")
    if key_id is not None and not (_AWS_KEY_ID.match(str(key_id)) and str(secret)):
        raise ValueError(f"tenants.{name}.aws_access_key_id: 16 to 128 capital letters or digits")
    proxy = _door_options(f"tenants.{name}.proxy", table.get("proxy", {}))
    return TenantConfig(name, key_hash, usd, max_queries, key_id, secret, proxy)


def _vendor(name: str, table: dict[str, Any]) -> VendorConfig:
    _check_keys(
        f"vendors.{name}", table, {"requests_per_second", "concurrency", "request_timeout_s", "options"}
    )
    try:
        connection = parse_options(
            ConnectionOptions, {"request_timeout": table.get("request_timeout_s", 30.0)}
        )
    except SettingsError as exc:
        raise ValueError(exc.describe(lambda _: f"vendors.{name}.request_timeout_s")) from None
    limits = VendorLimits(
        requests_per_second=table.get("requests_per_second"),
        concurrency=int(table.get("concurrency", 8)),
        request_timeout_s=connection.request_timeout,
    )
    options = table.get("options", {})
    if not isinstance(options, dict):
        raise ValueError(f"vendors.{name}.options must be a table")
    return VendorConfig(name, limits, dict(options))


def _metrics(table: dict[str, Any]) -> MetricsConfig:
    _check_keys("metrics", table, {"key_sha256", "tenant_labels"})
    key_hash = table.get("key_sha256")
    if key_hash is not None and not re.fullmatch(r"[0-9a-f]{64}", str(key_hash)):
        raise ValueError("metrics.key_sha256 must be 64 lowercase hex digits")
    tenant_labels = table.get("tenant_labels", True)
    if not isinstance(tenant_labels, bool):
        raise ValueError("metrics.tenant_labels must be true or false")
    return MetricsConfig(key_hash, tenant_labels)


def load_config(path: Path) -> ServiceConfig:
    """Read and check the server's TOML file (relative paths are relative to the file)."""
    with path.open("rb") as handle:
        data = tomllib.load(handle)
    _check_keys("the top level", data, {"service", "vendors", "tenants", "metrics", "proxy"})
    service = dict(data.get("service", {}))
    base = path.parent
    runs_dir = base / service.pop("runs_dir", "runs/service")
    prices = service.pop("prices", None)
    known = set(ServiceConfig.__dataclass_fields__) - {"vendors", "tenants", "metrics", "proxy"}
    _check_keys("service", service, known)
    return ServiceConfig(
        runs_dir=runs_dir,
        vendors={name: _vendor(name, table) for name, table in data.get("vendors", {}).items()},
        tenants={name: _tenant(name, table) for name, table in data.get("tenants", {}).items()},
        prices=base / prices if prices else None,
        metrics=_metrics(data.get("metrics", {})),
        proxy=_proxy(data.get("proxy", {})),
        **service,
    )


def _append_private(path: Path, text: str) -> None:
    """Append to an existing config, which may hold vendor credentials: kept owner-only.

    Never created here: a file holding only a tenant or a metrics key is not a service.
    """
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND)
    with os.fdopen(descriptor, "a") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(text)


def write_default_config(path: Path) -> None:
    """Create ``path`` (owner-only) with :data:`DEFAULT_CONFIG`; an existing file is an error."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(DEFAULT_CONFIG)


def add_metrics_key(path: Path) -> str:
    """Add a ``[metrics]`` table with a new scrape key to an existing config; return the key (shown once)."""
    existing = tomllib.loads(path.read_text())
    if "metrics" in existing:
        raise ValueError(f"{path} already has a [metrics] table; delete it to make a new key")
    key = "awm_" + secrets.token_urlsafe(32)
    _append_private(path, f'\n[metrics]\nkey_sha256 = "{hash_key(key)}"\ntenant_labels = true\n')
    return key


def add_tenant(path: Path, name: str, *, max_usd: str | None = None, max_queries: int | None = None) -> str:
    """Append a tenant to an existing config file; return its new API key (see :func:`create_tenant_keys`)."""
    return create_tenant_keys(path, name, max_usd=max_usd, max_queries=max_queries).api_key


def create_tenant_keys(
    path: Path, name: str, *, max_usd: str | None = None, max_queries: int | None = None
) -> TenantKeys:
    """Append a tenant to an existing config file; return its new keys (shown once).

    The API key is stored hashed; the AWS-style secret is stored as it is, since verifying a
    SigV4 signature means computing it again (the file is owner-only).
    """
    existing = tomllib.loads(path.read_text())
    if name in existing.get("tenants", {}):
        raise ValueError(f"tenant {name!r} already exists in {path}")
    keys = TenantKeys(
        api_key="aw_" + secrets.token_urlsafe(32),
        aws_access_key_id="AKIA" + "".join(secrets.choice(_AWS_KEY_ID_CHARS) for _ in range(16)),
        aws_secret_access_key=secrets.token_urlsafe(30),
    )
    table: dict[str, Any] = {
        "key_sha256": hash_key(keys.api_key),
        "aws_access_key_id": keys.aws_access_key_id,
        "aws_secret_access_key": keys.aws_secret_access_key,
    }
    if max_usd is not None:
        table["max_usd"] = str(parse_usd(max_usd))
    if max_queries is not None:
        table["max_queries"] = int(max_queries)
    _tenant(name, table)  # validate before writing
    lines = [f"\n[tenants.{name}]"]
    lines += [
        f"{key} = {value}" if isinstance(value, int) else f'{key} = "{value}"' for key, value in table.items()
    ]
    _append_private(path, "\n".join(lines) + "\n")
    return keys
