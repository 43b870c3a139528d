"""One job on a Ray cluster: samples prepared and vendor requests sent from worker machines.

The driver keeps everything that makes a job safe on one machine: the
:class:`~apiwrap.engine.runner.Engine` and its procedures, the one SQLite journal (one writer),
the :class:`~apiwrap.budgets.Budget` and the rate limiter of the
:class:`~apiwrap.engine.scheduler.QueryScheduler`. Every query passes through them, so the whole
cluster stays within the vendor's requests/s and the job's caps by construction, and resume and
replay read the same journal as ever. What scales moves to actors behind the interfaces the
engine already uses:

- :class:`RayPreparer` (the :class:`~apiwrap.engine.samples.SamplePreparer` interface) batches
  samples across images and hands each batch to a pool of preparation actors (one GPU each where
  the cluster has GPUs) that run :func:`~apiwrap.engine.samples.prepare_samples`, the very
  function of the single-process engine: the same seed gives the same bytes, hence the same
  certificates, on the same kind of device. The actors must agree on the denoiser's provenance
  record (weights digest, runtime, device kind, precision); theirs is the record the journal binds.
- :class:`RayAdapter` (the :class:`~apiwrap.adapters.Adapter` protocol) forwards each request to
  the least busy of a pool of query actors, each holding the vendor's adapter built on its own
  machine, so requests leave from worker machines.

A query actor that dies mid-request (node lost, process killed) is restarted by Ray; the request
surfaces as :class:`~apiwrap.adapters.AnswerLost`, which the scheduler journals as possibly billed
and re-sends with the same bytes. A preparation actor's batch is pure, so Ray re-runs it on the
restarted actor. ``import ray`` happens only when a job asks for Ray (the ``ray`` extra).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from apiwrap.adapters import Adapter, AnswerLost, ImageLimits, VendorAnswer, VendorError, create_adapter
from apiwrap.errors import ConfigurationError, ImageError, MissingExtra

if TYPE_CHECKING:  # a query worker imports this module: it must not pay for torch
    from apiwrap.denoisers import Denoiser, DenoiserProvenance
    from apiwrap.engine.images import SourceImage
    from apiwrap.engine.samples import PreparedSample
    from apiwrap.statistics.procedures import CertificationSettings

__all__ = [
    "NAMESPACE",
    "RayAdapter",
    "RayOptions",
    "RayPreparer",
    "RayWorkers",
    "disagreeing_worker",
    "require_ray",
    "start_workers",
]

#: The Ray namespace of every actor a job starts; actors are named ``JOB.KIND.I.RUN``.
NAMESPACE = "apiwrap"

#: Batches queued on each preparation actor: one running, one waiting, so no actor idles
#: while the driver gathers its next batch.
_BATCHES_PER_ACTOR = 2

#: How often Ray re-runs a preparation batch whose actor died (the batch is pure, so this is safe).
_PREPARATION_RETRIES = 3


@dataclass(frozen=True, slots=True)
class RayOptions:
    """Where a job runs on Ray and how many workers it starts there."""

    #: ``None``: start a local Ray instance (or use the one this process already joined);
    #: ``"auto"`` or ``"HOST:PORT"``: join that cluster.
    address: str | None = None
    #: Preparation actors; ``None``: one per GPU of the cluster, or one per CPU without GPUs.
    preparation_actors: int | None = None
    #: Query actors; ``None``: one per node, at least two so that losing one never stalls the job.
    query_actors: int | None = None
    #: How long to wait for every actor to be placed and ready (an autoscaler may add nodes).
    start_timeout_s: float = 600.0


def require_ray() -> ModuleType:
    """The ``ray`` module, or :class:`MissingExtra` naming the extra that provides it."""
    try:
        import ray
    except ImportError as exc:
        raise MissingExtra(
            "running a job on Ray needs the ray package: pip install 'apiwrap-certify[ray]'"
        ) from exc
    return ray


class _StartFailure:
    """What an actor's constructor raised, handed back by ``ready`` instead of crash-looping Ray."""

    def __init__(self, error: BaseException) -> None:
        self.message = f"{type(error).__name__}: {error}"


