"""Reliability under crashes, budgets and hostile input: caps kept, work bounded, outcomes honest."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from apiwrap.engine.scheduler import VendorLimits
from tests.fakes import FaultyVendor
from tests.test_crash import ROOT, _committed
from tests.test_engine import _images, _run, _spec

CAP = 200
# Long enough that no request times out on a loaded machine: a request the client gave up on
# is settled by the price table (transient: not billed), a limit docs/reliability.md states.
PATIENT = VendorLimits(concurrency=16, request_timeout_s=10)


def _in_flight(journal: Path) -> int:
    with sqlite3.connect(journal) as db:
        return int(db.execute("SELECT COUNT(*) FROM attempts WHERE finished_at IS NULL").fetchone()[0])


def test_a_job_killed_under_a_cap_and_resumed_never_bills_past_the_cap(tmp_path: Path) -> None:
    runs_dir, ledger = tmp_path / "runs", tmp_path / "vendor-ledger.txt"
    journal = runs_dir / "job.sqlite"
    # 6 images want 426 queries; 16 at a time, each answered after 150 ms and billed on receipt.
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.crash_job", str(runs_dir), str(ledger), "0.15", str(CAP)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    deadline = time.monotonic() + 120
    while _committed(journal) < CAP // 2 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    assert process.poll() is None, "the job finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    in_flight_at_kill = _in_flight(journal)
    assert in_flight_at_kill > 0, "nothing was in flight at the kill: the test proves nothing"

    resumed = _run(
        _spec(runs_dir, max_queries=CAP, limits=PATIENT),
        FaultyVendor(ledger_file=ledger, bill_on_receipt=True),
        _images(6),
    )

    billed_by_vendor = len(ledger.read_text().splitlines())
    assert billed_by_vendor <= CAP
    # The report's spend is what the vendor may have charged: every attempt without an outcome
    # counts, including one killed after it was journaled but before it left the process.
    assert billed_by_vendor <= resumed.budget.spent.queries <= billed_by_vendor + in_flight_at_kill
    assert resumed.unanswered_in_flight == in_flight_at_kill
    assert resumed.budget_exhausted


def test_one_image_with_a_huge_n_under_a_small_cap_stops_at_the_cap_in_bounded_memory(tmp_path: Path) -> None:
    # Measured in its own process: peak RSS is per process. The timeout only guards a hang.
    finished = subprocess.run(
        [sys.executable, "-m", "tests.memory_job", str(tmp_path), "100000", str(CAP)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    outcome = json.loads(finished.stdout.splitlines()[-1])
    assert outcome["status"] == "budget"
    assert outcome["billed"] == outcome["vendor_calls"] == CAP
    # Work stops with the money: at most one window (2 x concurrency 16) prepared beyond it.
    assert outcome["samples_prepared"] <= CAP + 32
    assert outcome["rss_growth_mib"] < 50
