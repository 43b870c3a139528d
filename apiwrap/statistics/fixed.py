"""Cohen et al.'s CERTIFY and PREDICT on vote counts: counts in, a decision out, no I/O.

Guarantee (CERTIFY): with probability at least 1 - alpha over the estimation votes, the
returned certificate either abstains or names g(x), the smoothed classifier's class, and
g is constant within the stated L2 radius. The selection votes choose the candidate and
are never counted again (reusing them inflates the false-certificate rate).

Guarantee (PREDICT): with probability at least 1 - alpha, a non-abstaining prediction
equals g(x).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from scipy.stats import beta, binomtest, norm

from apiwrap.statistics.votes import FAILED_QUERY

__all__ = [
    "AbstainReason",
    "Certificate",
    "Prediction",
    "certify",
    "certify_candidate",
    "clopper_pearson_lower",
    "predict",
    "select_candidate",
]


class AbstainReason(StrEnum):
    LOW_CONFIDENCE = "pA lower bound <= 1/2"
    NO_SELECTION = "no selection vote named a label"
    NOT_SIGNIFICANT = "top two labels not significantly different"
    NO_VOTES = "no votes"
    MODEL_DRIFT = "vendor model version changed during the certificate"
    FUTILE = "the radius sought is out of reach within the query cap"
    EXHAUSTED = "query cap reached without a certificate"
    BUDGET = "budget ran out before the votes were complete"
    HOPELESS = "given up early: a certificate looked too unlikely to spend the budget on"
    IMAGE_ERROR = "image could not be used"


def clopper_pearson_lower(successes: int, trials: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower confidence bound on a binomial p."""
    if not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")
    if successes == 0:
        return 0.0
    return float(beta.ppf(alpha, successes, trials - successes + 1))


def select_candidate(selection_votes: Mapping[str, int]) -> str | None:
    """The most-voted real label of the selection phase; ties go to the smallest label.

    A failed query names no class, so it can never be the candidate.
    """
    real = {label: count for label, count in selection_votes.items() if label != FAILED_QUERY and count > 0}
    if not real:
        return None
    return min(real, key=lambda label: (-real[label], label))


@dataclass(frozen=True, slots=True)
class Certificate:
    """A certified label with its L2 radius, or an abstention with its reason."""

    label: str | None
    radius: float | None
    p_lower: float
    candidate: str | None
    votes_for_candidate: int
    estimation_votes: int
    abstain_reason: AbstainReason | None = None

    @property
    def abstained(self) -> bool:
        return self.label is None


def certify(
    selection_votes: Mapping[str, int],
    estimation_votes: Mapping[str, int],
    *,
    sigma: float,
    alpha: float,
) -> Certificate:
    """Cohen's CERTIFY on two disjoint vote samples.

    ``estimation_votes`` must come from fresh samples, drawn after the candidate was
    fixed by ``selection_votes``. Every estimation vote counts toward n, failed queries
    included (as votes against the candidate).
    """
    return certify_candidate(select_candidate(selection_votes), estimation_votes, sigma=sigma, alpha=alpha)


def certify_candidate(
    candidate: str | None,
    estimation_votes: Mapping[str, int],
    *,
    sigma: float,
    alpha: float,
) -> Certificate:
    """CERTIFY for a candidate fixed before any estimation vote was drawn.

    With probability >= 1 - alpha over the noise, the result abstains or names g(x) with a
    radius no larger than the true one, however the candidate was chosen, provided its
    choice does not depend on the estimation votes: the label of Cohen's selection votes,
    or the vendor's label on the clean image (no noise at all). ``None`` abstains.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    n = sum(estimation_votes.values())
    if candidate is None or candidate == FAILED_QUERY:
        return Certificate(None, None, 0.0, None, 0, n, AbstainReason.NO_SELECTION)
    if n == 0:
        return Certificate(None, None, 0.0, candidate, 0, 0, AbstainReason.NO_VOTES)
    n_a = estimation_votes.get(candidate, 0)
    p_lower = clopper_pearson_lower(n_a, n, alpha)
    if p_lower <= 0.5:
        return Certificate(None, None, p_lower, candidate, n_a, n, AbstainReason.LOW_CONFIDENCE)
    return Certificate(candidate, sigma * float(norm.ppf(p_lower)), p_lower, candidate, n_a, n)


@dataclass(frozen=True, slots=True)
class Prediction:
    """The smoothed classifier's label, or an abstention with its reason."""

    label: str | None
    votes_for_label: int
    votes_for_runner_up: int
    p_value: float
    abstain_reason: AbstainReason | None = None

    @property
    def abstained(self) -> bool:
        return self.label is None


def predict(votes: Mapping[str, int], *, alpha: float) -> Prediction:
    """Cohen's PREDICT: the top label if a two-sided binomial test separates it from the runner-up."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    real = Counter({label: count for label, count in votes.items() if label != FAILED_QUERY and count > 0})
    if not real:
        return Prediction(None, 0, 0, 1.0, AbstainReason.NO_VOTES)
    ranked = sorted(real.items(), key=lambda item: (-item[1], item[0]))
    top_label, n_a = ranked[0]
    n_b = ranked[1][1] if len(ranked) > 1 else 0
    p_value = float(binomtest(n_a, n_a + n_b, 0.5).pvalue)
    if p_value > alpha:
        return Prediction(None, n_a, n_b, p_value, AbstainReason.NOT_SIGNIFICANT)
    return Prediction(top_label, n_a, n_b, p_value)
