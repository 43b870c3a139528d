"""The certification core: bounds, CERTIFY, PREDICT, and a simulation of the guarantee."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from scipy.stats import binom, norm

from apiwrap.statistics.fixed import AbstainReason, certify, certify_candidate, clopper_pearson_lower, predict
from apiwrap.statistics.votes import FAILED_QUERY

ALPHA = 0.01
TRIALS = 40_000


def test_clopper_pearson_all_successes_has_closed_form() -> None:
    # With k = n the one-sided bound solves p^n = alpha.
    for n in (20, 100, 1000):
        assert clopper_pearson_lower(n, n, 0.001) == pytest.approx(0.001 ** (1 / n), rel=1e-9)


def test_clopper_pearson_is_dual_to_the_binomial_tail() -> None:
    # The bound exceeds p0 exactly when P(X >= k | p0) < alpha.
    for n, k in [(100, 62), (100, 63), (50, 40), (300, 170)]:
        bound = clopper_pearson_lower(k, n, ALPHA)
        for p0 in (0.5, 0.6, 0.7):
            assert (bound > p0) == (binom.sf(k - 1, n, p0) < ALPHA)


def test_clopper_pearson_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError, match="successes"):
        clopper_pearson_lower(11, 10, 0.01)


@pytest.mark.parametrize(("n", "ceiling"), [(20, 0.55), (100, 1.50), (1000, 2.46), (10_000, 3.20)])
def test_unanimous_votes_reach_the_documented_radius_ceilings(n: int, ceiling: float) -> None:
    certificate = certify({"cat": 5}, {"cat": n}, sigma=1.0, alpha=0.001)
    assert certificate.radius == pytest.approx(ceiling, abs=0.006)


def test_minimum_votes_to_certify_at_n_100() -> None:
    # The reference: with n = 100 an image needs nA >= 66 to be certified at all.
    assert certify({"a": 1}, {"a": 66, "b": 34}, sigma=0.25, alpha=0.001).label == "a"
    assert certify({"a": 1}, {"a": 65, "b": 35}, sigma=0.25, alpha=0.001).abstained


def test_radius_is_sigma_times_inverse_normal_of_the_bound() -> None:
    certificate = certify({"dog": 3, "cat": 1}, {"dog": 95, "cat": 5}, sigma=0.5, alpha=0.001)
    assert certificate.label == "dog"
    assert certificate.radius == pytest.approx(0.5 * norm.ppf(certificate.p_lower))


def test_candidate_comes_from_selection_even_when_estimation_disagrees() -> None:
    certificate = certify({"cat": 10}, {"dog": 100}, sigma=0.25, alpha=0.001)
    assert certificate.abstained
    assert certificate.candidate == "cat"
    assert certificate.abstain_reason is AbstainReason.LOW_CONFIDENCE


def test_failed_queries_count_against_the_candidate() -> None:
    full = certify({"a": 1}, {"a": 90, "b": 10}, sigma=0.25, alpha=0.001)
    with_failures = certify({"a": 1}, {"a": 90, "b": 10, FAILED_QUERY: 10}, sigma=0.25, alpha=0.001)
    assert with_failures.estimation_votes == 110
    assert with_failures.radius is not None and full.radius is not None
    assert with_failures.radius < full.radius


def test_failed_queries_cannot_be_the_candidate() -> None:
    certificate = certify({FAILED_QUERY: 20}, {FAILED_QUERY: 100}, sigma=0.25, alpha=0.001)
    assert certificate.abstain_reason is AbstainReason.NO_SELECTION


def test_selection_ties_break_by_name() -> None:
    assert certify({"b": 5, "a": 5}, {"a": 100}, sigma=0.25, alpha=0.001).candidate == "a"


def test_predict_abstains_on_close_counts_and_answers_on_clear_ones() -> None:
    assert predict({"a": 55, "b": 45}, alpha=0.001).abstained
    clear = predict({"a": 90, "b": 10}, alpha=0.001)
    assert clear.label == "a"
    assert clear.p_value < 0.001


def test_predict_ignores_failed_queries_as_a_class() -> None:
    assert predict({FAILED_QUERY: 100, "a": 1}, alpha=0.01).label is None


# -- simulation of the guarantee -------------------------------------------------------------


# Clopper-Pearson is discrete: at most n its real size at p = 1/2 is well below alpha, which
# would hide a procedure that doubles it. At n = 107 the size is just below alpha = 0.01.
SIMULATION_N = 107


def test_simulation_n_has_size_close_to_alpha() -> None:
    assert 0.9 * ALPHA < binom.sf(65, SIMULATION_N, 0.5) < ALPHA


def _false_certificate_rate(
    probabilities: dict[str, float], *, reuse_selection: bool, n0: int = 10, trials: int = TRIALS
) -> float:
    """Share of trials whose certificate claims more than the truth allows.

    A certificate is false when its bound exceeds the true probability of the label it
    returns: a wrong label (true probability < 1/2 < bound) or a too-large radius.
    """
    rng = np.random.default_rng(20261125)
    labels = list(probabilities)
    p = np.array([probabilities[label] for label in labels])
    selection = rng.multinomial(n0, p, size=trials)
    estimation = rng.multinomial(SIMULATION_N, p, size=trials)
    false = 0
    for select_counts, estimate_counts in zip(selection, estimation, strict=True):
        estimation_votes = Counter(dict(zip(labels, estimate_counts.tolist(), strict=True)))
        selection_votes = (
            estimation_votes if reuse_selection else dict(zip(labels, select_counts.tolist(), strict=True))
        )
        certificate = certify(selection_votes, estimation_votes, sigma=1.0, alpha=ALPHA)
        if certificate.label is not None and certificate.p_lower > probabilities[certificate.label]:
            false += 1
    return false / trials


def _excess_threshold(trials: int = TRIALS) -> float:
    """Largest rate consistent with a true rate <= alpha (one-sided binomial tail 1e-4)."""
    return float(binom.isf(1e-4, trials, ALPHA)) / trials


TIED_TWO = {"a": 0.5, "b": 0.5}
TIED_FOUR = {"a": 0.26, "b": 0.25, "c": 0.25, "d": 0.24}
CLEAR = {"a": 0.62, "b": 0.3, "c": 0.08}


@pytest.mark.parametrize(
    "probabilities", [TIED_TWO, TIED_FOUR, CLEAR], ids=["two-tied", "four-tied", "pA=0.62"]
)
def test_false_certificate_rate_stays_below_alpha(probabilities: dict[str, float]) -> None:
    assert _false_certificate_rate(probabilities, reuse_selection=False) <= _excess_threshold()


def test_the_same_check_catches_reusing_selection_votes() -> None:
    # Choosing the candidate from the counted votes lets either tied class pass: ~2x alpha.
    rate = _false_certificate_rate(TIED_TWO, reuse_selection=True)
    assert rate > _excess_threshold()
    assert rate > 1.6 * ALPHA


@pytest.mark.parametrize("n", [20, 100, 300])
def test_a_candidate_fixed_before_the_votes_keeps_alpha_exactly(n: int) -> None:
    # The clean-label candidate is chosen without noise, so for any true pA the chance of a false
    # certificate is a binomial tail, computed here exactly over a grid of pA.
    false_from = {}
    for k in range(n + 1):
        certificate = certify_candidate("cat", Counter(cat=k, dog=n - k), sigma=1.0, alpha=ALPHA)
        false_from[k] = certificate.p_lower if certificate.label else 0.0
    worst = 0.0
    for p in np.linspace(0.005, 0.995, 199):
        false_rate = sum(binom.pmf(k, n, p) for k, bound in false_from.items() if bound > p)
        worst = max(worst, false_rate)
    assert worst <= ALPHA
    assert worst > ALPHA / 10  # the check can see alpha: the bound is not trivially loose


def test_a_clean_candidate_that_failed_or_is_missing_abstains() -> None:
    for candidate in (None, FAILED_QUERY):
        certificate = certify_candidate(candidate, Counter(cat=100), sigma=0.25, alpha=ALPHA)
        assert certificate.abstained and certificate.abstain_reason is AbstainReason.NO_SELECTION
