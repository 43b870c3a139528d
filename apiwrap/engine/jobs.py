"""Composing a job: adapter + denoiser + budget + journal + scheduler + engine.

The CLI (and the service) describe a job with :class:`JobSpec`; :func:`run_job` builds the
parts, runs the engine and closes what it built, whatever happens: an adapter it is lent stays
open for its owner.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from apiwrap.adapters import Adapter, create_adapter
from apiwrap.adapters.base import LABEL_RULE_VERSION
from apiwrap.budgets import Budget, BudgetExceeded, BudgetSnapshot, PriceTable, format_usd
from apiwrap.denoisers import load_denoiser
from apiwrap.engine.allocator import AllocationStats, BudgetAllocator
from apiwrap.engine.distributed import RayOptions, RayPreparer, require_ray, start_workers
from apiwrap.engine.journal import Journal
from apiwrap.engine.runner import Engine
from apiwrap.engine.samples import SamplePreparer
from apiwrap.engine.scheduler import QueryScheduler, RequestGate, RequestOutcome, RetryPolicy, VendorLimits
from apiwrap.engine.settings import JOB_NAME, ConnectionOptions, JobOptions, default_job_name
from apiwrap.errors import ConfigurationError
from apiwrap.statistics.procedures import CertificationSettings, ImageResult

__all__ = ["JobReport", "JobSpec", "adapter_options", "job_spec", "journal_path", "run_job"]


def journal_path(runs_dir: Path, job: str) -> Path:
    """The journal file of job ``job``; names are restricted so they can never escape ``runs_dir``."""
    if not JOB_NAME.match(job):
        raise ConfigurationError(f"job name {job!r} must be letters, digits, '.', '_' or '-' (at most 100)")
    return runs_dir / f"{job}.sqlite"


def adapter_options(vendor_options: Mapping[str, Any], request_timeout: float) -> dict[str, Any]:
    """The keyword options of a vendor's factory: ``vendor_options`` plus its client's ``timeout``.

    The client gives up after the scheduler's own deadline (the same seconds, started first), so
    an abandoned request is the scheduler's to count as possibly billed; a ``timeout`` among the
    vendor options would part the two, and is refused.
    """
    if "timeout" in vendor_options:
        raise ConfigurationError(
            "the vendor's client timeout is the request timeout (--request-timeout, request_timeout, "
            "request_timeout_s): leave 'timeout' out of the vendor options"
        )
    return {**vendor_options, "timeout": request_timeout}


@dataclass(frozen=True)
class JobSpec:
    settings: CertificationSettings
    job: str
    runs_dir: Path = Path("runs")
    vendor_options: dict[str, Any] = field(default_factory=dict)
    limits: VendorLimits = field(default_factory=VendorLimits)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_usd: Decimal | None = None
    max_queries: int | None = None
    prices: Path | None = None
    images_in_flight: int = 4
    denoise_batch: int = 16
    force_denoiser: bool = False
    #: Start the vendor's wire-protocol emulator on 127.0.0.1 and send the job there.
    emulate: bool = False
    #: A sequential job with a budget spends it where certificates are likely (apiwrap.engine.allocator);
    #: False spends it first come, first served.
    allocate: bool = True
    #: Prepare samples and send queries from Ray actors (apiwrap.engine.distributed, docs/scale.md);
    #: the journal, budget and rate limit stay in this process.
    ray: RayOptions | None = None


def job_spec(
    settings: CertificationSettings,
    job: JobOptions,
    connection: ConnectionOptions,
    *,
    runs_dir: Path,
    vendor_options: Mapping[str, Any] | None = None,
    prices: Path | None = None,
    emulate: bool = False,
    ray_address: str | None = None,
) -> JobSpec:
    """The job the command line or the Python API runs for resolved ``settings`` and these options."""
    if ray_address is not None:
        require_ray()  # a missing extra is named before any journal is opened
    return JobSpec(
        settings=settings,
        job=job.job or default_job_name(settings.mode),
        runs_dir=runs_dir,
        vendor_options=adapter_options(vendor_options or {}, connection.request_timeout),
        limits=VendorLimits(
            requests_per_second=connection.tps,
            concurrency=connection.concurrency,
            request_timeout_s=connection.request_timeout,
        ),
        retry=RetryPolicy(max_attempts=connection.max_attempts),
        max_usd=job.max_usd,
        max_queries=job.max_job_queries,
        prices=prices,
        force_denoiser=job.force_denoiser,
        emulate=emulate,
        allocate=job.allocate,
        ray=RayOptions(address=ray_address) if ray_address is not None else None,
    )


@dataclass
class JobReport:
    results: list[ImageResult]
    journal: Path
    budget: BudgetSnapshot
    budget_exhausted: bool
    outcomes: dict[str, int]
    requests: int
    retries: int
    throttled: int
    seconds: float
    #: Attempts an earlier run left without an outcome: counted as billed, and re-sent, so each
    #: may have been billed twice.
    unanswered_in_flight: int
    #: Set when a budgeted sequential job spread its budget with the allocator.
    allocation: AllocationStats | None = None
    #: Why the job stopped early for every image (e.g. the vendor refused the credentials).
    aborted: str | None = None
    #: Noisy samples prepared (noise, denoiser, PNG) by this run.
    samples_prepared: int = 0


def _provenance(adapter: Adapter) -> dict[str, object]:
    """What decides the votes besides the settings and the denoiser, bound with them in the journal.

    The label rule and the vendor's model options (``max_labels``, a model version, ...) change
    which label a query votes for (the Engine binds the denoiser's record, which decides what is sent).
    """
    return {
        "label_rule": LABEL_RULE_VERSION,
        "model_options": dict(adapter.model_options),
    }


def _allocator(spec: JobSpec, budget: Budget, micro_usd_per_query: int) -> BudgetAllocator | None:
    """A budgeted sequential job spends its budget where certificates are likely (engine.allocator)."""
    if (
        not spec.allocate
        or spec.settings.design == "fixed"
        or (spec.max_usd is None and spec.max_queries is None)
    ):
        return None

    def headroom() -> int:
        left = budget.remaining
        affordable = [left.queries] if left.queries is not None else []
        if left.micro_usd is not None and micro_usd_per_query > 0:
            affordable.append(left.micro_usd // micro_usd_per_query)
        return min(affordable, default=sys.maxsize)  # a free vendor: only the query cap, if any

    return BudgetAllocator(headroom)


def _refuse_a_fixed_job_that_cannot_pay_one_image(spec: JobSpec, budget: Budget, micro_usd: int) -> None:
    """A fixed design certifies nothing until an image has all its votes: a budget that cannot
    pay for one image's full procedure would only buy votes that can never make a certificate."""
    if spec.settings.design != "fixed" or (spec.max_usd is None and spec.max_queries is None):
        return
    per_image = spec.settings.queries_per_image
    try:
        budget.require(micro_usd * per_image, per_image)
    except BudgetExceeded as exc:
        raise BudgetExceeded(
            f"the budget cannot pay for one image's full procedure ({per_image} queries, "
            f"{format_usd(micro_usd * per_image)}), so no certificate could be bought: raise the budget, "
            f"or use a sequential design (a target radius, or max_queries), which stops early ({exc})"
        ) from None


async def run_job(
    spec: JobSpec,
    images: list[tuple[str, Path | bytes]],
    *,
    on_query: Callable[[], None] | None = None,
    on_result: Callable[[ImageResult], None] | None = None,
    adapter: Adapter | None = None,
    price_table: PriceTable | None = None,
    gate: RequestGate | None = None,
    on_request: Callable[[RequestOutcome], None] | None = None,
) -> JobReport:
    """Run (or resume) a job and return its report; the journal is left complete on disk.

    ``on_result`` is called with each image's result as soon as it is journaled (so output can
    be streamed); ``adapter`` and ``price_table`` replace the ones the spec names (a seam for tests and
    for callers that build their own vendor client); a given adapter is lent, never closed.
    ``gate`` and ``on_request`` go to the :class:`~apiwrap.engine.scheduler.QueryScheduler`, for a
    vendor shared with other jobs.
    """
    if spec.emulate and adapter is None:
        from apiwrap.adapters.emulators import emulator

        with emulator(spec.settings.vendor) as endpoint:
            emulated = dataclasses.replace(
                spec, emulate=False, vendor_options={**spec.vendor_options, "endpoint": endpoint}
            )
            return await run_job(
                emulated,
                images,
                on_query=on_query,
                on_result=on_result,
                price_table=price_table,
                gate=gate,
                on_request=on_request,
            )
    started = time.monotonic()
    prices = price_table or (PriceTable.load(spec.prices) if spec.prices else PriceTable.default())
    price = prices.price(spec.settings.vendor)
    path = journal_path(spec.runs_dir, spec.job)
    # Loading a checkpoint reads files and builds a network: off the event loop, and before the
    # journal exists, so a denoiser that cannot run this job (unknown, another sigma) leaves none.
    # On Ray the workers load their own, and this load is that check.
    denoiser = await asyncio.to_thread(
        load_denoiser, spec.settings.denoiser, spec.settings.sigma, force=spec.force_denoiser
    )
    journal = Journal(path)
    try:
        in_flight_before = journal.unfinished_attempts()
        spent_micro_usd, spent_queries = journal.spent()
        possibly_micro_usd, possibly_queries = journal.possibly_billed()
        budget = Budget(
            spec.max_usd,
            spec.max_queries,
            spent_micro_usd,
            spent_queries,
            possibly_billed_micro_usd=possibly_micro_usd,
            possibly_billed_queries=possibly_queries,
        )
        if spent_queries == 0:
            _refuse_a_fixed_job_that_cannot_pay_one_image(spec, budget, price.micro_usd_per_image)
        preparer: SamplePreparer | RayPreparer
        owned: Adapter | None = None  # built here, so closed here; a lent adapter stays open
        if spec.ray is None:
            if adapter is None:
                adapter = owned = create_adapter(spec.settings.vendor, **spec.vendor_options)
            preparer = SamplePreparer(
                denoiser, seed=spec.settings.seed, sigma=spec.settings.sigma, batch_size=spec.denoise_batch
            )
            prepared_by = [denoiser.provenance]
            batches_in_flight = 1
        else:
            workers = await start_workers(
                spec.ray,
                spec.settings,
                job=spec.job,
                vendor_options=spec.vendor_options,
                adapter=adapter,
                force_denoiser=spec.force_denoiser,
                batch_size=spec.denoise_batch,
            )
            # the workers prepare the bytes sent: their record is the one the journal binds
            adapter = owned = workers.adapter
            preparer, prepared_by = workers.preparer, workers.denoisers
            batches_in_flight = preparer.batches_in_flight
        scheduler = QueryScheduler(
            adapter,
            journal,
            budget,
            price=price,
            limits=spec.limits,
            retry=spec.retry,
            gate=gate,
            on_request=on_request,
        )
        allocator = _allocator(spec, budget, price.micro_usd_per_image)
        engine = Engine(
            spec.settings,
            journal,
            scheduler,
            preparer,
            denoisers=prepared_by,
            images_in_flight=spec.images_in_flight,
            prepare_ahead=max(
                spec.denoise_batch * batches_in_flight,
                2 * spec.limits.concurrency * max(1, adapter.max_batch),
            ),
            on_query=on_query,
            on_result=on_result,
            provenance=_provenance(adapter),
            allocator=allocator,
        )
        try:
            results = await engine.run(images)
        finally:
            await scheduler.aclose()
            await preparer.aclose()
            if owned is not None:
                await owned.aclose()
        return JobReport(
            results=results,
            journal=path,
            budget=budget.snapshot(),
            budget_exhausted=engine.budget_exhausted,
            outcomes=dict(journal.outcome_counts()),
            requests=scheduler.stats["requests"],
            retries=scheduler.stats["retries"],
            throttled=scheduler.stats["throttled"],
            seconds=time.monotonic() - started,
            unanswered_in_flight=in_flight_before,
            allocation=allocator.stats if allocator is not None else None,
            samples_prepared=preparer.prepared,
            aborted=str(scheduler.aborted) if scheduler.aborted is not None else None,
        )
    finally:
        journal.close()
