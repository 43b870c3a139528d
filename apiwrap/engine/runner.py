"""The certification engine: images in, certificates out, every vote journaled.

For each image the engine runs the job's procedure (``apiwrap.statistics.procedures``: fixed-n CERTIFY
or PREDICT, or a sequential design), giving it a vote source that returns journaled votes
and buys missing ones. Sample preparation (noise, denoiser, PNG) and vendor
queries overlap across all images in flight; a bounded number of samples are prepared
ahead of the vendor so nothing is denoised that cannot be sent soon.

The job's parameters are bound in its journal with the provenance of whatever prepares its
samples (the denoiser's weights digest, runtime, device kind and precision), so a resume whose
samples would come from another base classifier is refused before any query; a sample that was
in flight when the job last stopped is re-sent only if its bytes are those sent then.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from apiwrap import __version__
from apiwrap.budgets import BudgetExceeded
from apiwrap.engine.allocator import BudgetAllocator
from apiwrap.engine.images import ENCODING, SourceImage, check_vendor_limits, load_image
from apiwrap.engine.journal import Journal
from apiwrap.engine.noise import NOISE_SCHEME
from apiwrap.engine.samples import SamplePreparer
from apiwrap.engine.scheduler import QueryScheduler
from apiwrap.errors import ImageError, JobAborted, JournalError
from apiwrap.statistics.allocation import Admission, ImageState
from apiwrap.statistics.fixed import AbstainReason
from apiwrap.statistics.procedures import CertificationSettings, ImageResult, run_procedure
from apiwrap.statistics.votes import FAILED_QUERY, QueryRecord

if TYPE_CHECKING:
    from apiwrap.denoisers import DenoiserProvenance

__all__ = ["Engine"]

#: Journal keys of the denoiser's deciding fields: ``denoiser_weights_sha256``, ``denoiser_runtime``, ...
_DENOISER_KEY = "denoiser_{}"


class Engine:
    """Runs one job: certifies images through a scheduler, journaling every vote.

    ``denoisers`` are the provenance records of what prepares the samples: the local denoiser's,
    or each distinct one of the Ray workers (they agree on every deciding field).
    """

    def __init__(
        self,
        settings: CertificationSettings,
        journal: Journal,
        scheduler: QueryScheduler,
        preparer: SamplePreparer,
        *,
        denoisers: Sequence[DenoiserProvenance],
        images_in_flight: int = 4,
        prepare_ahead: int = 32,
        on_query: Callable[[], None] | None = None,
        on_result: Callable[[ImageResult], None] | None = None,
        provenance: dict[str, object] | None = None,
        allocator: BudgetAllocator | None = None,
    ) -> None:
        self.settings = settings
        self._journal = journal
        self._scheduler = scheduler
        self._preparer = preparer
        self._images_in_flight = asyncio.Semaphore(images_in_flight)
        # One image decoded at a time: a large source's decode (up to images.DECODE_BYTES_PER_PIXEL
        # bytes per pixel, briefly) is the job's largest allocation, and it is never doubled.
        self._decoding = asyncio.Lock()
        # Bounds samples prepared but not yet answered: back-pressure on the denoiser.
        self._ahead = asyncio.Semaphore(prepare_ahead)
        self._on_query = on_query or (lambda: None)
        self._on_result = on_result or (lambda result: None)
        self.budget_exhausted = False
        self._allocator = allocator
        # What decides the bytes sent is bound with the settings: a retrained checkpoint under
        # the same name, or another runtime or device, must not resume another's votes.
        denoiser = {_DENOISER_KEY.format(field): value for field, value in denoisers[0].deciding().items()}
        parameters = (
            dataclasses.asdict(settings)
            | {"noise": NOISE_SCHEME, "encoding": ENCODING}
            | (provenance or {})
            | denoiser
        )
        _refuse_another_label_rule(journal, parameters)
        _refuse_another_base_classifier(journal, parameters, denoisers[0])
        journal.bind_parameters(parameters)
        journal.record_run(__version__, [record.to_json() for record in denoisers])
        # Attempts an earlier run left in flight are re-sent: with their bytes, or not at all.
        self._sent_before = journal.in_flight_digests()

    async def run(self, images: list[tuple[str, Path | bytes]]) -> list[ImageResult]:
        """Certify every image; one image's failure never stops the others."""
        if self._allocator is not None:
            # An allocation round waits for every image, so every image must be in flight.
            self._images_in_flight = asyncio.Semaphore(max(1, len(images)))
            for name, _ in images:
                self._allocator.enter(name)
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self._guarded(name, source)) for name, source in images]
        return [task.result() for task in tasks]

    async def _guarded(self, name: str, source: Path | bytes) -> ImageResult:
        async with self._images_in_flight:
            image_id = self._journal.image_id(name)
            try:
                result = await self._certify(image_id, name, source)
            except ImageError as exc:
                result = ImageResult(image=name, status="failed", error=str(exc))
            except BudgetExceeded as exc:
                self.budget_exhausted = True
                result = ImageResult(
                    image=name,
                    status="budget",
                    error=str(exc),
                    abstain_reason=AbstainReason.BUDGET.value,
                    queries=len(self._journal.answered(image_id)),  # what was paid before it ran out
                )
            except JobAborted as exc:
                # e.g. credentials revoked mid-job: what the image paid before that still counts
                result = ImageResult(
                    image=name, status="failed", error=str(exc), queries=len(self._journal.answered(image_id))
                )
            finally:
                if self._allocator is not None:
                    self._allocator.leave(name)
            # An image the allocator left unfunded is done: its stop is part of a replayable decision.
            status = "done" if result.error is None and result.status != "failed" else result.status
            self._journal.finish_image(image_id, status, result.to_json(), result.error)
            self._on_result(result)
            return result

    async def _certify(self, image_id: int, name: str, source: Path | bytes) -> ImageResult:
        if self.budget_exhausted:
            raise BudgetExceeded("the job's budget ran out before this image started")
        limits = self._scheduler.adapter.limits
        await asyncio.to_thread(check_vendor_limits, source, limits, name=name, size=self.settings.size)
        async with self._decoding:
            image = await asyncio.to_thread(load_image, source, name=name, size=self.settings.size)
        self._journal.set_digest(image_id, image.digest)
        answered = self._journal.answered(image_id)

        async def fetch(indices: Sequence[int]) -> list[QueryRecord]:
            return await self._votes(image, image_id, indices, answered)

        admit = None
        if (allocator := self._allocator) is not None:
            estimation_start = self.settings.n0  # sequential estimation indices start here

            async def admit(state: ImageState) -> Admission:
                wanted = state.next_look if state.next_look is not None else state.n_votes
                batch = range(estimation_start + state.n_votes, estimation_start + wanted)
                if all(index in answered for index in batch):
                    return Admission.GRANTED  # paid for by an earlier run of the job: free
                return await allocator.admit(name, state)

        result = await run_procedure(self.settings, fetch, admit)
        if result.reference_label == FAILED_QUERY and result.failed_queries == result.queries - 1:
            # Nothing was judged: an unreachable vendor is a failure to report, not an abstention.
            result.status = "failed"
            result.error = f"every one of its {result.queries} queries failed at the vendor (see the journal)"
        result.image = name
        result.digest = image.digest
        result.certified_space = _space(image)
        return result

    async def _votes(
        self, image: SourceImage, image_id: int, indices: Sequence[int], answered: dict[int, QueryRecord]
    ) -> list[QueryRecord]:
        """The votes of ``indices``, bought through a window of at most ``scheduler.window``
        queries in flight, so the work and memory of one image do not grow with n.

        After the first failure (budget spent, job aborted) no further sample is prepared;
        those already sent are awaited, not cancelled: they are paid for, and their votes
        belong in this image's count now, not only in the journal that a resumed run reads.
        """
        records: dict[int, QueryRecord] = {}
        errors: list[BaseException] = []
        in_flight: set[asyncio.Task[QueryRecord]] = set()

        def collect(done: set[asyncio.Task[QueryRecord]]) -> None:
            for task in done:
                if (error := task.exception()) is not None:
                    errors.append(error)
                else:
                    record = task.result()
                    records[record.sample_index] = record

        try:
            for index in indices:
                if index in answered:
                    records[index] = answered[index]  # paid for already: never re-sent, never counted twice
                    continue
                while len(in_flight) >= self._scheduler.window and not errors:
                    done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                    collect(done)
                if errors:
                    break
                in_flight.add(asyncio.create_task(self._vote(image, image_id, index)))
            if in_flight:
                done, in_flight = await asyncio.wait(in_flight)
                collect(done)
        finally:
            for task in in_flight:
                task.cancel()  # reached only when this image itself is cancelled
        if errors:
            raise _most_telling(errors) from BaseExceptionGroup("queries of one image failed", errors)
        return [records[index] for index in indices]

    async def _vote(self, image: SourceImage, image_id: int, index: int) -> QueryRecord:
        async with self._ahead:
            self._scheduler.check_affordable()
            sample = await self._preparer.prepare(image, index)
            sent_before = self._sent_before.get((image_id, index), set())
            if sent_before - {sample.digest}:
                # The vendor may have answered the bytes sent then; a vote for other bytes would
                # come from another base classifier. Nothing is sent, and no image goes on.
                error = _other_bytes(image.name, index, sample.digest, sent_before)
                self._scheduler.abort(error)
                raise error
            record = await self._scheduler.query(image_id, index, sample.data, sample.digest)
        self._on_query()
        return record


