"""Jobs of every tenant: admission against the tenant's budget, running, resuming, cancelling.

Every request is a job: ``POST /v1/certify`` makes a one-image job and waits for it, ``POST
/v1/jobs`` makes a batch job and returns at once. A job runs through
:func:`apiwrap.engine.jobs.run_job` with its own journal (``runs_dir/<id>.sqlite``), so a restarted
server resumes a running job under the same name and never re-buys an answered query.

Money: each tenant has one :class:`~budgets.Budget` over all its jobs. A job is admitted by
reserving, in that budget, an allowance for the queries it still needs plus a margin for
billed retries (a vendor bills a malformed answer that is then retried), cut down to what the
tenant has left; that allowance becomes the job's own cap, which the job's scheduler enforces
query by query. When the job ends the allowance is released and what the job's ledger says it
spent is charged instead. So concurrent jobs of one tenant can never pass the tenant's cap
together, and an admitted job never waits for another's money. (A job whose vendor bills more
retries than the margin stops early with ``budget`` results, as a job at its cap does.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import secrets
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from apiwrap.budgets import Budget, PriceTable, Reservation, format_usd, from_micro_usd
from apiwrap.engine.jobs import JobSpec, journal_path, run_job
from apiwrap.engine.journal import Journal
from apiwrap.engine.scheduler import RetryPolicy, VendorLimits
from apiwrap.service._config import ServiceConfig, TenantConfig
from apiwrap.service._errors import Busy, Conflict, NotFound
from apiwrap.service._metrics import Metrics
from apiwrap.service._store import JobRow, JobStatus, Store
from apiwrap.service._vendors import JobAdapter, SharedVendor
from apiwrap.statistics.procedures import CertificationSettings, ImageResult

__all__ = ["JobManager", "JobView"]

_log = logging.getLogger("apiwrap.service")
_RETRY = RetryPolicy()
#: Allowance for billed retries on top of one billed attempt per query. Throttled and failed
#: attempts are free; only malformed answers are billed and retried, and they are rare.
_RETRY_MARGIN = 0.1


def _image_name(position: int) -> str:
    # The journal's image names are ours: a client's file name is only echoed back, never used.
    return f"image-{position:05d}"


def _journal_totals(path: Path) -> tuple[int, int, int]:
    """(micro-USD spent, billable queries, queries answered) according to a job's journal."""
    if not path.exists():
        return 0, 0, 0
    journal = Journal.open_existing(path)
    try:
        spent_usd, spent_queries = journal.spent()
        answered = sum(len(journal.answered(image_id)) for image_id, *_ in journal.images())
        return spent_usd, spent_queries, answered
    finally:
        journal.close()


