"""Allocation decisions: which images a shared budget funds next, and how its stops replay.

Pure: vote counts in, decisions out. The live gate that applies them to a running job is
``apiwrap.engine.allocator.BudgetAllocator``; these decisions only choose whether more votes
are bought, never how they count, so no allocation can weaken a certificate.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scipy import stats

from apiwrap.statistics.fixed import AbstainReason

__all__ = ["Admission", "Allocation", "ImageState", "allocate", "certificate_probability", "journaled_stop"]


class Admission(enum.Enum):
    GRANTED = "granted"
    HOPELESS = "hopeless"  # given up: a certificate looked too unlikely to pay for
    UNFUNDED = "unfunded"  # the budget could not buy this image's next batch

    @property
    def abstain_reason(self) -> AbstainReason:
        return AbstainReason.HOPELESS if self is Admission.HOPELESS else AbstainReason.BUDGET


@dataclass(frozen=True)
class ImageState:
    """What the allocator needs to know about one image still being certified."""

    key: str
    n_votes: int
    n_for_candidate: int
    next_look: int | None  # SequentialTest.next_look(); None when decided
    p_needed: float  # design.p_needed: pA must exceed this for the certificate sought


@dataclass(frozen=True)
class Allocation:
    """Queries to buy now for one image, with the score that ranked it."""

    key: str
    queries: int
    p_certify: float


def certificate_probability(state: ImageState) -> float:
    """Posterior probability that pA > state.p_needed, Jeffreys Beta(1/2, 1/2) prior on the votes so far."""
    against = state.n_votes - state.n_for_candidate
    return float(stats.beta.sf(state.p_needed, state.n_for_candidate + 0.5, against + 0.5))


def allocate(states: Sequence[ImageState], budget_queries: int, drop_below: float = 0.02) -> list[Allocation]:
    """Greedy order for the next batch: most likely certificates first, hopeless images dropped.

    Score: posterior probability that pA > p_needed under a Jeffreys Beta(1/2, 1/2) prior on the
    estimation votes so far (about 0.26 for a fresh image at R = sigma). Images below drop_below,
    already decided, or whose batch (votes up to their next look) no longer fits the remaining
    budget are skipped; the rest receive their whole batch in score order (fewer queries first on
    ties). A heuristic for spending, not part of any guarantee: validity comes from each image's test.
    """
    scored = []
    for st in states:
        if st.next_look is None or st.next_look <= st.n_votes:
            continue
        p_cert = certificate_probability(st)
        if p_cert >= drop_below:
            scored.append((-p_cert, st.next_look - st.n_votes, st.key))
    out = []
    left = budget_queries
    for neg_p, batch, key in sorted(scored):
        if batch <= left:
            out.append(Allocation(key, batch, -neg_p))
            left -= batch
    return out


def journaled_stop(stored_result: Mapping[str, Any] | None) -> Callable[[ImageState], Awaitable[Admission]]:
    """One image's replay gate: grants every batch except where the job's allocator stopped it."""
    stored = stored_result or {}
    reasons = {stop.abstain_reason.value: stop for stop in (Admission.HOPELESS, Admission.UNFUNDED)}
    stop = reasons.get(stored.get("abstain_reason") or "")
    stopped_at = int(stored.get("estimation_votes") or 0)

    async def admit(state: ImageState) -> Admission:
        return stop if stop is not None and state.n_votes >= stopped_at else Admission.GRANTED

    return admit
