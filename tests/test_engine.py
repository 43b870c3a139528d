"""The engine under faults: no vote lost or counted twice, the ledger exact, the cap kept."""

from __future__ import annotations

import asyncio
import io
import sqlite3
from collections import Counter
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from apiwrap import adapters
from apiwrap.adapters import Adapter, AuthError, VendorAnswer, VendorError
from apiwrap.budgets import Price, PriceTable
from apiwrap.engine.jobs import JobReport, JobSpec, run_job
from apiwrap.engine.journal import ImageRow, Journal
from apiwrap.engine.scheduler import RetryPolicy, VendorLimits
from apiwrap.errors import JournalError
from apiwrap.statistics.fixed import AbstainReason
from apiwrap.statistics.procedures import CertificationSettings
from apiwrap.testing import ScriptedAdapter
from tests.fakes import FaultRates, FaultyVendor

FAST_RETRY = RetryPolicy(max_attempts=8, deadline_s=30, backoff_base_s=0.0005, backoff_max_s=0.005)
PRICES = PriceTable({"fake": Price(Decimal("1.00"))})  # 1,000 micro-USD per image


def _png(seed: int, size: int = 12) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _images(count: int) -> list[tuple[str, Path | bytes]]:
    return [(f"img{i}.png", _png(i)) for i in range(count)]


def _spec(tmp_path: Path, job: str = "job", **overrides: object) -> JobSpec:
    settings = CertificationSettings(
        vendor="fake", sigma=0.25, n0=10, n=60, alpha=0.01, seed=1, selection="leader"
    )
    options: dict[str, object] = {
        "settings": settings,
        "job": job,
        "runs_dir": tmp_path,
        "limits": VendorLimits(concurrency=16, request_timeout_s=0.2),
        "retry": FAST_RETRY,
    }
    options.update(overrides)
    return JobSpec(**options)  # type: ignore[arg-type]


def _run(spec: JobSpec, vendor: Adapter, images: list[tuple[str, Path | bytes]]) -> JobReport:
    return asyncio.run(run_job(spec, images, adapter=vendor, price_table=PRICES))


def _ledger(path: Path) -> tuple[int, int, int]:
    """(billed attempts, their micro-USD, query rows) straight from the journal file."""
    with sqlite3.connect(path) as db:
        billed, cost = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(cost_micro_usd), 0) FROM attempts WHERE billed=1"
        ).fetchone()
        queries = db.execute("SELECT COUNT(*) FROM queries").fetchone()[0]
    return billed, cost, queries


def _certificates(report: JobReport) -> list[tuple[str, str, str | None, float | None]]:
    return [(r.image, r.status, r.label, r.radius) for r in report.results]


_BUILT: list[ScriptedAdapter] = []


def _built_adapter() -> ScriptedAdapter:
    """The factory of vendor ``fake`` in test_a_job_closes_the_adapter_it_built_and_not_a_lent_one."""
    _BUILT.append(ScriptedAdapter([], then="cat", name="fake"))
    return _BUILT[-1]


def test_a_job_closes_the_adapter_it_built_and_not_a_lent_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(adapters._REGISTRY, "fake", ("tests.test_engine:_built_adapter", None))
    lent = ScriptedAdapter([], then="cat", name="fake")
    _run(_spec(tmp_path, "lent"), lent, _images(1))
    asyncio.run(run_job(_spec(tmp_path, "built"), _images(1), price_table=PRICES))
    assert not lent.closed and len(lent.calls) > 0
    assert [adapter.closed for adapter in _BUILT] == [True]


def test_faults_lose_no_vote_and_change_no_certificate(tmp_path: Path) -> None:
    images = _images(20)
    clean = _run(_spec(tmp_path, "clean"), FaultyVendor(), images)
    faults = FaultRates(throttle=0.05, timeout=0.02, reset=0.05, server_error=0.05, malformed=0.05)
    vendor = FaultyVendor(faults=faults, seed=3)
    # 22% of attempts fail; with 8 attempts one of the 1,420 queries exhausts its retries in
    # about 1% of runs (the fault draws follow the concurrent request order), which is a
    # correctly recorded failed query, not a lost vote. 14 attempts make that ~1e-6 per run.
    patient = RetryPolicy(max_attempts=14, deadline_s=60, backoff_base_s=0.0005, backoff_max_s=0.005)
    faulty = _run(_spec(tmp_path, "faulty", retry=patient), vendor, images)

    queries_per_image = 1 + 10 + 60
    assert all(r.queries == queries_per_image and r.failed_queries == 0 for r in faulty.results)
    assert all(r.estimation_votes == 60 for r in faulty.results)
    # Retries re-send the same bytes, so faults cannot change a single vote.
    assert _certificates(faulty) == _certificates(clean)
    billed, cost, rows = _ledger(faulty.journal)
    assert rows == 20 * queries_per_image
    # Every billable answer is in the ledger exactly once, and so is every attempt that timed
    # out (possibly billed: this vendor bills none of them, a real one may bill each).
    possibly_billed = faulty.budget.possibly_billed.queries
    assert possibly_billed == faulty.outcomes["timeout"] > 0
    assert billed - possibly_billed == vendor.billed.total()
    assert vendor.billed["malformed"] > 0 and faulty.retries > 0 and faulty.throttled > 0
    assert cost == billed * 1000 == faulty.budget.spent.micro_usd


