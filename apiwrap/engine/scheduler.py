"""Sending queries to one vendor: rate limit, concurrency cap, batching, retries, budget, journal.

Every query's life is: reserve its price -> record the attempt as sent -> send (throttled,
capped, at most ``request_timeout_s``) -> settle the price (billed, released, or possibly
billed) -> record the attempt's outcome -> retry the SAME bytes if the failure is transient,
after reserving its price again -> commit the final vote. A query that fails every attempt is
committed as a vote for :data:`~apiwrap.statistics.fixed.FAILED_QUERY` (against the candidate),
never replaced by a fresh noise draw.

A request we stop waiting for (:class:`~apiwrap.adapters.TimedOut`) may still be served and
billed by the vendor, so it is settled as *possibly billed*: spent against every cap, tallied
apart. Its retry needs a reservation of its own, so a slow vendor that bills abandoned requests
can never be made to bill past a cap.

A vendor shared with other jobs (the service's) adds two seams: a ``gate`` each request waits at
for its turn before it leaves (the vendor's timeout starts once the turn is granted), and an
``on_request`` observer told what each request that left came to (outcomes, billing, time).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

from asyncio_throttle import Throttler
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exception,
    wait_random_exponential,
)

from apiwrap.adapters import (
    Adapter,
    AuthError,
    Fatal,
    Throttled,
    TimedOut,
    Transient,
    VendorAnswer,
    VendorError,
)
from apiwrap.budgets import Budget, BudgetExceeded, Price, format_usd
from apiwrap.engine.journal import Journal
from apiwrap.errors import JobAborted
from apiwrap.statistics.votes import FAILED_QUERY, QueryRecord

__all__ = ["QueryScheduler", "RequestGate", "RequestOutcome", "RetryPolicy", "VendorLimits"]


@dataclass(frozen=True, slots=True)
class VendorLimits:
    """How hard one vendor may be driven; shared by every image of a job."""

    requests_per_second: float | None = None
    concurrency: int = 8
    #: How long one request may take once it has left; then it is abandoned as possibly billed.
    request_timeout_s: float = 30.0
    #: How long a batching vendor's request waits for more ready samples to join it.
    batch_linger_s: float = 0.01
    #: The longest wait for a turn at the scheduler's ``gate``; None waits as long as it takes.
    queue_timeout_s: float | None = None


#: Entered before each request leaves and held until its answer: a turn at a vendor that other
#: jobs share. Its wait is no part of the request's timeout.
RequestGate = Callable[[], AbstractAsyncContextManager[object]]


@dataclass(frozen=True, slots=True)
class RequestOutcome:
    """What one request that reached the vendor came to."""

    #: One per image of the request: ``ok``, or the outcome of its :class:`VendorError`.
    outcomes: tuple[str, ...]
    billed_queries: int
    billed_micro_usd: int
    #: Images of the request that timed out: counted against the caps, perhaps never charged.
    possibly_billed_queries: int
    possibly_billed_micro_usd: int
    #: From the request leaving (its turn at the gate granted) to its answer, failure or timeout.
    seconds: float


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter, plus the vendor's own retry hint when it gives one."""

    max_attempts: int = 6
    deadline_s: float = 120.0
    backoff_base_s: float = 0.25
    backoff_max_s: float = 20.0


class _StillRetryable(Exception):
    """Some queries of a request failed transiently; carries the error that decides the wait."""

    def __init__(self, error: VendorError) -> None:
        super().__init__(str(error))
        self.error = error


def _retry_hint(exc: BaseException) -> float:
    error = exc.error if isinstance(exc, _StillRetryable) else exc
    return getattr(error, "retry_after", None) or 0.0


@dataclass(slots=True)
class _Query:
    image_id: int
    sample_index: int
    data: bytes
    digest: str
    future: asyncio.Future[QueryRecord]
    attempts: int = 0
    first_sent_at: float = 0.0
    last_error: VendorError | None = None
    raw: str | None = field(default=None, repr=False)


def _outcome(result: VendorAnswer | VendorError) -> str:
    return "ok" if isinstance(result, VendorAnswer) else result.outcome


def _reject(query: _Query, error: BaseException) -> None:
    if not query.future.done():
        query.future.set_exception(error)


def _throttler(requests_per_second: float) -> Throttler:
    if requests_per_second >= 1:
        return Throttler(rate_limit=round(requests_per_second), period=1.0)
    return Throttler(rate_limit=1, period=1.0 / requests_per_second)