class PreparationWorker:
    """Ray actor: loads the job's denoiser once and prepares batches of samples."""

    def __init__(self, denoiser: str, sigma: float, seed: int, force: bool) -> None:
        from apiwrap.denoisers import load_denoiser

        self._seed, self._sigma = seed, sigma
        self._denoiser: Denoiser | None = None
        self._failure: _StartFailure | None = None
        try:
            self._denoiser = load_denoiser(denoiser, sigma, force=force)
        except Exception as exc:  # reported by ready(): a missing checkpoint is the user's to fix
            self._failure = _StartFailure(exc)

    def ready(self) -> DenoiserProvenance | _StartFailure:
        """The provenance record of the denoiser this worker loaded, checked by the driver."""
        if self._failure is not None:
            return self._failure
        assert self._denoiser is not None
        return self._denoiser.provenance

    def prepare(
        self, images: dict[str, SourceImage], requests: Sequence[tuple[str, int]]
    ) -> list[PreparedSample]:
        from apiwrap.engine.samples import prepare_samples

        return prepare_samples(
            self._denoiser, self._seed, self._sigma, [(images[digest], index) for digest, index in requests]
        )


@dataclass(frozen=True, slots=True)
class _Raised:
    """A vendor error the adapter raised for a whole request, carried back as a value."""

    error: VendorError


@dataclass(frozen=True, slots=True)
class _VendorProfile:
    name: str
    max_batch: int
    limits: ImageLimits
    #: Options that change which label a query votes for; the journal binds them with the settings.
    model_options: dict[str, Any]


class QueryWorker:
    """Ray actor (async): holds the vendor adapter on its machine and sends requests with it."""

    def __init__(self, vendor: str, options: dict[str, Any], adapter: Adapter | None) -> None:
        self._adapter: Adapter | None = adapter
        self._failure: _StartFailure | None = None
        if adapter is None:
            try:
                self._adapter = create_adapter(vendor, **options)
            except Exception as exc:  # reported by ready(): e.g. the vendor's SDK is missing on this node
                self._failure = _StartFailure(exc)

    async def ready(self) -> _VendorProfile | _StartFailure:
        if self._failure is not None:
            return self._failure
        assert self._adapter is not None
        adapter = self._adapter
        return _VendorProfile(adapter.name, adapter.max_batch, adapter.limits, dict(adapter.model_options))

    async def label_batch(self, images: list[bytes]) -> list[VendorAnswer | VendorError] | _Raised:
        assert self._adapter is not None
        try:
            return await self._adapter.label_batch(images)
        except VendorError as exc:
            return _Raised(exc)

    async def aclose(self) -> None:
        if self._adapter is not None:
            await self._adapter.aclose()


@dataclass(slots=True)
class _Request:
    image: SourceImage
    index: int
    future: asyncio.Future[PreparedSample]


