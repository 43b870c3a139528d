"""Sequential certification: false-certificate rates under every stopping rule, by simulation.

A false certificate is a certificate for a class that is not the true (strict) argmax, i.e. whose
vote probability p_candidate is <= 1/2 when it is certified, or with a radius larger than the true
radius sigma * Phi^-1(pA), i.e. p_lower > p_candidate.

Check used throughout (`excess_pvalue`): with T trials and V violations, the one-sided binomial
tail P(Bin(T, alpha) >= V) must not fall below 1e-4. With T = 20,000 and alpha = 0.01 (200 expected)
this fails from V ~ 254, so a 2x excess (400) is caught with certainty; the naive-peeking and
selection-reuse variants below are run through the same check and must be flagged by it.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from scipy import stats

from apiwrap.statistics.allocation import ImageState, allocate
from apiwrap.statistics.sequential import (
    BestRadiusDesign,
    Decision,
    LeaderSelection,
    MixtureDesign,
    Verdict,
    default_best_radius_design,
    default_target_design,
    every,
    mixture_lower_bound,
    predictive_chance,
)
from bench.designs import GroupSequentialDesign

ALPHA = 0.01
SIGMA = 0.25
TRIALS = 20_000
FLAG = 1e-4  # p-value below which an observed false-certificate rate is declared in excess of alpha
P_SIGMA = float(stats.norm.cdf(1.0))  # pA needed for radius sigma


def excess_pvalue(violations: int, trials: int, alpha: float = ALPHA) -> float:
    """One-sided binomial tail P(Bin(trials, alpha) >= violations)."""
    return float(stats.binom.sf(violations - 1, trials, alpha))


@functools.cache  # building the tables (exact calibration, bound tables) is the slow part: share it
def target_designs(radius: float) -> list:
    return [
        GroupSequentialDesign(SIGMA, ALPHA, radius),
        GroupSequentialDesign(SIGMA, ALPHA, radius, looks=every(1, 400), calibration="exact"),
        MixtureDesign(SIGMA, ALPHA, radius),
        MixtureDesign(SIGMA, ALPHA, radius, calibration="exact"),
    ]


class NaivePeeking(GroupSequentialDesign):
    """The invalid rule of certification.md rule 2: Clopper-Pearson at full alpha every 10 votes."""

    @property
    def _safe_theta(self) -> float:
        return math.log(self.alpha)


def best_radius(**changes: object) -> BestRadiusDesign:
    return _best_radius(tuple(sorted(changes.items())))


@functools.cache
def _best_radius(changes: tuple) -> BestRadiusDesign:
    return BestRadiusDesign(SIGMA, ALPHA, **dict(changes))


def select(probs: list[float], selection: LeaderSelection, rng: np.random.Generator) -> np.ndarray:
    """Vectorised LeaderSelection over TRIALS images: index of the chosen class, -1 when none."""
    labels = rng.choice(len(probs), p=probs, size=(TRIALS, selection.max_votes))
    counts = np.cumsum(labels[:, :, None] == np.arange(len(probs)), axis=1)  # (trials, votes, classes)
    ranked = np.sort(counts, axis=2)
    stop = selection.stops(np.arange(1, selection.max_votes + 1), ranked[:, :, -1], ranked[:, :, -2])
    t = stop.argmax(axis=1)  # stops() is always true at max_votes
    at_stop = counts[np.arange(TRIALS), t]
    top2 = np.sort(at_stop, axis=1)[:, -2:]
    return np.where(top2[:, 1] > top2[:, 0], at_stop.argmax(axis=1), -1)


def fresh_votes(p_candidate: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Estimation votes, drawn after (and independently of) selection."""
    return rng.random((len(p_candidate), cap)) < p_candidate[:, None]


def false_certificates(design, p_candidate: np.ndarray, rng: np.random.Generator) -> int:
    """Certificates of a class that is not the strict argmax (p <= 1/2) or with too large a radius."""
    result = design.simulate(fresh_votes(p_candidate, design.max_queries, rng))
    return int((result.certified & ((p_candidate <= 0.5) | (result.p_lower > p_candidate))).sum())


# ------------------------------------------------------------------ false-certificate rates


