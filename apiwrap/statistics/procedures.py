"""Certification procedures over a vote source: fixed-n (Cohen) and sequential (early stopping).

A procedure asks ``fetch(indices)`` for the votes of given sample indices and decides. The
engine's fetch buys missing votes from the vendor (and reads answered ones from the
journal); ``replay``'s fetch reads the journal only. So a replay re-runs exactly the
decisions, stopping rules included, that the job made.

Index layout, fixed by the settings before any vote is seen: -1 is the clean image;
selection draws from 0..n0-1; estimation from n0 upward. Selection votes are never
counted in estimation. Sequential designs count estimation votes over the prefix of
indices (never in completion order), and a failed query is a vote against the candidate,
as in fixed-n CERTIFY: replacing it with a fresh draw would bias the sample.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from apiwrap.statistics.allocation import Admission, ImageState
from apiwrap.statistics.fixed import (
    AbstainReason,
    Certificate,
    Prediction,
    certify,
    certify_candidate,
    predict,
)
from apiwrap.statistics.radii import report_radii
from apiwrap.statistics.sequential import (
    BestRadiusDesign,
    LeaderSelection,
    MixtureDesign,
    Verdict,
    default_best_radius_design,
    default_target_design,
)
from apiwrap.statistics.settings import CertificationSettings
from apiwrap.statistics.votes import CLEAN_SAMPLE, FAILED_QUERY, QueryRecord

#: CertificationSettings is re-exported: procedures and their settings are read together.
__all__ = [
    "UNVERSIONED",
    "Admit",
    "CertificationSettings",
    "Fetch",
    "ImageResult",
    "decide",
    "design_of",
    "run_procedure",
    "sample_ranges",
]


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


#: Stands in the model versions of a certificate for answers that named none.
UNVERSIONED = "<unversioned>"


def _model_versions(records: list[QueryRecord]) -> list[str]:
    """The vendor models that answered; more than one means drift.

    An answer without a version, from a vendor whose other answers name one, may come from
    another model, so it counts as one more version. Failed queries judged nothing and
    carry no version, so they never count.
    """
    answered = {r.model_version for r in records if r.outcome == "ok"}
    named = sorted(version for version in answered if version is not None)
    return [*named, UNVERSIONED] if named and None in answered else named


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
        estimation_counts = Counter(r.label for r in estimation)
        if settings.selection == "clean":
            candidate = reference.label if reference is not None and reference.outcome == "ok" else None
            outcome = certify_candidate(
                candidate, estimation_counts, sigma=settings.sigma, alpha=settings.alpha
            )
        else:
            selection_counts = Counter(r.label for r in selection)
            outcome = certify(selection_counts, estimation_counts, sigma=settings.sigma, alpha=settings.alpha)
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


Fetch = Callable[[Sequence[int]], Awaitable[list[QueryRecord]]]


def sample_ranges(settings: CertificationSettings) -> tuple[range, range]:
    """(selection, estimation) sample indices of fixed-n procedures; disjoint by construction."""
    if settings.mode == "predict":
        return range(0), range(settings.n)
    estimation = range(settings.n0, settings.n0 + settings.n)
    return (range(0) if settings.selection == "clean" else range(settings.n0)), estimation


#: Asked before each batch of sequential estimation votes; see apiwrap.engine.allocator.
Admit = Callable[[ImageState], Awaitable[Admission]]


async def run_procedure(
    settings: CertificationSettings, fetch: Fetch, admit: Admit | None = None
) -> ImageResult:
    """One image's result from the votes ``fetch`` returns; ``admit`` (sequential designs) may stop it."""
    if settings.design == "fixed":
        return await _fixed(settings, fetch)
    return await _sequential(settings, fetch, admit)


async def _fixed(settings: CertificationSettings, fetch: Fetch) -> ImageResult:
    selection_indices, estimation_indices = sample_ranges(settings)
    reference, selection = await asyncio.gather(fetch([CLEAN_SAMPLE]), fetch(selection_indices))
    estimation = await fetch(estimation_indices)
    return decide(settings, reference[0], selection, estimation)


def design_of(settings: CertificationSettings) -> MixtureDesign | BestRadiusDesign:
    """The sequential design a job of these settings runs (target or best-radius)."""
    if settings.design == "target":
        assert settings.target_radius is not None
        return default_target_design(
            settings.sigma, settings.alpha, settings.target_radius, settings.max_queries, settings.futility
        )
    # Stop at the radii a report reads: buying more queries than it takes to pass the next
    # of them buys nothing a reader sees.
    ladder = report_radii(settings.sigma)
    return default_best_radius_design(
        settings.sigma, settings.alpha, settings.max_queries, ladder, settings.futility
    )


