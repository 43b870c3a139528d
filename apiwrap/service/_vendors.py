"""Vendors shared by every tenant: one adapter and one fair gate per vendor.

Each job runs its own :class:`~apiwrap.engine.scheduler.QueryScheduler` (budget, journal, retries),
but every request goes through its vendor's :class:`FairGate`: at most ``concurrency``
requests in flight and ``requests_per_second`` starts for the whole server, granted
round-robin across tenants. A tenant with ten jobs waits its turn like a tenant with one, so
no tenant can take the vendor's rate limit from another.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from apiwrap.adapters import Adapter, Fatal, ImageLimits, Throttled, Transient, VendorAnswer, VendorError
from apiwrap.budgets import Price
from apiwrap.service._metrics import Metrics

__all__ = ["FairGate", "JobAdapter", "SharedVendor"]


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


class JobAdapter:
    """The shared adapter as one job sees it: fair admission, the vendor timeout, metrics, spend.

    ``aclose`` does nothing: :func:`apiwrap.engine.jobs.run_job` closes the adapter it is given when
    the job ends, and the shared one must outlive every job.
    """

    def __init__(
        self, vendor: SharedVendor, tenant: str, metrics: Metrics, on_billed: Callable[[int], None]
    ) -> None:
        self._vendor = vendor
        self._tenant = tenant
        self._metrics = metrics
        self._on_billed = on_billed
        self.name = vendor.adapter.name
        self.max_batch = vendor.adapter.max_batch
        self.limits: ImageLimits = vendor.adapter.limits
        self.model_options = getattr(vendor.adapter, "model_options", {})

    async def label_batch(self, images: Sequence[bytes]) -> list[VendorAnswer | VendorError]:
        async with self._vendor.gate.slot(self._tenant):
            started = time.monotonic()
            outcomes = [Fatal.outcome] * len(images)  # what the scheduler makes of an adapter bug
            try:
                # The vendor's own timeout starts here, not while waiting for a turn at the gate.
                async with asyncio.timeout(self._vendor.request_timeout_s):
                    results = await self._vendor.adapter.label_batch(images)
                outcomes = ["ok" if isinstance(r, VendorAnswer) else r.outcome for r in results]
                return results
            except TimeoutError:
                outcomes = [Transient.outcome] * len(images)
                raise Transient(f"no answer within {self._vendor.request_timeout_s:g} s") from None
            except VendorError as exc:
                outcomes = [exc.outcome] * len(images)
                raise
            except asyncio.CancelledError:
                outcomes = []  # the job stopped with the request in flight: no outcome to count
                raise
            finally:
                self._record(outcomes, time.monotonic() - started)

    def _record(self, outcomes: list[str], seconds: float) -> None:
        vendor = self._vendor.name
        self._metrics.observe("apiwrap_vendor_request_seconds", seconds, vendor=vendor)
        billed = 0
        for outcome in outcomes:
            self._metrics.count("apiwrap_vendor_queries_total", vendor=vendor, outcome=outcome)
            if outcome == Throttled.outcome:
                self._metrics.count("apiwrap_vendor_throttles_total", vendor=vendor)
            billed += self._vendor.price.bills(outcome)
        if billed:
            cost = billed * self._vendor.price.micro_usd_per_image
            self._metrics.count("apiwrap_spend_micro_usd_total", cost, vendor=vendor, tenant=self._tenant)
            self._on_billed(billed)

    async def aclose(self) -> None:
        return None
