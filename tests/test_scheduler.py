"""The scheduler's seams for a shared vendor: a gate before each request, an observer after it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

from apiwrap.adapters import Throttled
from apiwrap.budgets import Budget, Price
from apiwrap.engine.journal import Journal
from apiwrap.engine.scheduler import QueryScheduler, RequestGate, RequestOutcome, RetryPolicy, VendorLimits
from apiwrap.statistics.votes import FAILED_QUERY, QueryRecord
from apiwrap.testing import ScriptedAdapter, solid_png

PRICE = Price(Decimal("1.00"))  # 1,000 micro-USD per image


async def _no_wait(seconds: float) -> None:
    return None


async def _query(
    tmp_path: Path,
    adapter: ScriptedAdapter,
    *,
    limits: VendorLimits,
    retry: RetryPolicy,
    gate: RequestGate | None = None,
    observed: list[RequestOutcome] | None = None,
) -> QueryRecord:
    journal = Journal(tmp_path / "job.sqlite")
    scheduler = QueryScheduler(
        adapter,
        journal,
        Budget(),
        price=PRICE,
        limits=limits,
        retry=retry,
        sleep=_no_wait,
        gate=gate,
        on_request=observed.append if observed is not None else None,
    )
    try:
        return await scheduler.query(journal.image_id("image"), 0, solid_png(), "digest")
    finally:
        await scheduler.aclose()
        journal.close()


async def test_the_vendors_timeout_starts_once_the_gate_grants_a_turn(tmp_path: Path) -> None:
    turn = asyncio.Lock()
    await turn.acquire()  # another job's request holds the vendor for 0.4 s
    asyncio.get_running_loop().call_later(0.4, turn.release)
    adapter = ScriptedAdapter([], then="cat")

    record = await _query(
        tmp_path,
        adapter,
        limits=VendorLimits(request_timeout_s=0.2),
        retry=RetryPolicy(max_attempts=1),
        gate=lambda: turn,
    )
    assert (record.outcome, record.label) == ("ok", "cat")
    assert len(adapter.calls) == 1


async def test_a_request_granted_no_turn_in_time_never_reaches_the_vendor(tmp_path: Path) -> None:
    @asynccontextmanager
    async def never() -> AsyncIterator[None]:
        await asyncio.Event().wait()
        yield

    adapter = ScriptedAdapter([], then="cat")
    observed: list[RequestOutcome] = []
    record = await _query(
        tmp_path,
        adapter,
        limits=VendorLimits(queue_timeout_s=0.05),
        retry=RetryPolicy(max_attempts=2),
        gate=never,
        observed=observed,
    )
    assert (record.outcome, record.label) == ("transient", FAILED_QUERY)
    assert adapter.calls == [] and observed == []


async def test_the_observer_hears_every_request_with_its_outcomes_and_billing(tmp_path: Path) -> None:
    adapter = ScriptedAdapter([Throttled("slow down", retry_after=0.0)], then="cat")
    observed: list[RequestOutcome] = []

    record = await _query(
        tmp_path, adapter, limits=VendorLimits(), retry=RetryPolicy(max_attempts=3), observed=observed
    )
    assert record.outcome == "ok"
    assert [(r.outcomes, r.billed_queries, r.billed_micro_usd) for r in observed] == [
        (("throttled",), 0, 0),
        (("ok",), 1, 1_000),
    ]
