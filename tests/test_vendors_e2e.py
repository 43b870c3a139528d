"""Certify through each vendor's real SDK against its wire emulator, with the engine retrying."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from apiwrap.adapters.emulators import EmulatorConfig, emulator
from apiwrap.engine.jobs import JobReport, JobSpec, run_job
from apiwrap.engine.scheduler import RetryPolicy
from apiwrap.statistics.procedures import CertificationSettings
from apiwrap.testing import fake_classify

VENDORS = ["aws", "google", "azure", "clarifai"]


def _image(colour: tuple[int, int, int], seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.normal(0, 25, (96, 96, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


IMAGES: list[tuple[str, Path | bytes]] = [
    ("reddish.png", _image((190, 90, 80), 1)),
    ("greenish.png", _image((90, 160, 100), 2)),
]


def _certify(vendor: str, endpoint: str, runs_dir: Path) -> JobReport:
    settings = CertificationSettings(
        vendor=vendor, sigma=0.25, n0=4, n=24, alpha=0.05, seed=7, selection="leader"
    )
    spec = JobSpec(
        settings=settings,
        job=vendor,
        runs_dir=runs_dir,
        vendor_options={"endpoint": endpoint},
        retry=RetryPolicy(max_attempts=5, backoff_base_s=0.01, backoff_max_s=0.05),
    )
    return asyncio.run(run_job(spec, IMAGES))


@pytest.mark.parametrize("vendor", VENDORS)
def test_engine_retries_throttling_itself_and_the_ledger_matches_the_vendor(
    vendor: str, tmp_path: Path
) -> None:
    running = emulator(vendor, EmulatorConfig(classify=fake_classify))
    with running as endpoint:
        running.inject("throttle", "throttle", "error")
        report = _certify(vendor, endpoint, tmp_path)
        calls, billable = running.calls, running.billable
    assert report.throttled >= 2 and report.retries >= 3
    # One emulator call per engine request: no SDK retried behind the engine's back.
    assert calls == report.requests
    assert billable == report.budget.spent.queries == sum(r.queries for r in report.results)
    assert all(r.failed_queries == 0 for r in report.results)


def test_every_vendor_gives_the_same_certificates(tmp_path: Path) -> None:
    certificates = {}
    for vendor in VENDORS:
        with emulator(vendor, EmulatorConfig(classify=fake_classify)) as endpoint:
            report = _certify(vendor, endpoint, tmp_path)
        certificates[vendor] = [
            (r.image, r.status, r.label, r.radius, r.reference_label) for r in report.results
        ]
    assert all(value == certificates["aws"] for value in certificates.values()), certificates
    assert any(status == "certified" for _, status, *_ in certificates["aws"])
