"""A job killed with SIGKILL and resumed: no answered query re-bought, same certificates."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from tests.fakes import FaultyVendor
from tests.test_engine import _certificates, _images, _run, _spec

ROOT = Path(__file__).resolve().parents[1]
QUERIES = 6 * 71


def _committed(journal: Path) -> int:
    if not journal.exists():
        return 0
    try:
        with sqlite3.connect(journal) as db:
            return int(db.execute("SELECT COUNT(*) FROM queries").fetchone()[0])
    except sqlite3.OperationalError:
        return 0  # schema not created yet


def _run_in_process(runs_dir: Path, ledger: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.crash_job", str(runs_dir), str(ledger), "0.01"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_killed_job_resumes_without_rebuying_answered_queries(tmp_path: Path) -> None:
    uninterrupted = _run(_spec(tmp_path / "reference"), FaultyVendor(), _images(6))

    runs_dir, ledger = tmp_path / "crashed", tmp_path / "vendor-ledger.txt"
    journal = runs_dir / "job.sqlite"
    process = _run_in_process(runs_dir, ledger)
    deadline = time.monotonic() + 120
    while _committed(journal) < QUERIES // 3 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    assert process.poll() is None, "the job finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    committed_at_kill = _committed(journal)
    assert 0 < committed_at_kill < QUERIES
    with sqlite3.connect(journal) as db:
        in_flight_at_kill = db.execute("SELECT COUNT(*) FROM attempts WHERE finished_at IS NULL").fetchone()[
            0
        ]

    resumed_vendor = FaultyVendor(ledger_file=ledger)
    resumed = _run(_spec(runs_dir), resumed_vendor, _images(6))

    assert _certificates(resumed) == _certificates(uninterrupted)
    paid = Counter(line.split()[1] for line in ledger.read_text().splitlines())
    bought_twice = [digest for digest, times in paid.items() if times > 1]
    # Every sample was paid for; only queries in flight at the kill (sent, answer lost) twice.
    assert len(paid) == QUERIES
    assert len(bought_twice) <= in_flight_at_kill
    assert sum(paid.values()) == QUERIES + len(bought_twice)
    assert resumed_vendor.calls == QUERIES - committed_at_kill