@pytest.mark.parametrize("index", range(4))
@pytest.mark.parametrize(
    ("radius", "p_true"),
    [(SIGMA, P_SIGMA - 1e-12), (SIGMA, 0.83), (0.0, 0.5)],
    ids=["just-below-sigma", "0.83-at-sigma", "half-at-zero"],
)
def test_target_designs_keep_alpha_at_the_threshold(index: int, radius: float, p_true: float) -> None:
    design = target_designs(radius)[index]
    rng = np.random.default_rng(1000 + index)
    violations = false_certificates(design, np.full(TRIALS, p_true), rng)
    assert excess_pvalue(violations, TRIALS) > FLAG, f"{violations}/{TRIALS} false certificates"


@pytest.mark.parametrize("index", range(4))
@pytest.mark.parametrize(
    "probs",
    [[0.5, 0.5], [0.27, 0.26, 0.25, 0.22], [0.21, 0.2, 0.2, 0.2, 0.19]],
    ids=["2-tie", "4-near", "5-near"],
)
def test_selection_then_fresh_estimation_keeps_alpha(index: int, probs: list[float]) -> None:
    design = target_designs(0.0)[index]  # radius 0: any certificate of a class with p <= 1/2 is false
    rng = np.random.default_rng(2000 + index)
    chosen = select(probs, LeaderSelection(), rng)
    p_candidate = np.where(chosen >= 0, np.asarray(probs)[chosen], 0.0)
    violations = false_certificates(design, p_candidate, rng)
    assert excess_pvalue(violations, TRIALS) > FLAG


LADDER = (0.0, 0.125, 0.25, 0.375, 0.5)
BEST_RADIUS_VARIANTS = {
    "mixture-tolerance": {},
    "mixture-ceiling-every-5": {"projection_beta": None, "looks": every(5, 400)},
    "bonferroni-ladder": {"looks": (100, 200, 400), "bound": "bonferroni", "ladder": LADDER},
    "bonferroni-every-50-ladder": {"looks": every(50, 400), "bound": "bonferroni", "ladder": LADDER},
}


@pytest.mark.parametrize("variant", BEST_RADIUS_VARIANTS)
@pytest.mark.parametrize("p_true", [0.5, 0.6, 0.9, 0.99, 0.999])
def test_best_radius_keeps_alpha(variant: str, p_true: float) -> None:
    design = best_radius(**BEST_RADIUS_VARIANTS[variant])
    violations = false_certificates(design, np.full(TRIALS, p_true), np.random.default_rng(3000))
    assert excess_pvalue(violations, TRIALS) > FLAG


def test_check_flags_naive_peeking() -> None:
    # Same simulation and same check as the valid designs: the check must be able to fail.
    design = NaivePeeking(SIGMA, ALPHA, SIGMA, looks=every(10, 400))
    violations = false_certificates(design, np.full(TRIALS, P_SIGMA - 1e-12), np.random.default_rng(4000))
    assert excess_pvalue(violations, TRIALS) < FLAG, f"naive peeking not flagged: {violations}/{TRIALS}"
    assert violations > 2 * ALPHA * TRIALS


def test_check_flags_reused_selection_votes() -> None:
    # Rule 1 broken on purpose: Cohen's fixed-n CERTIFY with the class chosen from the counted votes.
    rng = np.random.default_rng(4001)
    n = 1000  # large enough that Clopper-Pearson's discreteness does not hide the doubling
    first = rng.binomial(n, 0.5, size=TRIALS)  # two classes tied at 0.5
    top = np.maximum(first, n - first)
    violations = int((stats.beta.ppf(ALPHA, top, n - top + 1) > 0.5).sum())
    assert excess_pvalue(violations, TRIALS) < FLAG


# ------------------------------------------------------------------ exactness of the pieces


def test_exact_calibration_matches_monte_carlo() -> None:
    design = GroupSequentialDesign(SIGMA, ALPHA, SIGMA, looks=every(1, 400), calibration="exact")
    exact = design.crossing_probability(design.certify_boundary)
    assert 0.5 * ALPHA < exact <= ALPHA  # calibrated close to alpha, never above
    votes = np.random.default_rng(5000).random((TRIALS, 400)) < design.p_needed
    counts = np.cumsum(votes, axis=1)
    observed = (counts >= design.certify_boundary).any(axis=1).mean()
    assert abs(observed - exact) < 4 * math.sqrt(exact / TRIALS)


