"""Jobs of every tenant: starting, running, finishing, resuming, cancelling, and what tenants see.

Every request is a job: ``POST /v1/certify`` makes a one-image job and waits for it, ``POST
/v1/jobs`` makes a batch job and returns at once. A job is admitted first
(:mod:`apiwrap.service._admission`: running-job slots, the tenant's money, the
``Idempotency-Key``, taken atomically before anything is stored), then runs through
:func:`apiwrap.engine.jobs.run_job` with its own journal (``runs_dir/<id>.sqlite``), so a
restarted server resumes a running job under the same name and never re-buys an answered query.
When it ends, what its ledger says it spent is charged to the tenant in place of its allowance.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from apiwrap.budgets import Budget, PriceTable
from apiwrap.engine.jobs import JobSpec, journal_path, run_job
from apiwrap.engine.journal import Journal
from apiwrap.engine.scheduler import RequestOutcome, RetryPolicy, VendorLimits
from apiwrap.service._admission import Admission, Ticket
from apiwrap.service._config import ServiceConfig, TenantConfig
from apiwrap.service._errors import Conflict, NotFound
from apiwrap.service._logging import log_event
from apiwrap.service._metrics import GaugeSample, Metrics
from apiwrap.service._models import Job, JobSpend, Progress, money, utc_time
from apiwrap.service._store import IdempotencyRow, JobRow, JobStatus, Store
from apiwrap.service._vendors import SharedVendor, count_request
from apiwrap.statistics.procedures import CertificationSettings, ImageResult

__all__ = ["JobManager", "JobView"]

_RETRY = RetryPolicy()


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
        answered = sum(len(journal.answered(image.image_id)) for image in journal.images())
        return spent_usd, spent_queries, answered
    finally:
        journal.close()


def _journal_possibly_billed(path: Path) -> int:
    """Queries of a job's spend that timed out (possibly billed), according to its journal."""
    if not path.exists():
        return 0
    journal = Journal.open_existing(path)
    try:
        return journal.possibly_billed()[1]
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
    for image in rows:
        if image.status == "pending":
            continue
        position = int(image.name.removeprefix("image-"))
        finished.append((position, image.result or {"status": image.status, "error": image.error}))
    return sorted(finished, key=lambda item: item[0])


