"""Vendors shared by every tenant: one adapter and one fair gate per vendor.

Each job runs its own :class:`~apiwrap.engine.scheduler.QueryScheduler` (budget, journal, retries)
on the shared adapter, which outlives every job, but every request waits for a turn at its
vendor's :class:`FairGate` (the scheduler's ``gate``): at most ``concurrency`` requests in flight
and ``requests_per_second`` starts for the whole server, granted round-robin across tenants. A
tenant with ten jobs waits its turn like a tenant with one, so no tenant can take the vendor's
rate limit from another. What each request came to is counted by :func:`count_request`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from apiwrap.adapters import Adapter, Throttled
from apiwrap.budgets import Price
from apiwrap.engine.scheduler import RequestOutcome
from apiwrap.service._metrics import Metrics

__all__ = ["FairGate", "SharedVendor", "count_request"]


class FairGate:
    """Admission to one vendor: a concurrency cap and a start rate, round-robin across tenants."""

    def __init__(self, concurrency: int, requests_per_second: float | None = None) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._free = concurrency
        self._interval = 1.0 / requests_per_second if requests_per_second else 0.0
        self._next_start = 0.0
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}
        self._turns: deque[str] = deque()  # tenants with waiters, next to be served first

    @asynccontextmanager
    async def slot(self, tenant: str) -> AsyncIterator[None]:
        await self._acquire(tenant)
        try:
            if self._interval:
                # Starts are spaced in grant order, so the rate is shared as fairly as the slots.
                now = time.monotonic()
                start = max(now, self._next_start)
                self._next_start = start + self._interval
                if start > now:
                    await asyncio.sleep(start - now)
            yield
        finally:
            self._release()

    async def _acquire(self, tenant: str) -> None:
        if self._free > 0 and not self._turns:
            self._free -= 1
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._waiting.setdefault(tenant, deque())
        if not queue:
            self._turns.append(tenant)
        queue.append(granted)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._release()  # granted just as we were cancelled: pass the slot on
            else:
                self._forget(tenant, granted)
            raise

    def _forget(self, tenant: str, granted: asyncio.Future[None]) -> None:
        queue = self._waiting.get(tenant)
        if queue is None or granted not in queue:
            return
        queue.remove(granted)
        if not queue:
            del self._waiting[tenant]
            self._turns.remove(tenant)

    def _release(self) -> None:
        while self._turns:
            tenant = self._turns.popleft()
            queue = self._waiting[tenant]
            granted = queue.popleft()
            if queue:
                self._turns.append(tenant)  # back of the line: one grant per tenant per round
            else:
                del self._waiting[tenant]
            if not granted.done():
                granted.set_result(None)
                return
        self._free += 1


@dataclass
class SharedVendor:
    """A configured vendor: its adapter (opened once, in the lifespan), gate, price and timeout."""

    name: str
    adapter: Adapter
    gate: FairGate
    price: Price
    concurrency: int
    request_timeout_s: float


def count_request(metrics: Metrics, vendor: str, tenant: str, request: RequestOutcome) -> None:
    """The vendor metrics of one request a job of ``tenant`` sent (the scheduler's ``on_request``)."""
    metrics.observe("apiwrap_vendor_request_seconds", request.seconds, vendor=vendor)
    for outcome in request.outcomes:
        metrics.count("apiwrap_vendor_queries_total", vendor=vendor, outcome=outcome)
        if outcome == Throttled.outcome:
            metrics.count("apiwrap_vendor_throttles_total", vendor=vendor)
    if request.billed_queries:
        metrics.count("apiwrap_spend_micro_usd_total", request.billed_micro_usd, vendor=vendor, tenant=tenant)