def _other_bytes(image: str, index: int, prepared: str, sent: set[str]) -> JobAborted:
    others = ", ".join(sorted(sent - {prepared}))
    return JobAborted(
        f"{image}, sample {index}: the bytes prepared again for this sample, in flight when the job "
        f"last stopped, have sha256 {prepared}, not {others} as sent then: the base classifier changed "
        "since the job started (another denoiser runtime, device or machine); nothing was sent for "
        "it. Resume where the job started, or start a new job"
    )


def _refuse_another_label_rule(journal: Journal, parameters: dict[str, object]) -> None:
    """A journal whose votes another rule counted cannot take this apiwrap's votes: no parameter
    the user can set brings the rule back, so the refusal says what can be done instead."""
    stored = (journal.parameters() or {}).get("label_rule")
    if stored is None or stored == parameters.get("label_rule"):
        return
    raise JournalError(
        f"job {journal.path.stem!r} counted its votes by label rule {stored!r}, this apiwrap counts them "
        f"by {parameters.get('label_rule')!r}: votes of two rules cannot be pooled, so the job cannot "
        "resume; start it again under a new --job name (apiwrap replay still re-certifies its "
        "journaled votes)"
    )


def _refuse_another_base_classifier(
    journal: Journal, parameters: dict[str, object], denoiser: DenoiserProvenance
) -> None:
    """A resume that differs from the job only in what decides the bytes is refused with what
    differs and how to fix it; any other difference is left to ``Journal.bind_parameters``."""
    changed = journal.changed_parameters(parameters)
    keys = {_DENOISER_KEY.format(field): field for field in denoiser.deciding()}
    if not changed or not set(changed) <= keys.keys():
        return
    stored = journal.parameters() or {}
    refusal = denoiser.refusal({field: stored.get(key) for key, field in keys.items()})
    raise JournalError(f"job {journal.path.stem!r} cannot resume here: {refusal}")


def _most_telling(errors: Sequence[BaseException]) -> BaseException:
    """The one error of a failed image that explains it: job-wide stops before budget, then the first."""
    for kind in (JobAborted, BudgetExceeded):
        for error in errors:
            if isinstance(error, kind):
                return error
    return errors[0]


def _space(image: SourceImage) -> str:
    height, width, _ = image.shape
    if image.resized_from is None:
        return f"{width}x{height} pixels as given, values in [0, 1]"
    original_width, original_height = image.resized_from
    return (
        f"{width}x{height} pixels after resizing and centre-cropping the {original_width}x"
        f"{original_height} original; values in [0, 1]"
    )