def test_bonferroni_design_reports_its_clopper_pearson_bound() -> None:
    design = GroupSequentialDesign(SIGMA, 0.001, SIGMA)
    test = design.start()
    assert test.look(25, 25).verdict is Verdict.CONTINUE  # 25/25 cannot reach Phi(1) at 0.001/5
    decision = test.look(50, 50)
    assert decision.verdict is Verdict.CERTIFIED
    assert decision.p_lower == pytest.approx(0.0002 ** (1 / 50))
    assert decision.radius == pytest.approx(SIGMA * stats.norm.ppf(decision.p_lower))
    assert decision.radius > SIGMA


def test_mixture_lower_bound_properties() -> None:
    k = np.arange(101)
    bound = mixture_lower_bound(k, 100, 0.001, 1.0, 0.5)
    assert np.all(np.diff(bound) > -1e-9)  # more agreeing votes never lower it
    assert np.all(bound <= k / 100)
    clopper_pearson = stats.beta.ppf(0.001, k[1:], 101 - k[1:])
    assert np.all(bound[1:] <= clopper_pearson + 1e-9)  # the price of validity at every n
    # Unanimity: about 10-18% less radius than fixed-n Clopper-Pearson at n ~ 100 (certification.md).
    loss = 1 - stats.norm.ppf(bound[-1]) / stats.norm.ppf(clopper_pearson[-1])
    assert 0.0 < loss < 0.2


# ------------------------------------------------------------------ the per-image API agrees with simulate


def drive(test, stream: np.ndarray) -> Decision:
    while (n := test.next_look()) is not None:
        decision = test.look(n, int(stream[:n].sum()))
    return decision


@pytest.mark.parametrize(
    "design",
    [
        *target_designs(SIGMA),
        GroupSequentialDesign(SIGMA, ALPHA, 0.0),
        *(best_radius(**variant) for variant in BEST_RADIUS_VARIANTS.values()),
    ],
    ids=lambda d: type(d).__name__,
)
def test_look_matches_simulate(design) -> None:
    rng = np.random.default_rng(6000)
    p = rng.choice([0.5, 0.7, 0.84, 0.9, 0.97, 0.999], size=60)
    votes = fresh_votes(p, design.max_queries, rng)
    sim = design.simulate(votes)
    for i in range(len(p)):
        decision = drive(design.start(), votes[i])
        assert decision.n_votes == sim.n_votes[i]
        assert (decision.verdict is Verdict.CERTIFIED) == sim.certified[i]
        if decision.verdict is Verdict.CERTIFIED:
            assert decision.p_lower == pytest.approx(sim.p_lower[i], abs=1e-12)
            assert decision.radius >= 0


def test_look_contract() -> None:
    test = GroupSequentialDesign(SIGMA, 0.001, SIGMA).start()
    assert test.max_queries == 400 and test.next_look() == 25
    assert test.look(10, 4).verdict is Verdict.CONTINUE  # not a scheduled look: no decision
    assert test.next_look() == 25
    with pytest.raises(ValueError):
        test.look(9, 4)  # counts went backwards
    with pytest.raises(ValueError):
        test.look(30, 31)
    futile = test.look(25, 5)
    assert futile.verdict is Verdict.FUTILE and test.next_look() is None
    assert test.look(50, 50) is futile  # decided once and for all


def test_curtailment_and_exhaustion() -> None:
    design = GroupSequentialDesign(SIGMA, 0.001, SIGMA, looks=(50, 100), futility_beta=1e-9)
    assert list(design.certify_boundary) == [50, 96]
    assert design.start().look(50, 45).verdict is Verdict.FUTILE  # 45 + 50 < 96: curtailed
    test = design.start()
    assert test.look(50, 46).verdict is Verdict.CONTINUE
    assert test.look(100, 95).verdict is Verdict.EXHAUSTED


# ------------------------------------------------------------------ selection and allocation