def _journal_results(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(position, result) of every image the job has finished so far."""
    if not path.exists():
        return []
    journal = Journal.open_existing(path)
    try:
        rows = journal.images()
    finally:
        journal.close()
    finished = []
    for _, name, _, status, result, error in rows:
        if status == "pending":
            continue
        position = int(name.removeprefix("image-"))
        finished.append((position, result or {"status": status, "error": error}))
    return sorted(finished, key=lambda item: item[0])


@dataclass
class _Running:
    """A job running in this process, with what its status needs while it runs."""

    row: JobRow
    settings: CertificationSettings
    prior_micro_usd: int
    prior_queries: int
    queries_done: int
    reservation: Reservation
    billed: int = 0
    cancel_requested: bool = False
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


@dataclass(frozen=True)
class JobView:
    """What a tenant may see of one of its jobs."""

    id: str
    kind: Literal["single", "batch"]
    status: JobStatus
    settings: dict[str, Any]
    images: int
    queries_done: int
    queries_total: int
    spent_micro_usd: int
    spent_queries: int
    budget_exhausted: bool
    created_at: float
    finished_at: float | None
    error: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "settings": self.settings,
            "images": self.images,
            "progress": {"queries_done": self.queries_done, "queries_total": self.queries_total},
            "spend": {"usd": format_usd(self.spent_micro_usd), "billable_queries": self.spent_queries},
            "budget_exhausted": self.budget_exhausted,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "error": self.error,
        }


class JobManager:
    """Owns every job task of the server; used from the event loop only."""

    def __init__(
        self,
        config: ServiceConfig,
        store: Store,
        vendors: dict[str, SharedVendor],
        metrics: Metrics,
        prices: PriceTable,
    ) -> None:
        self._config = config
        self._store = store
        self._vendors = vendors
        self._metrics = metrics
        self._prices = prices
        self._running: dict[str, _Running] = {}
        self._budgets: dict[str, Budget] = {}
        self._stopping = False

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Open every tenant's budget and resume the jobs a previous process left running."""
        interrupted = await asyncio.to_thread(self._store.jobs, status="running")
        totals = {
            row.id: await asyncio.to_thread(_journal_totals, journal_path(self._config.runs_dir, row.id))
            for row in interrupted
        }
        for tenant in self._config.tenants.values():
            spent_usd, spent_queries = await asyncio.to_thread(self._store.finished_spend, tenant.name)
            for row in interrupted:
                if row.tenant == tenant.name:
                    spent_usd += totals[row.id][0]
                    spent_queries += totals[row.id][1]
            self._budgets[tenant.name] = Budget(tenant.max_usd, tenant.max_queries, spent_usd, spent_queries)
        for row in interrupted:
            if row.tenant not in self._config.tenants or row.settings.get("vendor") not in self._vendors:
                await self._abandon(row, totals[row.id], "its tenant or vendor is no longer configured")
                continue
            images = await asyncio.to_thread(self._store.images, row.id)
            try:
                self._launch(row, images, totals[row.id])
            except Exception as exc:  # e.g. the tenant has no budget left: end the job, keep serving
                await self._abandon(row, totals[row.id], f"not resumed: {exc}")
            else:
                _log.info("resumed job %s of tenant %s", row.id, row.tenant)

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop every job; they stay ``running`` in the store and resume at the next start.

        Each job's in-flight requests get ``grace_s`` to finish and be journaled; whatever is
        cut off is re-sent (same bytes) on resume, as after a crash.
        """
        self._stopping = True
        tasks = [job.task for job in self._running.values() if job.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=grace_s)

    # -- admission ----------------------------------------------------------------------

    def budget(self, tenant: str) -> Budget:
        return self._budgets[tenant]

    async def submit(
        self,
        tenant: TenantConfig,
        kind: Literal["single", "batch"],
        settings: CertificationSettings,
        images: list[tuple[str, bytes]],
    ) -> str:
        """Admit and start a job; raises BudgetExceeded (402) or Busy (503) before anything is stored."""
        if self._stopping:
            raise Busy("the server is shutting down", retry_after=5)
        if len(self._running) >= self._config.max_running_jobs:
            raise Busy(f"{len(self._running)} jobs are running; try again shortly", retry_after=5)
        own = sum(job.row.tenant == tenant.name for job in self._running.values())
        if own >= self._config.max_running_jobs_per_tenant:
            raise Busy(f"tenant {tenant.name!r} has {own} jobs running; try again shortly", retry_after=5)
        job_id = "job-" + secrets.token_hex(12)
        record = dataclasses.asdict(settings)
        reservation, caps = self._admit(tenant.name, settings, len(images), (0, 0, 0))
        try:
            await asyncio.to_thread(self._store.create_job, job_id, tenant.name, kind, record, images)
        except BaseException:
            self._budgets[tenant.name].release(reservation)
            raise
        row = await asyncio.to_thread(self._store.job, job_id)
        assert row is not None
        self._start_task(row, settings, images, (0, 0, 0), reservation, caps)
        return job_id

    def _admit(
        self, tenant: str, settings: CertificationSettings, images: int, prior: tuple[int, int, int]
    ) -> tuple[Reservation, tuple[Decimal | None, int | None]]:
        """Reserve the job's allowance in the tenant's budget; returns it and the job's own caps."""
        budget = self._budgets[tenant]
        price = self._vendors[settings.vendor].price.micro_usd_per_image
        prior_usd, prior_queries, answered = prior
        remaining = max(0, images * settings.queries_per_image - answered)
        need = max(1, math.ceil(remaining * (1 + _RETRY_MARGIN)))
        headroom = budget.remaining
        grant = need
        if headroom.queries is not None:
            grant = min(grant, headroom.queries)
        if headroom.micro_usd is not None and price > 0:
            grant = min(grant, headroom.micro_usd // price)
        # Reserving at least one query makes an exhausted tenant fail with the budget's own figures.
        reservation = budget.reserve(price * max(grant, 1), max(grant, 1))
        max_usd = None if budget.max_usd is None else from_micro_usd(prior_usd + reservation.cost_micro_usd)
        max_queries = None if budget.max_queries is None else prior_queries + reservation.queries
        return reservation, (max_usd, max_queries)

    def _launch(self, row: JobRow, images: list[tuple[str, bytes]], prior: tuple[int, int, int]) -> None:
        settings = CertificationSettings(**row.settings)
        reservation, caps = self._admit(row.tenant, settings, row.images, prior)
        self._start_task(row, settings, images, prior, reservation, caps)

    def _start_task(
        self,
        row: JobRow,
        settings: CertificationSettings,
        images: list[tuple[str, bytes]],
        prior: tuple[int, int, int],
        reservation: Reservation,
        caps: tuple[Decimal | None, int | None],
    ) -> None:
        vendor = self._vendors[settings.vendor]
        job = _Running(row, settings, prior[0], prior[1], prior[2], reservation)
        spec = JobSpec(
            settings=settings,
            job=row.id,
            runs_dir=self._config.runs_dir,
            # The vendor's rate limit is enforced by its shared gate; the scheduler's timeout
            # covers the wait for a turn there too (the vendor's own timeout is the gate's).
            limits=VendorLimits(
                requests_per_second=None,
                concurrency=vendor.concurrency,
                request_timeout_s=vendor.request_timeout_s + self._config.queue_timeout_s,
            ),
            retry=_RETRY,
            max_usd=caps[0],
            max_queries=caps[1],
        )

        def billed(count: int) -> None:
            job.billed += count

        adapter = JobAdapter(vendor, row.tenant, self._metrics, billed)
        named: list[tuple[str, Path | bytes]] = [(_image_name(i), data) for i, (_, data) in enumerate(images)]
        self._running[row.id] = job
        self._metrics.jobs_running = len(self._running)
        job.task = asyncio.create_task(self._run(job, spec, adapter, named), name=f"apiwrap-{row.id}")

    # -- running ------------------------------------------------------------------------

    def _tick(self, job: _Running) -> None:
        job.queries_done += 1

    async def _run(
        self, job: _Running, spec: JobSpec, adapter: JobAdapter, images: list[tuple[str, Path | bytes]]
    ) -> None:
        status: JobStatus = "done"
        error: str | None = None
        exhausted = False
        try:
            report = await run_job(
                spec, images, on_query=lambda: self._tick(job), adapter=adapter, price_table=self._prices
            )
            exhausted = report.budget_exhausted
            self._count_results(job.settings, report.results)
            # Only the job's scheduler knows a retry from a first send (identical images give
            # identical samples), so retries are counted when the job ends.
            self._metrics.count("apiwrap_vendor_retries_total", report.retries, vendor=job.settings.vendor)
        except asyncio.CancelledError:
            if not job.cancel_requested:
                self._forget(job)  # shutdown: the job stays running in the store and resumes next time
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]  # we are that task
            status, error = "cancelled", "cancelled by the tenant"
        except Exception as exc:
            _log.exception("job %s failed", job.row.id)
            status, error = "failed", f"{type(exc).__name__}: {exc}"
        await self._finish(job, status, error, exhausted)

    async def _finish(self, job: _Running, status: JobStatus, error: str | None, exhausted: bool) -> None:
        spent_usd, spent_queries, answered = await asyncio.to_thread(
            _journal_totals, journal_path(self._config.runs_dir, job.row.id)
        )
        self._charge(
            job.row.tenant,
            job.reservation,
            spent_usd - job.prior_micro_usd,
            spent_queries - job.prior_queries,
        )
        await asyncio.to_thread(
            self._store.finish_job,
            job.row.id,
            status,
            error=error,
            spent_micro_usd=spent_usd,
            spent_queries=spent_queries,
            queries_done=answered,
            budget_exhausted=exhausted,
        )
        self._metrics.count("apiwrap_jobs_total", status=status)
        self._forget(job)

    def _forget(self, job: _Running) -> None:
        self._running.pop(job.row.id, None)
        self._metrics.jobs_running = len(self._running)
        job.finished.set()

    def _charge(self, tenant: str, reservation: Reservation, micro_usd: int, queries: int) -> None:
        """Swap the job's allowance for what it spent (at most the allowance: its cap held)."""
        budget = self._budgets[tenant]
        budget.release(reservation)
        if queries > 0:
            budget.settle(budget.reserve(micro_usd, queries), billed=True)

    async def _abandon(self, row: JobRow, totals: tuple[int, int, int], reason: str) -> None:
        _log.warning("job %s of tenant %s not resumed: %s", row.id, row.tenant, reason)
        await asyncio.to_thread(
            self._store.finish_job,
            row.id,
            "failed",
            error=reason,
            spent_micro_usd=totals[0],
            spent_queries=totals[1],
            queries_done=totals[2],
            budget_exhausted=False,
        )

    def _count_results(self, settings: CertificationSettings, results: list[ImageResult]) -> None:
        for result in results:
            if result.status in {"certified", "predicted"}:
                self._metrics.count("apiwrap_certificates_total", vendor=settings.vendor, mode=settings.mode)
            elif result.status == "abstained":
                self._metrics.count(
                    "apiwrap_abstentions_total",
                    vendor=settings.vendor,
                    reason=result.abstain_reason or "unknown",
                )

    # -- what tenants see ---------------------------------------------------------------

    async def _own(self, tenant: str, job_id: str) -> JobRow:
        row = await asyncio.to_thread(self._store.job, job_id)
        if row is None or row.tenant != tenant:
            raise NotFound(f"no job {job_id!r}")  # the same answer for another tenant's job
        return row

    async def views(self, tenant: str) -> list[JobView]:
        return [self._view(row) for row in await asyncio.to_thread(self._store.jobs, tenant=tenant)]

    async def view(self, tenant: str, job_id: str) -> JobView:
        return self._view(await self._own(tenant, job_id))

    def _view(self, row: JobRow) -> JobView:
        settings = CertificationSettings(**row.settings)
        running = self._running.get(row.id)
        if running is not None:
            price = self._vendors[settings.vendor].price.micro_usd_per_image
            done = running.queries_done
            spent_usd = running.prior_micro_usd + running.billed * price
            spent_queries = running.prior_queries + running.billed
        else:
            done, spent_usd, spent_queries = row.queries_done, row.spent_micro_usd, row.spent_queries
        return JobView(
            id=row.id,
            kind=row.kind,
            status=row.status,
            settings=row.settings,
            images=row.images,
            queries_done=done,
            queries_total=row.images * settings.queries_per_image,
            spent_micro_usd=spent_usd,
            spent_queries=spent_queries,
            budget_exhausted=row.budget_exhausted,
            created_at=row.created_at,
            finished_at=row.finished_at,
            error=row.error,
        )

    async def results(self, tenant: str, job_id: str) -> list[dict[str, Any]]:
        """Results of the images finished so far, in upload order, with the client's file names."""
        row = await self._own(tenant, job_id)
        filenames = await asyncio.to_thread(self._store.filenames, row.id)
        finished = await asyncio.to_thread(_journal_results, journal_path(self._config.runs_dir, row.id))
        return [
            {**result, "image": filenames[position], "position": position}
            for position, result in finished
            if position < len(filenames)
        ]

    async def wait(self, job_id: str) -> None:
        """Until the job ends here (a cancelled wait leaves the job running)."""
        job = self._running.get(job_id)
        if job is not None:
            await job.finished.wait()

    async def cancel(self, tenant: str, job_id: str) -> None:
        row = await self._own(tenant, job_id)
        job = self._running.get(row.id)
        if job is None or job.task is None:
            raise Conflict(f"job {job_id} is {row.status}; only a running job can be cancelled")
        job.cancel_requested = True
        job.task.cancel()
        await job.finished.wait()