def test_money_cap_is_never_exceeded_at_high_concurrency(tmp_path: Path) -> None:
    vendor = FaultyVendor(faults=FaultRates(malformed=0.1, server_error=0.1), seed=5, latency_s=0.001)
    spec = _spec(tmp_path, limits=VendorLimits(concurrency=64), max_usd=Decimal("0.5"))
    report = _run(spec, vendor, _images(10))
    billed, cost, _ = _ledger(report.journal)
    assert cost <= 500_000 and vendor.billed.total() * 1000 <= 500_000
    assert billed == vendor.billed.total()
    assert report.budget_exhausted
    assert any(r.status == "budget" for r in report.results)
    assert vendor.max_in_flight > 8  # the cap held with many requests really in flight


def test_query_cap_stops_the_job_cleanly(tmp_path: Path) -> None:
    vendor = FaultyVendor(latency_s=0.002)  # answers take time, so many are in flight at the cap
    report = _run(_spec(tmp_path, max_queries=150), vendor, _images(4))
    assert vendor.billed.total() == 150
    statuses = Counter(r.status for r in report.results)
    assert statuses["budget"] >= 2
    # Queries answered after the first refusal still count for their image, in this run.
    assert sum(r.queries for r in report.results) == _ledger(report.journal)[2] == 150


def test_the_journal_names_the_fields_of_each_image_row(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "rows.sqlite")
    try:
        done = journal.image_id("a.png")
        journal.set_digest(done, "pixels-a")
        journal.finish_image(done, "done", {"status": "certified"}, None)
        pending = journal.image_id("b.png")
        rows = journal.images()
    finally:
        journal.close()
    assert rows == [
        ImageRow(
            image_id=done,
            name="a.png",
            digest="pixels-a",
            status="done",
            result={"status": "certified"},
            error=None,
        ),
        ImageRow(image_id=pending, name="b.png", digest=None, status="pending", result=None, error=None),
    ]


def test_resume_sends_nothing_already_answered(tmp_path: Path) -> None:
    images = _images(3)
    first = _run(_spec(tmp_path), FaultyVendor(), images)
    again_vendor = FaultyVendor()
    again = _run(_spec(tmp_path), again_vendor, images)
    assert again_vendor.calls == 0
    assert _certificates(again) == _certificates(first)


def test_resume_with_other_parameters_is_refused(tmp_path: Path) -> None:
    _run(_spec(tmp_path), FaultyVendor(), _images(1))
    other = _spec(
        tmp_path,
        settings=CertificationSettings(
            vendor="fake", sigma=0.5, n0=10, n=60, alpha=0.01, seed=1, selection="leader"
        ),
    )
    with pytest.raises(JournalError, match="sigma"):
        _run(other, FaultyVendor(), _images(1))


def test_a_query_that_always_fails_is_a_vote_against_and_never_redrawn(tmp_path: Path) -> None:
    vendor = FaultyVendor(faults=FaultRates(server_error=1.0))
    retry = RetryPolicy(max_attempts=3, backoff_base_s=0.0001, backoff_max_s=0.001)
    report = _run(_spec(tmp_path, retry=retry), vendor, _images(1))
    (result,) = report.results
    # Nothing was judged, so the image failed (no abstention); its failed votes are still counted.
    assert result.status == "failed" and result.abstain_reason is not None
    assert result.failed_queries == 70
    assert vendor.calls == 71 * 3  # every query tried exactly max_attempts times with one sample each
    assert report.budget.spent.queries == 0  # 5xx is not billed