async def _select(settings: CertificationSettings, fetch: Fetch) -> tuple[str | None, list[QueryRecord]]:
    """Buy selection votes only until one label clearly leads (or the n0 cap)."""
    rule = LeaderSelection(lead=settings.selection_lead, max_votes=settings.n0)
    votes: list[QueryRecord] = []
    while True:
        counts = Counter(r.label for r in votes if r.label != FAILED_QUERY)
        ranked = [*sorted(counts.items(), key=lambda item: -item[1]), ("", 0), ("", 0)]
        if votes:
            decision = rule.look(counts)
            if decision.done:
                return decision.label, votes
            if len(votes) >= settings.n0:  # failed queries used up the cap: a unique leader or none
                return (ranked[0][0] if ranked[0][1] > ranked[1][1] else None), votes
        # The fewest further votes that could end selection: the leader's missing margin.
        wanted = max(1, settings.selection_lead - (ranked[0][1] - ranked[1][1]))
        votes += await fetch(range(len(votes), min(settings.n0, len(votes) + wanted)))


def _votes_until_decidable(design: MixtureDesign | BestRadiusDesign, n: int, k: int, next_look: int) -> int:
    """How many more votes could possibly end the test: none are bought that cannot matter."""
    if not isinstance(design, MixtureDesign):
        return next_look - n
    looks = design.looks
    certify, futile = design.certify_boundary, design.futility_boundary
    for position in range(looks.index(next_look), len(looks)):
        more = looks[position] - n
        if k + more >= certify[position] or k <= futile[position] or position == len(looks) - 1:
            return more
    return looks[-1] - n


async def _sequential(settings: CertificationSettings, fetch: Fetch, admit: Admit | None) -> ImageResult:
    design = design_of(settings)
    reference_task = asyncio.ensure_future(fetch([CLEAN_SAMPLE]))
    try:
        if settings.selection == "clean":
            reference = (await reference_task)[0]
            candidate = reference.label if reference.outcome == "ok" else None
            selection: list[QueryRecord] = []
        else:
            candidate, selection = await _select(settings, fetch)
            reference = (await reference_task)[0]
    finally:
        # If selection failed, its error is the one raised: stop waiting for the clean query,
        # and mark an error of the clean query as seen, however the two race.
        reference_task.add_done_callback(lambda task: task.cancelled() or task.exception())
        reference_task.cancel()
    result = ImageResult(image="", status="abstained", reference_label=reference.label, candidate=candidate)
    estimation: list[QueryRecord] = []
    if candidate is None or candidate == FAILED_QUERY:
        result.abstain_reason = AbstainReason.NO_SELECTION.value
    else:
        test = design.start()
        k = 0
        while (look := test.next_look()) is not None:
            more = _votes_until_decidable(design, len(estimation), k, look)
            if admit is not None:
                state = ImageState("", len(estimation), k, len(estimation) + more, design.p_needed)
                if (admission := await admit(state)) is not Admission.GRANTED:
                    result.abstain_reason = admission.abstain_reason.value
                    if admission is Admission.UNFUNDED:
                        result.status = "budget"
                    break
            start = settings.n0 + len(estimation)
            fresh = await fetch(range(start, start + more))
            estimation += fresh
            k += sum(r.label == candidate for r in fresh)
            decision = test.look(len(estimation), k)
            if decision.verdict is Verdict.CERTIFIED:
                result.status, result.label = "certified", candidate
                result.radius, result.p_lower = decision.radius, decision.p_lower
            elif decision.verdict is Verdict.FUTILE:
                result.abstain_reason = AbstainReason.FUTILE.value
            elif decision.verdict is Verdict.EXHAUSTED:
                result.abstain_reason = AbstainReason.EXHAUSTED.value
        result.votes_for_candidate = k
    result.estimation_votes = len(estimation)
    votes = selection + estimation
    result.queries = len(votes) + 1
    result.failed_queries = sum(r.outcome != "ok" for r in votes)
    result.top_votes = dict(Counter(r.label for r in estimation or selection).most_common(5))
    result.model_versions = _model_versions([*votes, reference])
    if len(result.model_versions) > 1:
        result.status, result.label, result.radius = "abstained", None, None
        result.abstain_reason = AbstainReason.MODEL_DRIFT.value
    return result
