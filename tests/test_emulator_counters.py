"""Emulators' counters read while they run (and on SIGTERM), and Azure's older v2.1 route."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from apiwrap.adapters.emulators import Emulator
from apiwrap.adapters.emulators.counters import CountersServer
from apiwrap.adapters.emulators.fakes import solid_png

ROOT = Path(__file__).resolve().parents[1]
_AZURE_HEADERS = {"Ocp-Apim-Subscription-Key": "any", "Content-Type": "application/octet-stream"}


def test_azure_answers_the_v2_1_analyze_route_without_a_model_version(
    vendor_emulator: Callable[..., Emulator],
) -> None:
    running = vendor_emulator("azure")
    response = httpx.post(
        f"{running.endpoint}/vision/v2.1/analyze",
        params={"visualFeatures": "Tags"},
        content=solid_png(),
        headers=_AZURE_HEADERS,
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    assert answer["tags"][0]["name"] == "goldfish"
    assert "modelVersion" not in answer
    assert running.billable == 1


def test_counters_are_served_while_the_emulators_run(vendor_emulator: Callable[..., Emulator]) -> None:
    running = vendor_emulator("azure")
    counters = CountersServer([running])
    try:
        for _ in range(3):
            httpx.post(f"{running.endpoint}/vision/v3.2/tag", content=solid_png(), headers=_AZURE_HEADERS)
        (served,) = httpx.get(counters.url).json()["emulators"]
        assert served["vendor"] == "azure" and served["endpoint"] == running.endpoint
        assert served["calls"] == served["billable"] == 3
        assert httpx.get(counters.url.replace("/counters", "/other")).status_code == 404
    finally:
        counters.close()


def test_apiwrap_emulate_prints_its_counters_on_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "apiwrap", "emulate", "--vendor", "azure", "--model", "efficientnet-lite0"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines: dict[str, str] = {}
        deadline = time.monotonic() + 120
        while "counters" not in lines and time.monotonic() < deadline:
            name, _, value = process.stdout.readline().partition(" ")
            lines[name] = value.strip()
        endpoint, counters_url = lines["azure"], lines["counters"]
        image = solid_png()
        for _ in range(2):
            httpx.post(f"{endpoint}/vision/v3.2/tag", content=image, headers=_AZURE_HEADERS, timeout=60)
        assert httpx.get(counters_url).json()["emulators"][0]["billable"] == 2
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0
    assert "azure: 2 calls, 2 billable images" in stderr