@dataclass
class _Running:
    """A job running in this process, with what its status needs while it runs."""

    row: JobRow
    settings: CertificationSettings
    ticket: Ticket
    prior_micro_usd: int
    prior_queries: int
    queries_done: int
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
    #: The part of ``spent_queries`` that timed out: counted against the caps, perhaps not charged.
    possibly_billed_queries: int
    budget_exhausted: bool
    created_at: float
    finished_at: float | None
    error: str | None

    def to_model(self) -> Job:
        return Job(
            id=self.id,
            kind=self.kind,
            status=self.status,
            settings=CertificationSettings(**self.settings),
            images=self.images,
            progress=Progress(queries_done=self.queries_done, queries_total=self.queries_total),
            spend=JobSpend(
                cost=money(self.spent_micro_usd),
                billable_queries=self.spent_queries,
                possibly_billed_queries=self.possibly_billed_queries,
            ),
            budget_exhausted=self.budget_exhausted,
            created_at=utc_time(self.created_at),
            finished_at=None if self.finished_at is None else utc_time(self.finished_at),
            error=self.error,
        )


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
        self._admission = Admission(config, {name: vendor.price for name, vendor in vendors.items()})
        self._running: dict[str, _Running] = {}
        metrics.gauges = self._gauges

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Open every tenant's budget and resume the jobs a previous process left running."""
        interrupted = await asyncio.to_thread(self._store.jobs, status="running")
        totals = {
            row.id: await asyncio.to_thread(_journal_totals, journal_path(self._config.runs_dir, row.id))
            for row in interrupted
        }
        spent: dict[str, tuple[int, int]] = {}
        for tenant in self._config.tenants.values():
            spent_usd, spent_queries = await asyncio.to_thread(self._store.finished_spend, tenant.name)
            for row in interrupted:
                if row.tenant == tenant.name:
                    spent_usd += totals[row.id][0]
                    spent_queries += totals[row.id][1]
            spent[tenant.name] = (spent_usd, spent_queries)
        self._admission.open(spent, await asyncio.to_thread(self._store.keys))
        for row in interrupted:
            if row.tenant not in self._config.tenants or row.settings.get("vendor") not in self._vendors:
                await self._abandon(row, totals[row.id], "its tenant or vendor is no longer configured")
                continue
            images = await asyncio.to_thread(self._store.images, row.id)
            try:
                self._resume(row, images, totals[row.id])
            except Exception as exc:  # e.g. the tenant has no budget left: end the job, keep serving
                await self._abandon(row, totals[row.id], f"not resumed: {exc}")
            else:
                log_event("job.resumed", job=row.id, tenant=row.tenant, images=row.images)

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop every job; they stay ``running`` in the store and resume at the next start.

        Each job's in-flight requests get ``grace_s`` to finish and be journaled; whatever is
        cut off is re-sent (same bytes) on resume, as after a crash.
        """
        self._admission.close()
        tasks = [job.task for job in self._running.values() if job.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=grace_s)

    async def update_tenants(self, tenants: Mapping[str, TenantConfig]) -> list[str]:
        """Take a reloaded tenant list (see :meth:`Admission.update_tenants`); the tenants whose
        changed caps wait for their running jobs to end."""
        unknown = [name for name in tenants if name not in self._admission.budgets]
        spent = {name: await asyncio.to_thread(self._store.finished_spend, name) for name in unknown}
        return self._admission.update_tenants(tenants, spent)

    # -- starting -----------------------------------------------------------------------

    @property
    def jobs_running(self) -> int:
        return len(self._running)

    def budget(self, tenant: str) -> Budget:
        return self._admission.budgets[tenant]

    async def submit(
        self,
        tenant: TenantConfig,
        kind: Literal["single", "batch"],
        settings: CertificationSettings,
        images: list[tuple[str, bytes]],
        idempotency: tuple[str, str] | None = None,
        admitted: Callable[[CertificationSettings], Awaitable[None]] | None = None,
    ) -> str:
        """Admit and start a job, or find the one made with the same ``Idempotency-Key``.

        ``idempotency`` is (key, fingerprint of the request). Raises BudgetExceeded (402), Busy
        (503) or IdempotencyKeyReused (422) before anything is stored. ``admitted`` runs once the
        job holds its slot and allowance, before it is stored: the costly checks of a request
        (an error there gives back all the admission took).
        """
        if idempotency is not None and (known := await self._admission.keys.job(tenant.name, *idempotency)):
            return known
        job_id = "job-" + secrets.token_hex(12)
        # No await since the key was looked up: no other request can take a slot, money or this
        # key in between.
        ticket = self._admission.admit(tenant.name, job_id, settings, len(images), idempotency)
        key_row = None if idempotency is None else IdempotencyRow(tenant.name, *idempotency, job_id)
        try:
            if admitted is not None:
                await admitted(settings)
            await asyncio.to_thread(
                self._store.create_job,
                job_id,
                tenant.name,
                kind,
                dataclasses.asdict(settings),
                images,
                key_row,
            )
            row = await asyncio.to_thread(self._store.job, job_id)
            assert row is not None
        except BaseException:
            self._admission.withdraw(ticket, idempotency)
            raise
        if idempotency is not None:
            self._admission.keys.stored(tenant.name, idempotency[0])
        self._start_task(row, settings, images, (0, 0, 0), ticket)
        log_event(
            "job.admitted",
            job=job_id,
            tenant=tenant.name,
            kind=kind,
            images=len(images),
            vendor=settings.vendor,
            design=settings.design,
            allowance_queries=ticket.allowance.queries,
            allowance_micro_usd=ticket.allowance.cost_micro_usd,
        )
        return job_id

    def _resume(self, row: JobRow, images: list[tuple[str, bytes]], prior: tuple[int, int, int]) -> None:
        settings = CertificationSettings(**row.settings)
        ticket = self._admission.resume(row.tenant, settings, row.images, prior)
        self._start_task(row, settings, images, prior, ticket)

    def _start_task(
        self,
        row: JobRow,
        settings: CertificationSettings,
        images: list[tuple[str, bytes]],
        prior: tuple[int, int, int],
        ticket: Ticket,
    ) -> None:
        vendor = self._vendors[settings.vendor]
        job = _Running(row, settings, ticket, prior[0], prior[1], prior[2])
        spec = JobSpec(
            settings=settings,
            job=row.id,
            runs_dir=self._config.runs_dir,
            # The vendor's rate limit is enforced by its shared gate, where a request waits at
            # most queue_timeout_s for its turn; the vendor's timeout starts once it is granted.
            limits=VendorLimits(
                requests_per_second=None,
                concurrency=vendor.concurrency,
                request_timeout_s=vendor.request_timeout_s,
                queue_timeout_s=self._config.queue_timeout_s,
            ),
            retry=_RETRY,
            max_usd=ticket.max_usd,
            max_queries=ticket.max_queries,
        )
        named: list[tuple[str, Path | bytes]] = [(_image_name(i), data) for i, (_, data) in enumerate(images)]
        self._running[row.id] = job
        job.task = asyncio.create_task(self._run(job, spec, vendor, named), name=f"apiwrap-{row.id}")

    # -- running ------------------------------------------------------------------------

    def _tick(self, job: _Running) -> None:
        job.queries_done += 1

    def _request_sent(self, job: _Running, request: RequestOutcome) -> None:
        count_request(self._metrics, job.settings.vendor, job.row.tenant, request)
        # the job's spend while it runs (see _view): a timed-out request counts, as against the caps
        job.billed += request.billed_queries + request.possibly_billed_queries

    async def _run(
        self, job: _Running, spec: JobSpec, vendor: SharedVendor, images: list[tuple[str, Path | bytes]]
    ) -> None:
        status: JobStatus = "done"
        error: str | None = None
        exhausted = False
        try:
            report = await run_job(
                spec,
                images,
                on_query=lambda: self._tick(job),
                adapter=vendor.adapter,
                price_table=self._prices,
                gate=functools.partial(vendor.gate.slot, job.row.tenant),
                on_request=lambda request: self._request_sent(job, request),
            )
            exhausted = report.budget_exhausted
            self._count_results(job.settings, report.results)
            # Only the job's scheduler knows a retry from a first send (identical images give
            # identical samples), so retries are counted when the job ends.
            self._metrics.count("apiwrap_vendor_retries_total", report.retries, vendor=job.settings.vendor)
        except asyncio.CancelledError:
            if not job.cancel_requested:
                # Shutdown: the job stays running in the store and resumes next time.
                self._admission.leave(job.ticket)
                self._forget(job)
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]  # we are that task
            status, error = "cancelled", "cancelled by the tenant"
        except Exception as exc:
            log_event("job.failed", logging.ERROR, job=job.row.id, tenant=job.row.tenant, error=repr(exc))
            status, error = "failed", f"{type(exc).__name__}: {exc}"
        await self._finish(job, status, error, exhausted)

    async def _finish(self, job: _Running, status: JobStatus, error: str | None, exhausted: bool) -> None:
        spent_usd, spent_queries, answered = await asyncio.to_thread(
            _journal_totals, journal_path(self._config.runs_dir, job.row.id)
        )
        self._admission.finish(job.ticket, spent_usd - job.prior_micro_usd, spent_queries - job.prior_queries)
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
        log_event(
            "job.finished",
            job=job.row.id,
            tenant=job.row.tenant,
            status=status,
            error=error,
            budget_exhausted=exhausted,
            spent_micro_usd=spent_usd,
            spent_queries=spent_queries,
            queries_done=answered,
        )
        self._forget(job)

    def _forget(self, job: _Running) -> None:
        self._running.pop(job.row.id, None)
        job.finished.set()

    def _gauges(self) -> Iterable[GaugeSample]:
        yield "apiwrap_jobs_running", {}, len(self._running)
        if not self._metrics.tenant_labels:
            return
        for tenant, budget in self._admission.budgets.items():
            snapshot = budget.snapshot()
            remaining = snapshot.remaining
            yield "apiwrap_budget_spent_micro_usd", {"tenant": tenant}, snapshot.spent.micro_usd
            if remaining.micro_usd is not None:
                yield "apiwrap_budget_remaining_micro_usd", {"tenant": tenant}, remaining.micro_usd
            if remaining.queries is not None:
                yield "apiwrap_budget_remaining_queries", {"tenant": tenant}, remaining.queries

    async def _abandon(self, row: JobRow, totals: tuple[int, int, int], reason: str) -> None:
        log_event("job.abandoned", logging.WARNING, job=row.id, tenant=row.tenant, reason=reason)
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

    async def page(self, tenant: str, *, after: int, limit: int) -> tuple[list[JobView], int | None]:
        """Up to ``limit`` of the tenant's jobs made after position ``after``, and the next position."""
        rows = await asyncio.to_thread(self._store.jobs_page, tenant, after=after, limit=limit + 1)
        following = rows[limit - 1][0] if len(rows) > limit else None
        views = await asyncio.gather(*(self._view(row) for _, row in rows[:limit]))
        return list(views), following

    async def view(self, tenant: str, job_id: str) -> JobView:
        return await self._view(await self._own(tenant, job_id))

    async def _view(self, row: JobRow) -> JobView:
        possibly_billed = await asyncio.to_thread(
            _journal_possibly_billed, journal_path(self._config.runs_dir, row.id)
        )
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
            possibly_billed_queries=possibly_billed,
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

    async def cancel(self, tenant: str, job_id: str, idempotency: str | None = None) -> None:
        """Stop a running job. Sent again with the same ``Idempotency-Key``, it succeeds again."""
        fingerprint = f"cancel {job_id}"
        if idempotency is not None and await self._admission.keys.job(tenant, idempotency, fingerprint):
            return
        row = await self._own(tenant, job_id)
        job = self._running.get(row.id)
        if job is None or job.task is None:
            raise Conflict(f"job {job_id} is {row.status}; only a running job can be cancelled")
        job.cancel_requested = True
        job.task.cancel()
        if idempotency is not None:
            self._admission.keys.hold(tenant, idempotency, fingerprint, job_id)
        log_event("job.cancel_requested", job=job_id, tenant=tenant)
        await job.finished.wait()
        if idempotency is not None:
            await asyncio.to_thread(
                self._store.add_key, IdempotencyRow(tenant, idempotency, fingerprint, job_id)
            )
            self._admission.keys.stored(tenant, idempotency)

    async def prune(self, retention_days: float) -> int:
        """Delete finished jobs older than ``retention_days``: rows, images, keys and journals."""
        pruned = await asyncio.to_thread(prune_store, self._store, self._config.runs_dir, retention_days)
        self._admission.keys.forget(pruned)
        if pruned:
            log_event("jobs.pruned", jobs=len(pruned), retention_days=retention_days)
        return len(pruned)


def prune_store(store: Store, runs_dir: Path, retention_days: float) -> set[str]:
    """Delete the jobs that finished over ``retention_days`` ago and their journals; their ids.

    Safe while a server runs on the same store: only finished jobs are touched.
    """
    pruned = store.prune(time.time() - retention_days * 86_400)
    for job_id in pruned:
        path = journal_path(runs_dir, job_id)
        for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            leftover.unlink(missing_ok=True)
    return set(pruned)