class QueryScheduler:
    """Sends queries to one adapter for every image of a job."""

    def __init__(
        self,
        adapter: Adapter,
        journal: Journal,
        budget: Budget,
        *,
        price: Price,
        limits: VendorLimits = VendorLimits(),
        retry: RetryPolicy = RetryPolicy(),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        gate: RequestGate | None = None,
        on_request: Callable[[RequestOutcome], None] | None = None,
    ) -> None:
        self.adapter = adapter
        self._journal = journal
        self._budget = budget
        self._price = price
        self._limits = limits
        self._retry = retry
        self._sleep = sleep
        self._gate = gate
        self._on_request = on_request
        self._throttler = _throttler(limits.requests_per_second) if limits.requests_per_second else None
        self._slots = asyncio.Semaphore(limits.concurrency)
        self._waiting: list[_Query] = []
        self._wakeup = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._requests: set[asyncio.Task[None]] = set()
        self.aborted: BaseException | None = None
        self.stats: dict[str, int] = {"requests": 0, "retries": 0, "throttled": 0}

    async def query(self, image_id: int, sample_index: int, data: bytes, digest: str) -> QueryRecord:
        """Send one sample until it has a final outcome, and return its committed vote."""
        if self.aborted is not None:
            raise self.aborted
        if self._dispatcher is None:
            self._dispatcher = asyncio.create_task(
                self._dispatch(), name=f"apiwrap-{self.adapter.name}-dispatch"
            )
        future: asyncio.Future[QueryRecord] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Query(image_id, sample_index, data, digest, future))
        self._wakeup.set()
        return await future

    @property
    def window(self) -> int:
        """Queries worth having ready for this vendor at once: what it can take in flight, twice."""
        return 2 * self._limits.concurrency * max(1, self.adapter.max_batch)

    def check_affordable(self) -> None:
        """Raise :class:`BudgetExceeded` when what is already spent leaves no room for one more
        query, so no sample is prepared (noise, denoiser, PNG) for a query that cannot be sent.

        Reservations still open do not count: they may yet be released unbilled.
        """
        snapshot = self._budget.snapshot()
        cost = self._price.micro_usd_per_image
        if snapshot.max_queries is not None and snapshot.spent.queries + 1 > snapshot.max_queries:
            raise BudgetExceeded(
                f"query cap reached: spent {snapshot.spent.queries:,} of "
                f"{snapshot.max_queries:,} billable queries",
                cap="queries",
                limit=snapshot.max_queries,
                spent=snapshot.spent.queries,
                reserved=snapshot.reserved.queries,
                requested=1,
            )
        if snapshot.max_micro_usd is not None and snapshot.spent.micro_usd + cost > snapshot.max_micro_usd:
            raise BudgetExceeded(
                f"money cap reached: spent {format_usd(snapshot.spent.micro_usd)} of "
                f"{format_usd(snapshot.max_micro_usd)}",
                cap="usd",
                limit=snapshot.max_micro_usd,
                spent=snapshot.spent.micro_usd,
                reserved=snapshot.reserved.micro_usd,
                requested=cost,
            )

    def abort(self, error: JobAborted) -> None:
        """Stop the job: no request leaves from now on, and every query raises ``error``
        (requests already sent are still awaited and journaled). The first cause is kept."""
        if self.aborted is None:
            self.aborted = error

    async def aclose(self) -> None:
        """Stop dispatching and wait for requests already sent: their answers may be billed,
        so they are settled and journaled rather than cancelled."""
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
        await asyncio.gather(*self._requests, return_exceptions=True)

    async def _dispatch(self) -> None:
        batch_size = max(1, self.adapter.max_batch)
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if batch_size > 1 and len(self._waiting) < batch_size:
                await asyncio.sleep(self._limits.batch_linger_s)
            while self._waiting:
                await self._slots.acquire()
                # An image that stopped (budget, failure) no longer wants its unsent queries.
                self._waiting = [query for query in self._waiting if not query.future.done()]
                if not self._waiting:
                    self._slots.release()
                    break
                group, self._waiting = self._waiting[:batch_size], self._waiting[batch_size:]
                task = asyncio.create_task(self._send_with_retries(group))
                self._requests.add(task)
                task.add_done_callback(self._requests.discard)

    async def _send_with_retries(self, group: list[_Query]) -> None:
        pending = group
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._retry.max_attempts) | stop_after_delay(self._retry.deadline_s),
            wait=wait_random_exponential(multiplier=self._retry.backoff_base_s, max=self._retry.backoff_max_s)
            + wait_exception(_retry_hint),
            retry=retry_if_exception_type(_StillRetryable),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    if attempt.retry_state.attempt_number > 1:
                        self.stats["retries"] += len(pending)
                    pending = await self._attempt(pending)
                    retryable = [q.last_error for q in pending if q.last_error is not None]
                    if retryable:
                        raise _StillRetryable(max(retryable, key=_retry_hint))
        except _StillRetryable:
            for query in pending:
                self._fail(query, query.last_error or Transient("retries exhausted"))
        except BaseException as exc:
            for query in pending:
                _reject(query, exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            self._slots.release()

    async def _attempt(self, queries: list[_Query]) -> list[_Query]:
        """One request for ``queries``; returns those that should be retried."""
        if self.aborted is not None:
            for query in queries:
                if not query.future.done():
                    _reject(query, self.aborted)
            return []
        reservations = []
        sendable = []
        for query in queries:
            try:
                reservations.append(self._budget.reserve(self._price.micro_usd_per_image, 1))
            except BudgetExceeded as exc:
                _reject(query, exc)  # never sent, never paid, no vote
                continue
            sendable.append(query)
        if not sendable:
            return []
        attempt_ids = []
        now = time.time()
        for query in sendable:
            query.attempts += 1
            query.first_sent_at = query.first_sent_at or now
            attempt_ids.append(
                self._journal.attempt_sent(
                    query.image_id, query.sample_index, query.digest, self._price.micro_usd_per_image
                )
            )
        results = await self._send([query.data for query in sendable])
        retry = []
        for query, reservation, attempt_id, result in zip(
            sendable, reservations, attempt_ids, results, strict=True
        ):
            outcome = _outcome(result)
            settlement = self._price.settlement(outcome)
            if settlement == "possibly billed":
                self._budget.settle_possibly_billed(reservation)
            else:
                self._budget.settle(reservation, billed=settlement == "billed")
            # The ledger counts a possibly billed attempt as billed (its spend and the caps of a
            # resumed job); its outcome keeps it apart.
            billed = settlement != "unbilled"
            # The attempt's outcome and a final vote land in one transaction: a kill between
            # them would leave an answer paid for but not counted, which a resume sends again.
            with self._journal.transaction():
                self._journal.attempt_finished(attempt_id, outcome, billed, self._price.micro_usd_per_image)
                if isinstance(result, VendorAnswer):
                    self._commit(
                        query,
                        QueryRecord(
                            query.sample_index, query.digest, result.top1, "ok", result.model_version
                        ),
                        raw=result.raw,
                        error=None,
                    )
                elif isinstance(result, AuthError):
                    # Not a vote (nothing was judged) and nothing else can succeed either.
                    self.aborted = JobAborted(f"{self.adapter.name}: {result}")
                    _reject(query, self.aborted)
                elif isinstance(result, Throttled) and _retry_hint(result) > self._retry.deadline_s:
                    # A quota that refills after the deadline (Azure's "replenished in 22 days"):
                    # waiting it out would hold the job that long, and no other query can pass.
                    wait, deadline = _retry_hint(result), self._retry.deadline_s
                    self.aborted = JobAborted(
                        f"{self.adapter.name}: {result} (the vendor asks to wait {wait:,.0f} s, past "
                        f"the retry deadline of {deadline:,.0f} s; resume the job then)"
                    )
                    _reject(query, self.aborted)
                elif result.retryable:
                    if isinstance(result, Throttled):
                        self.stats["throttled"] += 1
                    query.last_error = result
                    retry.append(query)
                else:
                    self._fail(query, result)
        return retry

    async def _send(self, images: list[bytes]) -> list[VendorAnswer | VendorError]:
        self.stats["requests"] += 1
        if self._throttler is not None:
            await self._throttler.acquire()
        try:
            async with self._turn():
                started = time.monotonic()
                results = await self._request(images)
                self._observe(results, time.monotonic() - started)
                return results
        except Transient as exc:  # no turn at the gate in time: the request never left
            return [exc] * len(images)

    @contextlib.asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        if self._gate is None:
            yield
            return
        async with contextlib.AsyncExitStack() as turn:
            try:
                async with asyncio.timeout(self._limits.queue_timeout_s):
                    await turn.enter_async_context(self._gate())
            except TimeoutError:
                raise Transient(
                    f"no turn at {self.adapter.name} within {self._limits.queue_timeout_s:g} s"
                ) from None
            yield

    async def _request(self, images: list[bytes]) -> list[VendorAnswer | VendorError]:
        """One call of the adapter; every way it can fail becomes one error per image."""
        try:
            async with asyncio.timeout(self._limits.request_timeout_s):
                results = await self.adapter.label_batch(images)
        except VendorError as exc:
            return [exc] * len(images)
        except TimeoutError:
            timed_out = TimedOut(
                f"no answer within {self._limits.request_timeout_s:g} s (counted as possibly billed)"
            )
            return [timed_out] * len(images)
        except Exception as exc:  # an adapter bug must fail these queries, not hang the job
            return [Fatal(f"adapter {self.adapter.name} raised {type(exc).__name__}: {exc}")] * len(images)
        if len(results) != len(images):
            return [Fatal(f"adapter returned {len(results)} answers for {len(images)} images")] * len(images)
        return results

    def _observe(self, results: list[VendorAnswer | VendorError], seconds: float) -> None:
        if self._on_request is None:
            return
        outcomes = tuple(_outcome(result) for result in results)
        settlements = [self._price.settlement(outcome) for outcome in outcomes]
        billed, possibly = settlements.count("billed"), settlements.count("possibly billed")
        cost = self._price.micro_usd_per_image
        self._on_request(RequestOutcome(outcomes, billed, billed * cost, possibly, possibly * cost, seconds))

    def _fail(self, query: _Query, error: VendorError) -> None:
        self._commit(
            query,
            QueryRecord(query.sample_index, query.digest, FAILED_QUERY, error.outcome, None),
            raw=None,
            error=f"{type(error).__name__}: {error}",
        )

    def _commit(self, query: _Query, record: QueryRecord, *, raw: str | None, error: str | None) -> None:
        self._journal.record_query(
            query.image_id,
            record,
            attempts=query.attempts,
            raw=raw,
            error=error,
            first_sent_at=query.first_sent_at,
        )
        if not query.future.done():
            query.future.set_result(record)
