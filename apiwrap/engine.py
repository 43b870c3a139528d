"""The certification engine: images in, certificates out, every vote journaled.

For each image: the clean image is sent once (the vendor's reference label), then the
selection samples (indices 0..n0-1) choose the candidate, then fresh estimation samples
(indices n0..n0+n-1) are counted. Sample preparation (noise, denoiser, PNG) and vendor
queries overlap across all images in flight; a bounded number of samples are prepared
ahead of the vendor so nothing is denoised that cannot be sent soon.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from apiwrap.certify import AbstainReason, Certificate, Prediction, certify, predict
from apiwrap.images import ENCODING, ImageError, SourceImage, load_image
from apiwrap.journal import Journal, QueryRecord
from apiwrap.noise import NOISE_SCHEME
from apiwrap.samples import CLEAN_SAMPLE, SamplePreparer
from apiwrap.scheduler import JobAborted, QueryScheduler
from budgets import BudgetExceeded

__all__ = ["CertificationSettings", "Engine", "ImageResult", "decide"]

Mode = Literal["certify", "predict"]


@dataclass(frozen=True, slots=True)
class CertificationSettings:
    """What defines a job's certificates; stored in its journal and fixed for its life."""

    vendor: str
    sigma: float = 0.25
    n0: int = 20
    n: int = 100
    alpha: float = 0.001
    seed: int = 0
    denoiser: str = "none"
    size: int | None = None
    mode: Mode = "certify"

    def __post_init__(self) -> None:
        if self.sigma <= 0:
            raise ValueError(f"sigma must be positive, got {self.sigma}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.n < 1 or self.n0 < (1 if self.mode == "certify" else 0):
            raise ValueError(f"need n >= 1 and n0 >= 1 (certify), got n0={self.n0}, n={self.n}")
        if self.size is not None and self.size < 8:
            raise ValueError(f"size must be at least 8 pixels, got {self.size}")

    @property
    def queries_per_image(self) -> int:
        """Clean reference query plus the noisy samples."""
        return 1 + (self.n0 + self.n if self.mode == "certify" else self.n)

    def journal_record(self) -> dict[str, Any]:
        return {**asdict(self), "noise": NOISE_SCHEME, "encoding": ENCODING}


@dataclass(slots=True)
class ImageResult:
    """Everything a user needs to read one image's outcome."""

    image: str
    status: Literal["certified", "predicted", "abstained", "failed", "budget"]
    label: str | None = None
    radius: float | None = None
    reference_label: str | None = None
    abstain_reason: str | None = None
    error: str | None = None
    p_lower: float | None = None
    candidate: str | None = None
    votes_for_candidate: int = 0
    estimation_votes: int = 0
    top_votes: dict[str, int] = field(default_factory=dict)
    queries: int = 0
    failed_queries: int = 0
    model_versions: list[str] = field(default_factory=list)
    digest: str | None = None
    certified_space: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _model_versions(records: list[QueryRecord]) -> list[str]:
    return sorted({r.model_version for r in records if r.model_version is not None})


def decide(
    settings: CertificationSettings,
    reference: QueryRecord | None,
    selection: list[QueryRecord],
    estimation: list[QueryRecord],
) -> ImageResult:
    """Turn journaled votes into the image's result (pure: used by runs and by replay)."""
    votes = selection + estimation
    versions = _model_versions(votes + ([reference] if reference else []))
    result = ImageResult(
        image="",
        status="abstained",
        reference_label=reference.label if reference else None,
        queries=len(votes) + (1 if reference else 0),
        failed_queries=sum(r.outcome != "ok" for r in votes),
        model_versions=versions,
        top_votes=dict(Counter(r.label for r in estimation or selection).most_common(5)),
    )
    if len(versions) > 1:
        # Votes of two vendor models estimate two different smoothed classifiers.
        result.abstain_reason = AbstainReason.MODEL_DRIFT.value
        return result
    outcome: Certificate | Prediction
    if settings.mode == "certify":
        outcome = certify(
            Counter(r.label for r in selection),
            Counter(r.label for r in estimation),
            sigma=settings.sigma,
            alpha=settings.alpha,
        )
        result.p_lower = outcome.p_lower
        result.candidate = outcome.candidate
        result.votes_for_candidate = outcome.votes_for_candidate
        result.estimation_votes = outcome.estimation_votes
        result.radius = outcome.radius
        result.status = "abstained" if outcome.abstained else "certified"
    else:
        outcome = predict(Counter(r.label for r in estimation), alpha=settings.alpha)
        result.votes_for_candidate = outcome.votes_for_label
        result.estimation_votes = len(estimation)
        result.status = "abstained" if outcome.abstained else "predicted"
    result.label = outcome.label
    result.abstain_reason = outcome.abstain_reason.value if outcome.abstain_reason else None
    return result


def sample_ranges(settings: CertificationSettings) -> tuple[range, range]:
    """(selection, estimation) sample indices; disjoint by construction."""
    if settings.mode == "predict":
        return range(0), range(settings.n)
    return range(settings.n0), range(settings.n0, settings.n0 + settings.n)


class Engine:
    """Runs one job: certifies images through a scheduler, journaling every vote."""

    def __init__(
        self,
        settings: CertificationSettings,
        journal: Journal,
        scheduler: QueryScheduler,
        preparer: SamplePreparer,
        *,
        images_in_flight: int = 4,
        prepare_ahead: int = 32,
        on_query: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self._journal = journal
        self._scheduler = scheduler
        self._preparer = preparer
        self._images_in_flight = asyncio.Semaphore(images_in_flight)
        # Bounds samples prepared but not yet answered: back-pressure on the denoiser.
        self._ahead = asyncio.Semaphore(prepare_ahead)
        self._on_query = on_query or (lambda: None)
        self.budget_exhausted = False
        journal.bind_parameters(settings.journal_record())

    async def run(self, images: list[tuple[str, Path | bytes]]) -> list[ImageResult]:
        """Certify every image; one image's failure never stops the others."""
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
                    image=name, status="budget", error=str(exc), abstain_reason=AbstainReason.BUDGET.value
                )
            except JobAborted as exc:
                result = ImageResult(image=name, status="failed", error=str(exc))
            status = "done" if result.status in {"certified", "predicted", "abstained"} else result.status
            self._journal.finish_image(image_id, status, result.to_json(), result.error)
            return result

    async def _certify(self, image_id: int, name: str, source: Path | bytes) -> ImageResult:
        if self.budget_exhausted:
            raise BudgetExceeded("the job's budget ran out before this image started")
        image = await asyncio.to_thread(load_image, source, name=name, size=self.settings.size)
        self._journal.set_digest(image_id, image.digest)
        answered = self._journal.answered(image_id)
        selection_indices, estimation_indices = sample_ranges(self.settings)
        reference, selection = await asyncio.gather(
            self._vote(image, image_id, CLEAN_SAMPLE, answered),
            self._votes(image, image_id, selection_indices, answered),
        )
        estimation = await self._votes(image, image_id, estimation_indices, answered)
        result = decide(self.settings, reference, selection, estimation)
        result.image = name
        result.digest = image.digest
        result.certified_space = _space(image)
        return result

    async def _votes(
        self, image: SourceImage, image_id: int, indices: range, answered: dict[int, QueryRecord]
    ) -> list[QueryRecord]:
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._vote(image, image_id, i, answered)) for i in indices]
        except BaseExceptionGroup as errors:
            raise _most_telling(errors) from errors
        return [task.result() for task in tasks]

    async def _vote(
        self, image: SourceImage, image_id: int, index: int, answered: dict[int, QueryRecord]
    ) -> QueryRecord:
        if index in answered:
            return answered[index]  # paid for already: never re-sent, never counted twice
        async with self._ahead:
            sample = await self._preparer.prepare(image, index)
            record = await self._scheduler.query(image_id, index, sample.data, sample.digest)
        self._on_query()
        return record


def _most_telling(errors: BaseExceptionGroup) -> BaseException:
    """The one error of a failed image that explains it: job-wide stops before budget, then the first."""
    leaves: list[BaseException] = []

    def collect(group: BaseExceptionGroup) -> None:
        for error in group.exceptions:
            collect(error) if isinstance(error, BaseExceptionGroup) else leaves.append(error)

    collect(errors)
    for kind in (JobAborted, BudgetExceeded):
        for error in leaves:
            if isinstance(error, kind):
                return error
    return leaves[0]


def _space(image: SourceImage) -> str:
    height, width, _ = image.shape
    if image.resized_from is None:
        return f"{width}x{height} pixels as given, values in [0, 1]"
    original_width, original_height = image.resized_from
    return (
        f"{width}x{height} pixels after resizing and centre-cropping the {original_width}x"
        f"{original_height} original; values in [0, 1]"
    )
