"""Exact (dynamic-programming) false-certificate probabilities of the shipped sequential designs.

Monte Carlo cannot resolve alpha = 0.001 in a test's time; the propagation in
apiwrap.statistics.soundness can. It is checked against the designs' own simulation first,
then used to show that every shipped design stays at or below alpha and that naive peeking
does not.
"""

from __future__ import annotations

import numpy as np
import pytest

from apiwrap.statistics.radii import report_radii
from apiwrap.statistics.sequential import default_best_radius_design, default_target_design, every
from apiwrap.statistics.soundness import (
    best_radius_false_certificate_probability,
    naive_peeking_boundary,
    peeking_probability,
    target_false_certificate_probability,
)

ALPHAS = (0.01, 0.001)
# Target designs depend on sigma only through R / sigma: these give 0.5, 1 and 1.5 sigma.
TARGETS = ((0.12, 0.06), (0.25, 0.25), (0.5, 0.75))


def _worst_rates(design_lower: np.ndarray, count: int) -> list[float]:
    """Rates just below values the final bound takes: where a false certificate is likeliest."""
    values = np.unique(design_lower[-1][~np.isnan(design_lower[-1])])
    values = values[values > 0.5]
    picks = values[np.linspace(0, len(values) - 1, count).round().astype(int)]
    return [float(value) - 1e-9 for value in picks]


def test_the_propagation_runs_the_shipped_decisions_as_the_simulation_does() -> None:
    # At alpha = 0.05 the rates are large enough for 100,000 simulated streams to check them.
    rng = np.random.default_rng(7)
    target = default_target_design(0.25, 0.05, 0.25, 100)
    simulated = target.simulate(rng.random((100_000, 100)) < target.p_needed).certified.mean()
    exact = target_false_certificate_probability(target)
    assert abs(simulated - exact) < 4 * np.sqrt(exact * (1 - exact) / 100_000)
    best = default_best_radius_design(0.25, 0.05, 100, report_radii(0.25))
    for rate in (0.7, 0.85):
        outcome = best.simulate(rng.random((100_000, 100)) < rate)
        simulated = float((outcome.certified & (outcome.p_lower > rate)).mean())
        exact = best_radius_false_certificate_probability(best, rate)
        assert exact > 0 and abs(simulated - exact) < 4 * np.sqrt(exact * (1 - exact) / 100_000)


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("cap", (100, 400))
@pytest.mark.parametrize(("sigma", "radius"), TARGETS)
def test_target_designs_certify_a_radius_that_is_not_there_at_most_alpha_of_the_time(
    sigma: float, radius: float, cap: int, alpha: float
) -> None:
    design = default_target_design(sigma, alpha, radius, cap)
    # Certifying is increasing in pA: the worst false case is pA at p_needed itself.
    worst = target_false_certificate_probability(design)
    assert worst <= alpha
    assert target_false_certificate_probability(design, design.p_needed - 0.02) <= worst


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize(("sigma", "cap"), ((0.12, 100), (0.25, 100), (0.5, 100), (0.25, 400)))
def test_best_radius_designs_overstate_the_radius_at_most_alpha_of_the_time(
    sigma: float, cap: int, alpha: float
) -> None:
    design = default_best_radius_design(sigma, alpha, cap, report_radii(sigma))
    rates = _worst_rates(design._bounds[0], 4 if cap > 100 else 6)
    assert all(best_radius_false_certificate_probability(design, rate) <= alpha for rate in rates)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_the_same_computation_flags_naive_peeking(alpha: float) -> None:
    design = default_target_design(0.25, alpha, 0.25, 400)
    looks = every(1, 400)
    naive = peeking_probability(looks, naive_peeking_boundary(looks, design.p_needed, alpha), design.p_needed)
    assert naive > 3 * alpha  # a valid test at each look, stopped at the first success: not valid
    assert target_false_certificate_probability(design) <= alpha  # the shipped design, same looks


FUTILITY_CHANCES = (0.02, 0.05, 0.2)


@pytest.mark.parametrize("chance", FUTILITY_CHANCES)
@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize(("sigma", "radius"), TARGETS)
def test_predictive_futility_only_lowers_the_target_false_certificate_rate(
    sigma: float, radius: float, alpha: float, chance: float
) -> None:
    plain = default_target_design(sigma, alpha, radius, 400)
    futile = default_target_design(sigma, alpha, radius, 400, chance)
    with_rule = target_false_certificate_probability(futile)
    assert with_rule <= target_false_certificate_probability(plain) <= alpha
    assert target_false_certificate_probability(futile, futile.p_needed - 0.02) <= with_rule


@pytest.mark.parametrize("chance", FUTILITY_CHANCES)
@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize(("sigma", "cap"), ((0.12, 100), (0.5, 100), (0.25, 400)))
def test_predictive_futility_only_lowers_the_best_radius_false_certificate_rate(
    sigma: float, cap: int, alpha: float, chance: float
) -> None:
    plain = default_best_radius_design(sigma, alpha, cap, report_radii(sigma))
    futile = default_best_radius_design(sigma, alpha, cap, report_radii(sigma), chance)
    for rate in _worst_rates(futile._bounds[0], 4):
        with_rule = best_radius_false_certificate_probability(futile, rate)
        assert with_rule <= best_radius_false_certificate_probability(plain, rate) + 1e-15
        assert with_rule <= alpha