def test_leader_selection() -> None:
    sel = LeaderSelection(lead=2, max_votes=6)
    assert sel.look({}).done is False
    assert sel.look({"cat": 1}).done is False
    assert sel.look({"cat": 2}) == sel.look({"cat": 2, "dog": 0})
    assert sel.look({"cat": 2}).label == "cat"
    assert sel.look({"cat": 2, "dog": 1}).done is False
    assert sel.look({"cat": 3, "dog": 2, "": 1}).label == "cat"  # at the cap: the unique leader
    tie = sel.look({"cat": 3, "dog": 3})
    assert tie.done and tie.label is None


def test_allocate_orders_likely_certificates_first() -> None:
    states = [
        ImageState("fresh", 0, 0, 25, P_SIGMA),
        ImageState("hopeless", 25, 10, 50, P_SIGMA),
        ImageState("likely", 25, 25, 50, P_SIGMA),
        ImageState("decided", 50, 50, None, P_SIGMA),
    ]
    plan = allocate(states, budget_queries=100)
    assert [a.key for a in plan] == ["likely", "fresh"]
    assert [a.queries for a in plan] == [25, 25]
    assert [a.key for a in allocate(states, budget_queries=30)] == ["likely"]


def test_defaults_are_the_measured_choice_and_shared() -> None:
    design = default_target_design(SIGMA, 0.001, SIGMA)
    assert design is default_target_design(SIGMA, 0.001, SIGMA)  # tables built once per setting
    assert (design.calibration, design.prior_a, design.prior_b) == ("exact", 1.0, 0.5)
    assert design.looks == every(1, 400) and design.p_futile == pytest.approx(0.8975)
    test = design.start()
    assert test.look(7, 7).verdict is Verdict.CONTINUE  # any batch size is a look
    decision = test.look(60, 60)
    assert decision.verdict is Verdict.CERTIFIED and decision.radius == pytest.approx(SIGMA)
    assert default_best_radius_design(SIGMA, 0.001).looks == every(50, 400)


def test_ladder_buys_votes_only_to_pass_the_next_rung() -> None:
    design = BestRadiusDesign(SIGMA, 0.001, looks=(100, 200, 400), bound="bonferroni", ladder=(0.25, 0.5))
    assert design.start().look(100, 100).verdict is Verdict.CONTINUE  # 0.25 passed, 0.5 within reach
    stop = design.start().look(100, 97)  # 0.25 passed, 0.5 out of reach even at the optimistic rate
    assert stop.verdict is Verdict.CERTIFIED and 0.25 <= stop.radius < 0.5
    assert design.start().look(100, 95).verdict is Verdict.CONTINUE  # 0.25 not passed yet, within reach
    below = design.start().look(100, 80)  # 0.25 out of reach: keep the small certificate, stop paying
    assert below.verdict is Verdict.CERTIFIED and 0 < below.radius < 0.25
    assert design.start().look(100, 60).verdict is Verdict.FUTILE  # no certificate within reach


# ------------------------------------------------------------------ predictive futility


def test_predictive_chance_is_the_posterior_average_of_the_crossing_probability() -> None:
    # Independent route: integrate P(reach the boundary from (n, k) | pA = p) over the Beta
    # posterior by quadrature, the crossing probability propagated forward for each p.
    looks, prior = (5, 10, 20, 30), (2.0, 1.5)  # densities bounded: the quadrature is accurate
    boundary = np.array([6, 10, 18, 26])  # 6 > 5: the first look cannot certify
    reached = np.arange(31)[None, :] >= boundary[:, None]
    chance = predictive_chance(looks, reached, prior)
    grid = np.linspace(0.0005, 0.9995, 1000)
    for i, k in ((0, 3), (0, 5), (1, 8), (2, 15)):
        n = looks[i]
        crossing = []
        for p in grid:
            dist, hit = np.zeros(31), 0.0
            dist[k] = 1.0
            for j in range(i + 1, len(looks)):
                step = stats.binom.pmf(np.arange(looks[j] - looks[j - 1] + 1), looks[j] - looks[j - 1], p)
                dist = np.convolve(dist, step)[:31]
                hit += dist[boundary[j] :].sum()
                dist[boundary[j] :] = 0.0
            crossing.append(hit)
        weights = stats.beta.pdf(grid, prior[0] + k, prior[1] + n - k)
        expected = float(np.sum(weights * np.array(crossing)) / np.sum(weights))
        assert chance[i, k] == pytest.approx(expected, abs=2e-3)