def test_model_version_change_makes_the_certificate_abstain(tmp_path: Path) -> None:
    class Drifting(FaultyVendor):
        def _vote(self, image: bytes) -> VendorAnswer:
            answer = super()._vote(image)
            version = "fake-2" if self.calls > 40 else "fake-1"
            return VendorAnswer(answer.labels, version, answer.raw)

    report = _run(_spec(tmp_path, limits=VendorLimits(concurrency=1)), Drifting(), _images(1))
    (result,) = report.results
    assert result.abstain_reason == AbstainReason.MODEL_DRIFT.value
    assert result.model_versions == ["fake-1", "fake-2"]


def test_refused_credentials_stop_the_job_with_a_clear_error(tmp_path: Path) -> None:
    class Refusing(FaultyVendor):
        async def label_batch(self, images: object) -> list[VendorAnswer | VendorError]:
            self.calls += 1
            raise AuthError("the vendor refused the credentials (HTTP 401)")

    vendor = Refusing()
    report = _run(_spec(tmp_path, limits=VendorLimits(concurrency=1)), vendor, _images(3))
    assert all(r.status == "failed" and "credentials" in (r.error or "") for r in report.results)
    assert vendor.calls <= 3


def test_credentials_revoked_mid_job_leave_every_paid_query_counted(tmp_path: Path) -> None:
    class Revoking(FaultyVendor):
        async def label_batch(self, images: Sequence[bytes]) -> list[VendorAnswer | VendorError]:
            if self.calls >= 100:
                raise AuthError("the vendor refused the credentials (HTTP 401)")
            return await super().label_batch(images)

    vendor = Revoking(latency_s=0.001)
    report = _run(_spec(tmp_path, limits=VendorLimits(concurrency=8)), vendor, _images(3))
    assert Counter(r.status for r in report.results)["failed"] >= 1
    assert sum(r.queries for r in report.results) == _ledger(report.journal)[2] == vendor.billed.total()


def test_a_corrupt_image_fails_alone(tmp_path: Path) -> None:
    images = [*_images(2), ("broken.png", b"\x89PNG\r\n\x1a\n truncated")]
    report = _run(_spec(tmp_path), FaultyVendor(), images)
    statuses = {r.image: r.status for r in report.results}
    assert statuses["broken.png"] == "failed"
    assert "corrupt" in (report.results[2].error or "") or "readable" in (report.results[2].error or "")
    assert statuses["img0.png"] in {"certified", "abstained"} and statuses["img1.png"] in {
        "certified",
        "abstained",
    }


def test_batching_vendor_gets_full_batches_and_the_same_votes(tmp_path: Path) -> None:
    images = _images(4)
    single = _run(_spec(tmp_path, "single"), FaultyVendor(), images)
    vendor = FaultyVendor(max_batch=16)
    batched = _run(_spec(tmp_path, "batched"), vendor, images)
    assert _certificates(batched) == _certificates(single)
    assert vendor.calls < 4 * 71 / 4  # far fewer requests than queries


def test_replay_reproduces_the_job_and_refuses_to_invent_votes(tmp_path: Path) -> None:
    from apiwrap.engine.replay import replay_journal

    report = _run(_spec(tmp_path), FaultyVendor(), _images(3))
    replayed = replay_journal(report.journal).results
    assert _certificates(report) == [(r.image, r.status, r.label, r.radius) for r in replayed]
    smaller = replay_journal(report.journal, n0=5, n=30).results
    assert all(r.estimation_votes == 30 for r in smaller)
    with pytest.raises(ValueError, match="new queries"):
        replay_journal(report.journal, n=100)


def test_a_retrained_denoiser_under_the_same_name_cannot_resume_the_job(tmp_path: Path) -> None:
    import torch

    from apiwrap.denoisers import create_architecture, save_checkpoint

    torch.manual_seed(0)
    network = create_architecture("fast")
    checkpoint = save_checkpoint(
        network, tmp_path / "mine", {"architecture": "fast", "architecture_kwargs": {}, "sigma": 0.25}
    )
    settings = CertificationSettings(
        vendor="fake", sigma=0.25, n0=2, n=4, alpha=0.01, denoiser=str(checkpoint)
    )
    _run(_spec(tmp_path, settings=settings), FaultyVendor(), _images(1))
    with torch.no_grad():
        next(network.parameters()).add_(0.01)
    save_checkpoint(
        network, tmp_path / "mine", {"architecture": "fast", "architecture_kwargs": {}, "sigma": 0.25}
    )
    with pytest.raises(JournalError, match="other weights"):
        _run(_spec(tmp_path, settings=settings), FaultyVendor(), _images(1))
