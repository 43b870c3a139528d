"""The doors' configuration (the [proxy] table, a tenant's proxy options and AWS-style pair) and
the certificate cache's freshness rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from apiwrap.service import PROXY_DEFAULTS, load_config
from apiwrap.service.doors._cache import CertificateCache

TENANT = '[tenants.acme]\nkey_sha256 = "' + "a" * 64 + '"\n'


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "service.toml"
    path.write_text("[vendors.local]\n" + text)
    return path


def test_the_doors_default_to_the_target_design_and_take_options_per_tenant(tmp_path: Path) -> None:
    plain = load_config(_config(tmp_path, TENANT))
    tuned = load_config(
        _config(
            tmp_path,
            "[proxy]\nmax_queries = 80\ncache_ttl_s = 60\n"
            + TENANT
            + 'aws_access_key_id = "AKIAACME000000000000"\naws_secret_access_key = "s"\n'
            + 'proxy = { target_radius = 0.5, denoiser = "none" }\n',
        )
    )
    assert plain.proxy.options == PROXY_DEFAULTS == {"target_radius": 0.25, "max_queries": 200}
    assert tuned.proxy.options == {"max_queries": 80} and tuned.proxy.cache_ttl_s == 60
    acme = tuned.tenants["acme"]
    assert acme.proxy == {"target_radius": 0.5, "denoiser": "none"}
    assert (acme.aws_access_key_id, acme.aws_secret_access_key) == ("AKIAACME000000000000", "s")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[proxy]\ntarget_radius = -1\n", r"\[proxy\]: target_radius"),
        ("[proxy]\nradius = 1\n", r"\[proxy\]: radius"),
        ("[proxy]\ncache_ttl_s = -5\n", "cache_ttl_s"),
        (TENANT + "proxy = { alpha = 2 }\n", "tenants.acme.proxy: alpha"),
        (TENANT + 'aws_access_key_id = "AKIAACME000000000000"\n', "go together"),
        (TENANT + 'aws_access_key_id = "akia-lower"\naws_secret_access_key = "s"\n', "aws_access_key_id"),
        (
            TENANT.replace("acme", "one")
            + 'aws_access_key_id = "AKIASAME000000000000"\naws_secret_access_key = "s"\n'
            + TENANT.replace("acme", "two")
            + 'aws_access_key_id = "AKIASAME000000000000"\naws_secret_access_key = "t"\n',
            "share an aws_access_key_id",
        ),
    ],
)
def test_bad_door_settings_are_refused_when_the_config_loads(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config(_config(tmp_path, text))


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_a_cached_certificate_is_served_until_its_ttl(tmp_path: Path) -> None:
    clock = Clock()
    cache = CertificateCache(tmp_path / "cache.sqlite", ttl_s=60, clock=clock)
    cache.store("acme", "key", "job-1", "aws", "3.0")
    clock.now += 60
    at_ttl = cache.lookup("acme", "key")
    other_tenant = cache.lookup("bob", "key")
    clock.now += 1
    after_ttl = cache.lookup("acme", "key")
    cache.close()
    assert at_ttl == "job-1" and other_tenant is None and after_ttl is None


def test_a_new_model_version_retires_older_entries_and_a_zero_ttl_caches_nothing(tmp_path: Path) -> None:
    cache = CertificateCache(tmp_path / "cache.sqlite", ttl_s=600)
    cache.store("acme", "old", "job-1", "aws", "3.0")
    cache.store("acme", "other-vendor", "job-2", "azure", "2021-04-01")
    before = cache.lookup("acme", "old")
    cache.store("bob", "new", "job-3", "aws", "4.0")  # any tenant's fresh certificate shows the version
    assert (before, cache.lookup("acme", "old")) == ("job-1", None)
    assert cache.lookup("acme", "other-vendor") == "job-2"  # versions are per vendor
    cache.close()
    off = CertificateCache(tmp_path / "off.sqlite", ttl_s=0)
    off.store("acme", "key", "job-1", "aws", "3.0")
    assert off.lookup("acme", "key") is None
    off.close()
