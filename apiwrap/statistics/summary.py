"""Summaries of a job's results: certified accuracy with its confidence interval, and spending."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scipy.stats import binomtest

from apiwrap.statistics.fixed import AbstainReason
from apiwrap.statistics.procedures import ImageResult

__all__ = ["AccuracyAtRadius", "Spending", "certified_accuracy", "certified_at", "spending"]


@dataclass(frozen=True, slots=True)
class AccuracyAtRadius:
    radius: float
    certified: int
    images: int
    low: float
    high: float

    @property
    def accuracy(self) -> float:
        return self.certified / self.images if self.images else 0.0


def certified_at(result: ImageResult, radius: float) -> bool:
    """Whether the image is certified at radius >= ``radius`` with the vendor's clean label."""
    return (
        result.status == "certified"
        and result.label == result.reference_label
        and (result.radius or 0.0) >= radius
    )


def certified_accuracy(results: Sequence[ImageResult], radii: Sequence[float]) -> list[AccuracyAtRadius]:
    """Share of images certified at radius >= r with the vendor's clean label, with a 95% interval.

    Every image counts: one that failed, was left unfunded by the budget or abstained is
    simply not certified, so a job cannot look better by losing its hard images. The
    interval is the exact (Clopper-Pearson) binomial interval over images: alpha is per
    image, so the accuracy itself is an estimate with its own uncertainty.
    """
    scored = list(results)
    rows = []
    for radius in radii:
        hits = sum(certified_at(r, radius) for r in scored)
        if scored:
            interval = binomtest(hits, len(scored)).proportion_ci(confidence_level=0.95, method="exact")
            low, high = float(interval.low), float(interval.high)
        else:
            low, high = 0.0, 1.0
        rows.append(AccuracyAtRadius(radius, hits, len(scored), low, high))
    return rows


@dataclass(frozen=True, slots=True)
class Spending:
    """What one kind of outcome cost: its images and the queries bought for them."""

    outcome: str
    images: int
    queries: int


SPENDING_OUTCOMES = ("certified", "abstained on the evidence", "given up early", "unfunded", "failed")


def spending(results: Sequence[ImageResult]) -> list[Spending]:
    """Queries by outcome, in SPENDING_OUTCOMES order (outcomes with no image left out)."""
    totals: dict[str, list[int]] = {outcome: [0, 0] for outcome in SPENDING_OUTCOMES}
    for result in results:
        if result.status in {"certified", "predicted"}:
            outcome = "certified"
        elif result.status == "failed":
            outcome = "failed"
        elif result.status == "budget":
            outcome = "unfunded"
        elif result.abstain_reason == AbstainReason.HOPELESS.value:
            outcome = "given up early"
        else:
            outcome = "abstained on the evidence"
        totals[outcome][0] += 1
        totals[outcome][1] += result.queries
    return [Spending(outcome, images, queries) for outcome, (images, queries) in totals.items() if images]
