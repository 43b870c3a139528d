"""A server killed mid-job (SIGKILL) and restarted finishes the job with no query paid twice;
SIGTERM stops it gracefully and the job resumes too."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

from apiwrap.adapters.emulators import EmulatorConfig, emulator
from apiwrap.service import add_tenant
from apiwrap.testing import fake_classify, solid_png

ROOT = Path(__file__).resolve().parents[1]
IMAGES = 3
QUERIES = IMAGES * (1 + 5 + 60)
SERVE = "import typer; from apiwrap.cli.serve import serve; typer.run(serve)"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start(config: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE, "--config", str(config), "--port", str(port), "--log-level", "warning"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited during start-up"
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return process, base
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("the server did not start")


def _progress(api: httpx.Client, job_id: str) -> int:
    return int(api.get(f"/v1/jobs/{job_id}").json()["progress"]["queries_done"])


def _wait_progress(api: httpx.Client, job_id: str, at_least: int) -> None:
    deadline = time.monotonic() + 60
    while _progress(api, job_id) < at_least:
        assert time.monotonic() < deadline, "the job made no progress"
        time.sleep(0.05)


def _in_flight(journal: Path) -> int:
    with sqlite3.connect(journal) as db:
        return int(db.execute("SELECT COUNT(*) FROM attempts WHERE finished_at IS NULL").fetchone()[0])


def test_killed_and_terminated_server_resumes_the_job_without_rebuying(tmp_path: Path) -> None:
    # A vendor with a TPS limit: the job takes seconds, long enough to be killed mid-way.
    vendor = emulator("aws", EmulatorConfig(classify=fake_classify, tps=80, burst=4))
    with vendor as endpoint:
        config = tmp_path / "service.toml"
        config.write_text(
            '[service]\nruns_dir = "runs"\n\n'
            "[vendors.aws]\nrequests_per_second = 60\nconcurrency = 4\n"
            f'options = {{ endpoint = "{endpoint}" }}\n'
        )
        key = add_tenant(config, "acme", max_usd="5")
        headers = {"Authorization": f"Bearer {key}"}
        files = [
            ("files", (f"{i}.png", solid_png((200, 30 + 40 * i, 30)), "image/png")) for i in range(IMAGES)
        ]

        first, base = _start(config)
        try:
            with httpx.Client(base_url=base, headers=headers, timeout=30) as api:
                job_id = api.post(
                    "/v1/jobs", params={"n0": 5, "n": 60, "selection": "leader"}, files=files
                ).json()["id"]
                _wait_progress(api, job_id, QUERIES // 4)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
        journal = tmp_path / "runs" / f"{job_id}.sqlite"
        lost_in_flight = _in_flight(journal)
        paid_at_kill = vendor.billable
        assert paid_at_kill < QUERIES

        second, base = _start(config)
        try:
            with httpx.Client(base_url=base, headers=headers, timeout=30) as api:
                _wait_progress(api, job_id, paid_at_kill + QUERIES // 4)
        finally:
            second.send_signal(signal.SIGTERM)
            # uvicorn shuts down (requests, then the lifespan) and re-raises the signal it caught.
            assert second.wait(timeout=30) in {0, -signal.SIGTERM}
        # SIGTERM let in-flight queries finish and be journaled: only the SIGKILL's stay open.
        assert _in_flight(journal) == lost_in_flight
        assert vendor.billable < QUERIES + lost_in_flight

        third, base = _start(config)
        try:
            with httpx.Client(base_url=base, headers=headers, timeout=30) as api:
                deadline = time.monotonic() + 120
                while (status := api.get(f"/v1/jobs/{job_id}").json())["status"] == "running":
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
                results = api.get(f"/v1/jobs/{job_id}/results").json()["results"]
                budget = api.get("/v1/budget").json()
        finally:
            third.send_signal(signal.SIGTERM)
            third.wait(timeout=30)

    assert status["status"] == "done"
    assert status["progress"] == {"queries_done": QUERIES, "queries_total": QUERIES}
    assert [r["status"] for r in results] == ["certified"] * IMAGES
    # Every query answered once; only those in flight at the SIGKILL could be bought twice.
    assert QUERIES <= vendor.billable <= QUERIES + lost_in_flight
    with sqlite3.connect(journal) as db:
        bought = db.execute(
            "SELECT image_id, sample_index, SUM(billed) FROM attempts GROUP BY image_id, sample_index"
        ).fetchall()
    assert len(bought) == QUERIES
    assert sum(times > 1 for *_, times in bought) <= lost_in_flight
    # The attempts the SIGKILL left without an outcome count as billed: the vendor may have charged them.
    assert budget["spent"]["billable_queries"] == sum(times for *_, times in bought) + lost_in_flight
