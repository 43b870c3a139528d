"""Reliability under crashes, budgets and hostile input: caps kept, work bounded, outcomes honest."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from apiwrap.adapters import AuthError, ImageLimits, Rejected, Transient, VendorAnswer, VendorError
from apiwrap.adapters.local import LocalAdapter
from apiwrap.cli.main import ExitCode, _exit_code, app
from apiwrap.engine.images import DECODE_BYTES_PER_PIXEL
from apiwrap.engine.jobs import run_job
from apiwrap.engine.journal import Journal
from apiwrap.engine.scheduler import RetryPolicy, VendorLimits
from apiwrap.statistics.fixed import AbstainReason
from apiwrap.statistics.procedures import UNVERSIONED, CertificationSettings, ImageResult
from apiwrap.statistics.summary import certified_accuracy
from tests.fakes import FaultyVendor
from tests.test_crash import ROOT, _committed
from tests.test_engine import PRICES, _images, _run, _spec

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
        [sys.executable, "-m", "tests.memory_job", "huge-n", str(tmp_path), "100000", str(CAP)],
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


def _png_of(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (120, 90, 60)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_an_image_the_vendor_cannot_take_fails_before_any_query_and_counts_as_not_certified(
    tmp_path: Path,
) -> None:
    vendor = FaultyVendor(limits=ImageLimits(max_bytes=10_000_000, min_side=8))
    images = [*_images(2), ("tiny.png", _png_of(1, 1))]
    report = _run(_spec(tmp_path), vendor, images)

    tiny = next(r for r in report.results if r.image == "tiny.png")
    assert tiny.status == "failed" and tiny.queries == 0
    assert "1x1 is too small" in (tiny.error or "") and "at least 8 pixels" in (tiny.error or "")
    assert vendor.calls == 2 * 71  # the other two images only
    with sqlite3.connect(report.journal) as db:
        (tiny_attempts,) = db.execute(
            "SELECT COUNT(*) FROM attempts JOIN images USING (image_id) WHERE name = 'tiny.png'"
        ).fetchone()
    assert tiny_attempts == 0
    (row, *_) = certified_accuracy(report.results, [0.0])
    assert row.images == 3  # every image counts; the refused one is simply not certified


def test_the_local_vendor_refuses_bytes_outside_its_limits_without_classifying(tmp_path: Path) -> None:
    class Model:
        classifier_name, top_k, classified = "stub", 1, 0

        def classify(self, images: list[bytes]) -> list[list[tuple[str, float]]]:
            self.classified += 1
            return [[("cat", 1.0)]]

    model = Model()
    adapter = LocalAdapter(model)  # type: ignore[arg-type]
    tiny = asyncio.run(adapter.label_batch([_png_of(1, 1)]))
    fine = asyncio.run(adapter.label_batch([_png_of(32, 32)]))
    assert isinstance(tiny[0], Rejected) and "1x1" in str(tiny[0])
    assert isinstance(fine[0], VendorAnswer)
    assert model.classified == 1


def test_an_unreachable_vendor_fails_the_images_instead_of_abstaining(tmp_path: Path) -> None:
    class Unreachable(FaultyVendor):
        async def label_batch(self, images: Sequence[bytes]) -> list[VendorAnswer | VendorError]:
            self.calls += 1
            raise Transient("connection refused")

    retry_once = RetryPolicy(max_attempts=1)
    report = _run(_spec(tmp_path, retry=retry_once), Unreachable(), _images(2))
    assert [r.status for r in report.results] == ["failed", "failed"]
    assert all("every one of its" in (r.error or "") for r in report.results)
    assert _exit_code(report) is ExitCode.IMAGES_FAILED


def test_each_outcome_of_a_job_has_its_own_exit_code(tmp_path: Path) -> None:
    fine = _run(_spec(tmp_path, "fine"), FaultyVendor(), _images(2))
    failed = _run(_spec(tmp_path, "failed"), FaultyVendor(), [*_images(1), ("empty.png", b"")])
    unfunded = _run(_spec(tmp_path, "unfunded", max_queries=80), FaultyVendor(), _images(2))

    class Refusing(FaultyVendor):
        async def label_batch(self, images: Sequence[bytes]) -> list[VendorAnswer | VendorError]:
            raise AuthError("the vendor refused the credentials (HTTP 401)")

    aborted = _run(_spec(tmp_path, "aborted"), Refusing(), _images(2))
    codes = [_exit_code(report) for report in (fine, failed, unfunded, aborted)]
    assert codes == [ExitCode.OK, ExitCode.IMAGES_FAILED, ExitCode.BUDGET_EXHAUSTED, ExitCode.JOB_ABORTED]
    assert len({int(code) for code in codes}) == 4 and all(int(code) != 2 for code in codes[1:])


def test_results_are_streamed_as_each_image_finishes(tmp_path: Path) -> None:
    streamed: list[tuple[str, int]] = []

    def on_result(result: ImageResult) -> None:
        with sqlite3.connect(tmp_path / "job.sqlite") as db:
            done = db.execute("SELECT COUNT(*) FROM images WHERE status != 'pending'").fetchone()[0]
        streamed.append((result.image, done))

    images = _images(3)
    spec = _spec(tmp_path, images_in_flight=1)
    asyncio.run(run_job(spec, images, on_result=on_result, adapter=FaultyVendor(), price_table=PRICES))
    # One call per image, each after that image (and only the images before it) was journaled.
    assert streamed == [("img0.png", 1), ("img1.png", 2), ("img2.png", 3)]


def _large_image_job(tmp_path: Path, size: int) -> dict[str, Any]:
    large = tmp_path / "large.png"
    tile = np.random.default_rng(0).integers(0, 256, (500, 750, 3), dtype=np.uint8)
    Image.fromarray(tile).resize((6000, 4000), Image.Resampling.NEAREST).save(large)  # 24 MP
    finished = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.memory_job",
            "large-image",
            str(tmp_path / "runs"),
            str(large),
            str(size),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    outcome: dict[str, Any] = json.loads(finished.stdout.splitlines()[-1])
    assert outcome["statuses"]["small0.png"] != "failed" and outcome["statuses"]["small1.png"] != "failed"
    return outcome


def test_a_24_megapixel_image_whose_samples_the_vendor_cannot_take_is_refused_undecoded(
    tmp_path: Path,
) -> None:
    outcome = _large_image_job(tmp_path, size=0)
    assert outcome["statuses"]["large.png"] == "failed"
    assert "6000x4000 is too large" in outcome["errors"]["large.png"]
    assert "use --size" in outcome["errors"]["large.png"]
    assert outcome["rss_growth_mib"] < 50  # refused from its header: never decoded


def test_a_24_megapixel_image_sent_at_a_smaller_size_is_certified_within_the_decode_bound(
    tmp_path: Path,
) -> None:
    outcome = _large_image_job(tmp_path, size=64)
    assert outcome["statuses"]["large.png"] in {"certified", "abstained"}
    assert outcome["rss_growth_mib"] < 6000 * 4000 * DECODE_BYTES_PER_PIXEL / 2**20


class _SometimesUnversioned(FaultyVendor):
    """Names its model ("v1") in most answers and none in every fifth: a hidden model change."""

    def _vote(self, image: bytes) -> VendorAnswer:
        answer = super()._vote(image)
        return VendorAnswer(answer.labels, None if self.calls % 5 == 0 else "v1", answer.raw)


@pytest.mark.parametrize(
    "settings",
    [
        CertificationSettings(vendor="fake", sigma=0.25, n0=10, n=60, alpha=0.01, seed=1),
        CertificationSettings(
            vendor="fake", sigma=0.25, n0=10, alpha=0.01, seed=1, design="best", max_queries=100
        ),
    ],
    ids=["fixed", "sequential"],
)
def test_answers_without_a_version_among_versioned_ones_are_drift(
    tmp_path: Path, settings: CertificationSettings
) -> None:
    report = _run(_spec(tmp_path, settings=settings), _SometimesUnversioned(cat_share=1.0), _images(1))
    (result,) = report.results
    assert result.status == "abstained" and result.radius is None
    assert result.abstain_reason == AbstainReason.MODEL_DRIFT.value
    assert result.model_versions == ["v1", UNVERSIONED]


def test_a_vendor_that_never_names_its_model_is_not_drift(tmp_path: Path) -> None:
    report = _run(_spec(tmp_path), FaultyVendor(model_version=None, cat_share=1.0), _images(1))  # type: ignore[arg-type]
    (result,) = report.results
    assert result.status == "certified" and result.model_versions == []


def test_a_replay_marks_parameters_other_than_the_jobs_and_is_journaled(tmp_path: Path) -> None:
    report = _run(_spec(tmp_path), FaultyVendor(), _images(2))
    replay = ["replay", "job", "--runs-dir", str(tmp_path)]

    own = CliRunner().invoke(app, [*replay, "--out", str(tmp_path / "own.jsonl")])
    shopped = CliRunner().invoke(app, [*replay, "--alpha", "0.05", "--out", str(tmp_path / "shopped.jsonl")])

    assert own.exit_code == shopped.exit_code == 0, shopped.output
    assert "NOT THE JOB'S PARAMETERS" not in own.output
    assert "NOT THE JOB'S PARAMETERS: replayed with alpha=0.05 (the job's: 0.01)" in shopped.output
    own_lines = [json.loads(line) for line in (tmp_path / "own.jsonl").read_text().splitlines()]
    shopped_lines = [json.loads(line) for line in (tmp_path / "shopped.jsonl").read_text().splitlines()]
    assert all(line["replay"]["changed"] == {} for line in own_lines)
    alpha_changed = {"alpha": {"job": 0.01, "replay": 0.05}}
    assert all(line["replay"]["changed"] == alpha_changed for line in shopped_lines)
    # The queries shown are those the job bought (the replay sent none), whatever alpha is used.
    assert [line["queries"] for line in shopped_lines] == [r.queries for r in report.results] == [71, 71]
    assert "no query sent; the job bought 142 queries" in shopped.output
    journal = Journal.open_existing(report.journal)
    try:
        assert [changed for _, changed in journal.replays()] == [{}, alpha_changed]
    finally:
        journal.close()


def test_certified_accuracy_counts_unfunded_and_failed_images() -> None:
    certified = [
        ImageResult(image=f"c{i}", status="certified", label="cat", reference_label="cat", radius=0.5)
        for i in range(5)
    ]
    unfunded = [ImageResult(image=f"u{i}", status="budget") for i in range(4)]
    failed = [ImageResult(image="f", status="failed", error="unreadable")]
    (row,) = certified_accuracy([*certified, *unfunded, *failed], [0.25])
    assert (row.certified, row.images) == (5, 10)
    assert row.accuracy == 0.5