def test_predictive_futility_stops_hopeless_images_sooner_and_never_certifies_more() -> None:
    rng = np.random.default_rng(8)
    plain = default_target_design(SIGMA, 0.001, SIGMA)
    futile = default_target_design(SIGMA, 0.001, SIGMA, futility_chance=0.05)
    assert np.all(futile.certify_boundary == plain.certify_boundary)  # same calibration
    assert np.all(futile.futility_boundary >= plain.futility_boundary)
    for p in (0.5, 0.8, 0.9):
        votes = rng.random((2000, 400)) < p
        before, after = plain.simulate(votes), futile.simulate(votes)
        assert after.n_votes.mean() < 0.8 * before.n_votes.mean()
        assert np.all(after.n_votes <= before.n_votes)
        assert not np.any(after.certified & ~before.certified)  # only stops, on the same votes
    votes = rng.random((2000, 400)) < 0.999
    assert futile.simulate(votes).certified.mean() >= plain.simulate(votes).certified.mean() - 0.01


def test_best_radius_futility_only_stops_sooner() -> None:
    rng = np.random.default_rng(9)
    ladder = (0.0, 0.125, 0.25, 0.375, 0.5)
    plain = default_best_radius_design(SIGMA, 0.001, 400, ladder)
    futile = default_best_radius_design(SIGMA, 0.001, 400, ladder, futility_chance=0.05)
    for p in (0.5, 0.95):
        votes = rng.random((2000, 400)) < p
        before, after = plain.simulate(votes), futile.simulate(votes)
        assert after.n_votes.mean() < before.n_votes.mean()
        assert np.all(after.n_votes <= before.n_votes)
        # A stop keeps the bound reached so far: never a larger radius than without the rule.
        assert np.all(np.nan_to_num(after.p_lower) <= np.nan_to_num(before.p_lower) + 1e-12)


@pytest.mark.parametrize(
    "design",
    [
        default_target_design(SIGMA, ALPHA, SIGMA, 400, 0.05),
        default_best_radius_design(SIGMA, ALPHA, 400, (0.0, 0.125, 0.25, 0.375, 0.5), 0.05),
        default_best_radius_design(SIGMA, ALPHA, 400, (), 0.1),
    ],
    ids=["target", "best-ladder", "best-plateau"],
)
def test_look_matches_simulate_with_predictive_futility(design) -> None:
    rng = np.random.default_rng(6001)
    p = rng.choice([0.5, 0.7, 0.84, 0.9, 0.97, 0.999], size=60)
    votes = fresh_votes(p, design.max_queries, rng)
    sim = design.simulate(votes)
    assert np.any(sim.verdict == 1)  # the rule did stop some streams
    for i in range(len(p)):
        decision = drive(design.start(), votes[i])
        assert decision.n_votes == sim.n_votes[i]
        assert (decision.verdict is Verdict.CERTIFIED) == sim.certified[i]


@pytest.mark.parametrize("chance", [-0.1, 1.0, math.nan, math.inf])
def test_futility_chance_outside_zero_to_one_is_refused(chance: float) -> None:
    with pytest.raises(ValueError, match="futility_chance"):
        MixtureDesign(SIGMA, ALPHA, SIGMA, futility_chance=chance)
    with pytest.raises(ValueError, match="futility_chance"):
        BestRadiusDesign(SIGMA, ALPHA, futility_chance=chance)


@pytest.mark.parametrize("prior", [(1.0, 0.0), (-1.0, 1.0), (1.0, math.inf)])
def test_a_futility_prior_that_is_no_beta_distribution_is_refused(prior: tuple[float, float]) -> None:
    with pytest.raises(ValueError, match="futility_prior"):
        MixtureDesign(SIGMA, ALPHA, SIGMA, futility_prior=prior)
    with pytest.raises(ValueError, match="futility_prior"):
        BestRadiusDesign(SIGMA, ALPHA, futility_prior=prior)