class RayPreparer:
    """:class:`~apiwrap.engine.samples.SamplePreparer`'s interface over a pool of preparation actors."""

    def __init__(self, actors: Sequence[Any], *, batch_size: int) -> None:
        self._actors = list(actors)
        self._batch_size = batch_size
        self._queue: asyncio.Queue[_Request] = asyncio.Queue()
        self._free: asyncio.Queue[Any] = asyncio.Queue()
        for _ in range(_BATCHES_PER_ACTOR):
            for actor in self._actors:
                self._free.put_nowait(actor)
        self._batcher: asyncio.Task[None] | None = None
        self._batches: set[asyncio.Task[None]] = set()
        #: How many batches can be in preparation at once: the engine prepares that far ahead.
        self.batches_in_flight = _BATCHES_PER_ACTOR * len(self._actors)
        self.prepared = 0

    async def prepare(self, image: SourceImage, index: int) -> PreparedSample:
        if self._batcher is None:
            self._batcher = asyncio.create_task(self._run(), name="apiwrap-ray-sample-batcher")
        future: asyncio.Future[PreparedSample] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Request(image, index, future))
        return await future

    async def aclose(self) -> None:
        tasks = [task for task in (self._batcher, *self._batches) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        ray = require_ray()
        for actor in self._actors:
            ray.kill(actor)

    async def _run(self) -> None:
        while True:
            # Waiting for a free actor first lets requests pile up into a fuller batch meanwhile.
            actor = await self._free.get()
            batch = [await self._queue.get()]
            await asyncio.sleep(0)
            while len(batch) < self._batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            live = [request for request in batch if not request.future.cancelled()]
            if not live:
                self._free.put_nowait(actor)
                continue
            task = asyncio.create_task(self._prepare_on(actor, live))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    async def _prepare_on(self, actor: Any, batch: list[_Request]) -> None:
        from ray.exceptions import RayActorError, RayTaskError

        images = {request.image.digest: request.image for request in batch}
        try:
            samples = await actor.prepare.remote(images, [(r.image.digest, r.index) for r in batch])
        except RayActorError as exc:
            # Ray re-ran the batch on the restarted actor _PREPARATION_RETRIES times: these samples
            # keep killing their worker, so their images fail and the rest of the job goes on.
            self._fail(batch, ImageError(f"sample preparation keeps failing on the cluster: {exc}"))
        except RayTaskError as exc:  # the denoiser raised: the same error as on one machine
            self._fail(batch, exc.cause if exc.cause is not None else exc)
        else:
            self.prepared += len(samples)
            for request, sample in zip(batch, samples, strict=True):
                if not request.future.done():
                    request.future.set_result(sample)
        finally:
            self._free.put_nowait(actor)

    @staticmethod
    def _fail(batch: list[_Request], error: BaseException) -> None:
        for request in batch:
            if not request.future.done():
                request.future.set_exception(error)


class RayAdapter(Adapter):
    """An :class:`~apiwrap.adapters.Adapter` whose requests are sent by a pool of query actors."""

    def __init__(self, actors: Sequence[Any], profile: _VendorProfile) -> None:
        self._actors = list(actors)
        self._busy = [0] * len(self._actors)
        self.name = profile.name
        self.max_batch = profile.max_batch
        self.limits = profile.limits
        self.model_options = profile.model_options

    async def label_batch(self, images: Sequence[bytes]) -> list[VendorAnswer | VendorError]:
        from ray.exceptions import ObjectLostError, RayActorError, WorkerCrashedError

        ray = require_ray()
        worker = min(range(len(self._actors)), key=self._busy.__getitem__)
        self._busy[worker] += 1
        reference = self._actors[worker].label_batch.remote(list(images))
        try:
            answer = await reference
        except asyncio.CancelledError:
            ray.cancel(reference)  # the scheduler's request timeout: stop the call on the worker too
            raise
        except (RayActorError, WorkerCrashedError, ObjectLostError) as exc:
            raise AnswerLost(
                f"the query worker died before the vendor's answer came back ({type(exc).__name__})"
            ) from exc
        finally:
            self._busy[worker] -= 1
        if isinstance(answer, _Raised):
            raise answer.error
        return answer

    async def aclose(self) -> None:
        from ray.exceptions import RayError

        ray = require_ray()
        with contextlib.suppress(RayError):  # a worker that died took its vendor connection with it
            await asyncio.gather(*(actor.aclose.remote() for actor in self._actors))
        for actor in self._actors:
            ray.kill(actor)


@dataclass(frozen=True, slots=True)
class RayWorkers:
    """The two pools of one job, ready: the engine uses them in place of their local twins."""

    preparer: RayPreparer
    adapter: RayAdapter
    #: Each distinct provenance record of the preparation workers; all agree on what decides the bytes.
    denoisers: tuple[DenoiserProvenance, ...]


async def start_workers(
    options: RayOptions,
    settings: CertificationSettings,
    *,
    job: str,
    vendor_options: dict[str, Any],
    adapter: Adapter | None,
    force_denoiser: bool,
    batch_size: int,
) -> RayWorkers:
    """Join (or start) the cluster, start the job's actors and wait until all are ready.

    ``adapter``, when given, is copied (pickled) into every query actor instead of building
    the vendor's adapter there: a seam for tests and for adapters that pickle.
    Every preparation actor must report the same denoiser provenance (weights digest, runtime,
    device kind, precision): a node with another checkpoint, runtime or device is refused
    before any query is sent.
    """
    ray = require_ray()
    if not ray.is_initialized():
        await asyncio.to_thread(ray.init, address=options.address, namespace=NAMESPACE, log_to_driver=False)
    resources = ray.cluster_resources()
    gpus, cpus = float(resources.get("GPU", 0)), float(resources.get("CPU", 1))
    preparation_count = options.preparation_actors or max(1, int(gpus) or int(cpus))
    query_count = options.query_actors or max(2, sum(1 for node in ray.nodes() if node["Alive"]))
    run = f"{job}.{uuid.uuid4().hex[:8]}"
    # Fractions let more actors than devices share them rather than wait forever to be placed.
    device = (
        {"num_gpus": min(1.0, gpus / preparation_count), "num_cpus": 0}
        if gpus >= 1
        else {"num_cpus": min(1.0, cpus / preparation_count)}
    )
    preparation = [
        ray.remote(PreparationWorker)
        .options(
            name=f"{run}.prepare.{i}",
            namespace=NAMESPACE,
            max_restarts=-1,
            max_task_retries=_PREPARATION_RETRIES,
            **device,
        )
        .remote(settings.denoiser, settings.sigma, settings.seed, force_denoiser)
        for i in range(preparation_count)
    ]
    # Query actors wait on the network: no CPU reserved, spread over the nodes so requests
    # leave from many machines. No task retries: only the scheduler may re-send (and journal) a query.
    query = [
        ray.remote(QueryWorker)
        .options(
            name=f"{run}.query.{i}",
            namespace=NAMESPACE,
            num_cpus=0,
            scheduling_strategy="SPREAD",
            max_restarts=-1,
            max_task_retries=0,
        )
        .remote(settings.vendor, vendor_options, adapter)
        for i in range(query_count)
    ]
    try:
        async with asyncio.timeout(options.start_timeout_s):
            records = await asyncio.gather(*(actor.ready.remote() for actor in preparation))
            profiles = await asyncio.gather(*(actor.ready.remote() for actor in query))
    except TimeoutError:
        _kill_all(ray, preparation + query)
        raise ConfigurationError(
            f"Ray did not start {preparation_count} preparation and {query_count} query workers within "
            f"{options.start_timeout_s:g} s; the cluster has {cpus:g} CPUs and {gpus:g} GPUs"
        ) from None
    failures = [answer.message for answer in (*records, *profiles) if isinstance(answer, _StartFailure)]
    loaded = [record for record in records if not isinstance(record, _StartFailure)]
    disagreement = None if failures else disagreeing_worker(loaded)
    if failures or disagreement:
        _kill_all(ray, preparation + query)
        raise ConfigurationError(
            f"a Ray worker could not start: {failures[0]}" if failures else str(disagreement)
        )
    return RayWorkers(
        RayPreparer(preparation, batch_size=batch_size),
        RayAdapter(query, profiles[0]),
        tuple(dict.fromkeys(loaded)),
    )


def disagreeing_worker(records: Sequence[DenoiserProvenance]) -> str | None:
    """Why preparation workers with these records cannot prepare one job's samples (the first
    worker whose record differs from worker 0's, and how), or None when they all agree."""
    first = records[0]
    for worker, record in enumerate(records[1:], start=1):
        changed = record.differences(first.deciding())
        if changed:
            details = "; ".join(
                f"{field}: {theirs} on worker 0, {ours} on worker {worker}"
                for field, (theirs, ours) in changed.items()
            )
            return (
                f"Ray preparation workers would make other bytes for the same sample ({details}): "
                "give every node the same denoiser files, runtime (onnxruntime installed or not) and "
                "device kind"
            )
    return None


def _kill_all(ray: ModuleType, actors: list[Any]) -> None:
    for actor in actors:
        ray.kill(actor)
