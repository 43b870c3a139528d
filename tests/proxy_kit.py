"""What the proxy tests share: a server with doors in front of an emulated vendor, and tenants."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from apiwrap.adapters.emulators import Emulator, EmulatorConfig, emulator
from apiwrap.engine.scheduler import VendorLimits
from apiwrap.service import ProxyConfig, ServiceConfig, TenantConfig, VendorConfig, create_app, hash_key
from apiwrap.testing import fake_classify, solid_png
from tests.test_service import ServerThread

RED = solid_png((200, 30, 30))  # fake_classify: "goldfish", whatever the noise
GREEN = solid_png((30, 200, 30))  # "tree frog"
#: Red and green alike: the votes split, so no certificate within a few queries.
TIED = solid_png((120, 120, 20))
#: The doors' options in these tests: no denoiser (fast), the sequential target design.
OPTIONS = {"target_radius": 0.25, "max_queries": 60, "denoiser": "none"}
API_KEYS = {"alice": "key-alice", "bob": "key-bob"}
AWS_KEYS = {"alice": ("AKIAALICE0000000TEST", "alice-secret"), "bob": ("AKIABOB00000000TEST0", "bob-secret")}


def proxy_config(
    tmp_path: Path,
    vendor: str,
    endpoint: str,
    caps: dict[str, dict[str, Any]] | None = None,
    cache_ttl_s: float = 86_400.0,
    **service: Any,
) -> ServiceConfig:
    tenants = {
        name: TenantConfig(
            name,
            hash_key(key),
            aws_access_key_id=AWS_KEYS[name][0],
            aws_secret_access_key=AWS_KEYS[name][1],
            **(caps or {}).get(name, {}),
        )
        for name, key in API_KEYS.items()
    }
    options = {"endpoint": endpoint} if endpoint else {}
    return ServiceConfig(
        runs_dir=tmp_path / "runs",
        vendors={vendor: VendorConfig(vendor, VendorLimits(concurrency=4), options)},
        tenants=tenants,
        proxy=ProxyConfig(options=dict(OPTIONS), cache_ttl_s=cache_ttl_s),
        **service,
    )


@contextmanager
def vendor_emulator(vendor: str, **config: Any) -> Iterator[Emulator]:
    running = emulator(vendor, EmulatorConfig(classify=fake_classify, **config))
    running.start()
    try:
        yield running
    finally:
        running.stop()


@contextmanager
def proxy_server(config: ServiceConfig) -> Iterator[str]:
    with ServerThread(create_app(config)) as base:
        yield base
