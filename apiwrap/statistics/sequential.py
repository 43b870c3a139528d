"""Sequential certification for randomized smoothing: stop buying queries as soon as the votes decide.

Pure decision procedures driven by vote counts only (no I/O, no clocks, no randomness). The engine
draws noise, queries the vendor and counts votes for the candidate class; this module says when to
stop and what may be certified. Every certificate keeps Cohen et al.'s guarantee: with probability
>= 1 - alpha (over the noise) a CERTIFIED decision names g(x) with a radius no larger than the true
radius sigma * Phi^-1(pA), whatever the stopping time.

Pieces:

* `LeaderSelection`: cheap choice of the candidate class; its votes are never counted again.
* Target-radius mode ("is g certified at radius >= R?"), with a futility stop: `MixtureDesign`
  (Beta-mixture boundary, anytime-valid by Ville's inequality or exactly calibrated) on the shared
  `TargetDesign` machinery; `default_target_design` is the one chosen by measurement (the research
  alternatives it was measured against live in bench/designs.py).
* Best-radius mode under a per-image cap: `BestRadiusDesign` (anytime-valid confidence sequence),
  `default_best_radius_design`.

A design is an immutable, hashable parameter set with cached decision tables; `design.start()` gives
the per-image `SequentialTest`, and `design.simulate(votes)` runs the identical tables over many
simulated vote streams at once (tests, benchmarks, offline replay). See docs/sequential.md.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy import special, stats

__all__ = [
    "FUTILITY_PRIOR",
    "BestRadiusDesign",
    "Decision",
    "LeaderSelection",
    "MixtureDesign",
    "Selection",
    "SequentialTest",
    "SimulationResult",
    "TargetDesign",
    "Verdict",
    "default_best_radius_design",
    "default_target_design",
    "every",
    "mixture_lower_bound",
    "predictive_chance",
    "radius_of",
]


class Verdict(enum.Enum):
    """Outcome of one look at the votes."""

    CONTINUE = "continue"  # buy votes up to next_look() and look again
    CERTIFIED = "certified"  # stop: certificate with radius and p_lower
    FUTILE = "futile"  # stop before the cap: the certificate sought is out of reach (abstain)
    EXHAUSTED = "exhausted"  # stop at the cap without a certificate (abstain)


# Integer codes of final verdicts in SimulationResult.verdict.
_CERTIFIED, _FUTILE, _EXHAUSTED = 0, 1, 2


@dataclass(frozen=True)
class Decision:
    """What a look decided; p_lower and radius are set only when certified."""

    verdict: Verdict
    n_votes: int
    n_for_candidate: int
    p_lower: float | None = None
    radius: float | None = None

    @property
    def final(self) -> bool:
        return self.verdict is not Verdict.CONTINUE


class SequentialTest(Protocol):
    """Per-image sequential decision, driven by counts of FRESH estimation votes.

    The engine buys votes in sample-index order and calls `look(n, k)` with n = next_look() and k the
    number of those first n votes that name the candidate. Counts must be over the prefix of sample
    indices (not completion order), so that the stopping rule never depends on which query returned
    first. A query that finally failed counts in n and not in k (a vote against the candidate): buying
    a replacement sample instead would bias the votes toward noise the vendor answers (rule 4).
    """

    @property
    def max_queries(self) -> int: ...

    def next_look(self) -> int | None: ...

    def look(self, n_votes: int, n_for_candidate: int) -> Decision: ...


def every(step: int, cap: int) -> tuple[int, ...]:
    """Look schedule step, 2*step, ..., cap (cap always included)."""
    if step < 1 or cap < 1:
        raise ValueError("step and cap must be positive")
    looks = list(range(step, cap, step))
    return (*looks, cap)


def radius_of(sigma: float, p_lower: float) -> float:
    """Cohen's radius sigma * Phi^-1(p_lower) (meaningful only for p_lower > 1/2)."""
    return sigma * float(stats.norm.ppf(p_lower))


# ----------------------------------------------------------------------------------------------
# Mixture martingales (Robbins' method of mixtures with a Beta prior).
#
# For a prior pi on p, prod_i (p/p0)^X_i ((1-p)/(1-p0))^(1-X_i) integrated over pi restricted to
# p > p0 is a nonnegative supermartingale with mean <= 1 whenever the true rate is <= p0 (each
# factor has mean 1 at rate p0 and less below it). Ville's inequality then bounds the chance that it
# EVER reaches 1/alpha by alpha: an anytime-valid test that may be stopped at any data-dependent time.
# ----------------------------------------------------------------------------------------------


def _log_lik(s: np.ndarray, f: np.ndarray, p0: np.ndarray | float) -> np.ndarray:
    # xlogy makes 0 * log(0) = 0 so unanimous counts at p0 in {0, 1} behave.
    return special.xlogy(s, p0) + special.xlog1py(f, -np.asarray(p0))


def _log_mixture_above(s: np.ndarray, f: np.ndarray, p0: float, a: float, b: float) -> np.ndarray:
    """log of the mixture likelihood ratio against p <= p0, prior Beta(a, b) truncated to (p0, 1)."""
    with np.errstate(divide="ignore"):
        return (
            special.betaln(a + s, b + f)
            - special.betaln(a, b)
            + np.log(special.betaincc(a + s, b + f, p0))
            - math.log(special.betaincc(a, b, p0))
            - _log_lik(s, f, p0)
        )


def _log_mixture_below(s: np.ndarray, f: np.ndarray, p0: float, a: float, b: float) -> np.ndarray:
    """log of the mixture likelihood ratio against p >= p0, prior Beta(a, b) truncated to (0, p0)."""
    with np.errstate(divide="ignore"):
        return (
            special.betaln(a + s, b + f)
            - special.betaln(a, b)
            + np.log(special.betainc(a + s, b + f, p0))
            - math.log(special.betainc(a, b, p0))
            - _log_lik(s, f, p0)
        )


def mixture_lower_bound(
    n_for: np.ndarray | int, n_votes: np.ndarray | int, alpha: float, a: float, b: float
) -> np.ndarray:
    """Anytime-valid lower confidence bound on pA from the one-sided Beta(a, b) mixture.

    Guarantee: for any stopping time, P(pA < bound) <= alpha (and simultaneously over all n).
    For candidate p0 the test statistic is M(p0) = pi[0, p0] + int_{p > p0} L(p)/L(p0) dpi(p), a
    supermartingale under rate p0 (the first term is the constant martingale 1 weighted by the rest
    of the prior). M is strictly decreasing in p0 below the empirical rate (d/dp0 = -L'(p0)/L(p0)^2 *
    int_{p > p0} L dpi) and <= 1 above it, so {p0 : M(p0) >= 1/alpha} is an interval [0, bound] and
    bisection finds it. Bisection keeps `lo` rejected, so rounding errs low (valid side).
    """
    s = np.asarray(n_for, dtype=float)
    f = np.asarray(n_votes, dtype=float) - s
    s, f = np.broadcast_arrays(s, f)
    log_thr = math.log(1.0 / alpha)
    lo = np.zeros(s.shape)
    hi = np.where(s + f > 0, s / np.maximum(s + f, 1.0), 0.0)
    log_post = special.betaln(a + s, b + f) - special.betaln(a, b)
    for _ in range(32):  # 2^-32 < 3e-10 in p: far below any radius that matters
        mid = 0.5 * (lo + hi)
        with np.errstate(divide="ignore"):
            log_m = np.logaddexp(
                np.log(special.betainc(a, b, mid)),
                log_post + np.log(special.betaincc(a + s, b + f, mid)) - _log_lik(s, f, mid),
            )
        rejected = log_m >= log_thr
        lo = np.where(rejected, mid, lo)
        hi = np.where(rejected, hi, mid)
    return lo


# ----------------------------------------------------------------------------------------------
# Predictive futility: the chance that a test still certifies within its cap.
#
# Under a Beta(a, b) prior on pA and the votes seen, the votes still to come follow a Polya urn:
# after n votes, k of them for the candidate, the next one is for the candidate with probability
# (k + a) / (n + a + b). The chance of ever reaching a boundary before the cap is then a backward
# recursion over (votes, count), exact and the same for every image; the futility tables are
# computed from it once per design.
# ----------------------------------------------------------------------------------------------

#: The prior of the shipped designs' predictive futility rule (chosen in bench/sequential_sim.py).
FUTILITY_PRIOR = (1.0, 0.5)


def predictive_chance(
    looks: tuple[int, ...], reached: np.ndarray, prior: tuple[float, float] = (1.0, 1.0)
) -> np.ndarray:
    """chance[i, k]: P(some look j >= i has a count k_j with reached[j, k_j]) given k votes for
    the candidate at look i, the votes to come drawn from the Polya urn of a Beta(*prior) prior.

    ``reached[j, k]`` says whether count k at the j-th look reaches the goal (certifies, passes a
    radius); columns above a look's vote count are ignored. Entries k > looks[i] are 0.
    """
    a, b = prior
    cap = looks[-1]
    chance = np.zeros((len(looks), cap + 1))
    row = len(looks) - 1
    value = reached[row].astype(float)
    chance[row] = value
    for n in range(cap - 1, looks[0] - 1, -1):
        k = np.arange(n + 1)
        up = (k + a) / (n + a + b)
        value = up * value[1 : n + 2] + (1 - up) * value[: n + 1]
        if row > 0 and looks[row - 1] == n:
            row -= 1
            value = np.maximum(value, reached[row, : n + 1])
            chance[row, : n + 1] = value
    return chance


def _futile_below(chance: np.ndarray, threshold: float) -> int:
    """Largest k such that every count <= k has a chance below the threshold (-1: none)."""
    return int(np.logical_and.accumulate(chance < threshold).sum()) - 1


# ----------------------------------------------------------------------------------------------
# Simulation results (shared by every design's `simulate`).
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulationResult:
    """Outcome of a design over many vote streams (one row per stream)."""

    verdict: np.ndarray  # int8 codes: 0 certified, 1 futile, 2 exhausted
    n_votes: np.ndarray  # estimation votes used at the stop
    p_lower: np.ndarray  # certified lower bound on pA (nan unless certified)
    sigma: float

    @property
    def certified(self) -> np.ndarray:
        return self.verdict == _CERTIFIED

    @property
    def radius(self) -> np.ndarray:
        """Certified radius per stream (nan unless certified)."""
        return self.sigma * stats.norm.ppf(self.p_lower)


def _cumulative(votes: np.ndarray, cap: int) -> np.ndarray:
    if votes.ndim != 2 or votes.shape[1] < cap:
        raise ValueError(f"votes must be (streams, >= {cap}) booleans")
    return np.cumsum(votes[:, :cap], axis=1, dtype=np.int32)


def _first_true(x: np.ndarray) -> np.ndarray:
    """Column index of the first True per row, or x.shape[1] if none."""
    return np.where(x.any(axis=1), x.argmax(axis=1), x.shape[1])


# ----------------------------------------------------------------------------------------------
# Target-radius mode.
# ----------------------------------------------------------------------------------------------


class TargetDesign:
    """Shared machinery of the target-radius designs: count boundaries on a look schedule.

    A design is a family of boundaries indexed by a scalar `theta` (larger = certifies more easily);
    subclasses give the family (`_boundary(theta)`), the value that is valid by a general argument
    (`_safe_theta`: union bound or Ville) and the most liberal value worth trying (`_max_theta`).
    calibration="exact" raises theta as far as the exact crossing probability under pA = p_needed,
    computed by dynamic programming over the binomial paths, stays <= alpha. Crossing is an increasing
    event of the votes, so any pA below p_needed crosses even less often: the false-certificate rate is
    <= alpha for every pA that does not reach the target radius.

    Futility is common to all: stop when even unanimous votes up to the cap cannot reach a certifying
    boundary (curtailment), or when the anytime-valid mixture test of pA >= p_futile (prior uniform on
    (0, p_futile)) rejects at level futility_beta. Futility stops only ever abstain, so they cannot add
    false certificates; the mixture part drops an image with pA >= p_futile with probability <= beta.
    p_futile = futility_p, or if None the pA at which one fixed-n Clopper-Pearson test spending the
    whole cap would certify about half the time (its least certifying count / cap): images below it
    are certified within the cap mostly by luck, and chasing them is what costs queries.
    With futility_chance > 0, also stop when the predictive probability of certifying at a later
    look within the cap (`predictive_chance` with prior futility_prior on pA, the calibrated
    boundary, later futility stops ignored) is below futility_chance.
    """

    sigma: float
    alpha: float
    target_radius: float
    looks: tuple[int, ...]
    futility_beta: float
    calibration: str
    futility_p: float | None
    futility_chance: float
    futility_prior: tuple[float, float]

    def _validate(self, calibrations: tuple[str, ...]) -> None:
        if not (self.sigma > 0 and 0 < self.alpha < 1 and self.target_radius >= 0):
            raise ValueError("need sigma > 0, 0 < alpha < 1, target_radius >= 0")
        if not self.looks or list(self.looks) != sorted(set(self.looks)) or self.looks[0] < 1:
            raise ValueError("looks must be strictly increasing positive vote counts")
        if not 0 < self.futility_beta < 1:
            raise ValueError("futility_beta must be in (0, 1)")
        if self.futility_p is not None and not self.p_needed <= self.futility_p < 1:
            raise ValueError("futility_p must be None or in [p_needed, 1)")
        if self.calibration not in calibrations:
            raise ValueError(f"calibration must be one of {calibrations}")
        if not (math.isfinite(self.futility_chance) and 0 <= self.futility_chance < 1):
            raise ValueError("futility_chance must be a finite number in [0, 1)")
        if not all(math.isfinite(x) and x > 0 for x in self.futility_prior):
            raise ValueError("futility_prior must be two finite numbers > 0")

    @functools.cached_property
    def p_futile(self) -> float:
        """pA below which the futility test tries to stop (see the class docstring)."""
        if self.futility_p is not None:
            return self.futility_p
        cap = self.max_queries
        tail = stats.binom.sf(np.arange(cap + 1) - 1, cap, self.p_needed)
        least = int((tail >= self.alpha).sum())  # fixed-n Clopper-Pearson at level alpha
        return min(max(least / cap, self.p_needed), 1 - 1e-9)

    @property
    def max_queries(self) -> int:
        return self.looks[-1]

    @property
    def p_needed(self) -> float:
        """pA must exceed Phi(R / sigma) for radius R (>= 1/2, so the candidate is also g(x))."""
        return float(stats.norm.cdf(self.target_radius / self.sigma))

    def _boundary(self, theta: float) -> np.ndarray:
        raise NotImplementedError

    @property
    def _safe_theta(self) -> float:
        raise NotImplementedError

    @property
    def _max_theta(self) -> float:
        raise NotImplementedError

    def _p_lower(self, n: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Lower bound on pA reported with a certificate (valid under the design's guarantee)."""
        return np.full(np.shape(n), self.p_needed)

    @functools.cached_property
    def _increments(self) -> list[np.ndarray]:
        """Binomial pmf of the votes added between consecutive looks, under pA = p_needed."""
        gaps = np.diff((0, *self.looks))
        return [stats.binom.pmf(np.arange(g + 1), g, self.p_needed) for g in gaps]

    def crossing_probability(self, boundary: np.ndarray) -> float:
        """P(count >= boundary[i] at look i, for some i) under pA = p_needed, exactly.

        Propagates the distribution of the count over the paths that have not crossed yet.
        """
        dist = np.zeros(self.max_queries + 1)
        dist[0] = 1.0
        crossed = 0.0
        for c, step in zip(boundary, self._increments, strict=True):
            dist = np.convolve(dist, step)[: len(dist)]
            crossed += float(dist[c:].sum())
            dist[c:] = 0.0
        return crossed

    @functools.cached_property
    def theta(self) -> float:
        """The boundary parameter in use (see the class docstring)."""
        if self.calibration != "exact":
            return self._safe_theta
        lo, hi = self._safe_theta, self._max_theta
        if self.crossing_probability(self._boundary(hi)) <= self.alpha:
            return hi
        # The crossing probability is a non-decreasing step function of theta: keep lo admissible.
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            if self.crossing_probability(self._boundary(mid)) <= self.alpha:
                lo = mid
            else:
                hi = mid
        return lo

    @functools.cached_property
    def _tables(self) -> tuple[np.ndarray, np.ndarray]:
        """(certify_at, futile_at) indexed by vote count 0..cap.

        certify_at[n]: least count that certifies at look n (cap + 1 where n is not a look).
        futile_at[n]: largest count that is futile at look n (-1 where none, and at the cap, where
        the outcome is EXHAUSTED instead).
        """
        cap = self.max_queries
        looks = np.array(self.looks)
        certify_at = np.full(cap + 1, cap + 1, dtype=np.int64)
        certify_at[looks] = self._boundary(self.theta)
        futile_at = np.full(cap + 1, -1, dtype=np.int64)
        log_thr = math.log(1.0 / self.futility_beta)
        chance = None
        if self.futility_chance > 0:
            counts = np.arange(cap + 1)
            reached = counts[None, :] >= certify_at[looks][:, None]
            chance = predictive_chance(self.looks, reached, self.futility_prior)
        for i, n in enumerate(self.looks[:-1]):
            # Curtailment: no later look j can be reached with k + (j - n) >= certify_at[j].
            reach = int(np.min(certify_at[looks[i + 1 :]] - looks[i + 1 :])) + n - 1
            k = np.arange(n + 1)
            fut = _log_mixture_below(k, n - k, self.p_futile, 1.0, 1.0) >= log_thr
            # Largest k such that every count <= k is rejected (a down-set, robust to rounding).
            mix = int(np.logical_and.accumulate(fut).sum()) - 1
            hopeless = -1 if chance is None else _futile_below(chance[i, : n + 1], self.futility_chance)
            futile_at[n] = min(max(reach, mix, hopeless), certify_at[n] - 1)
        return certify_at, futile_at

    @property
    def certify_boundary(self) -> np.ndarray:
        """Least count for the candidate that certifies, per look (aligned with `looks`)."""
        return self._tables[0][list(self.looks)]

    @property
    def futility_boundary(self) -> np.ndarray:
        """Largest count that stops as futile, per look (-1: none; the cap is EXHAUSTED instead)."""
        return self._tables[1][list(self.looks)]

    def start(self) -> SequentialTest:
        """A fresh per-image test (estimation counts start at zero)."""
        return _TableTest(self)

    def _decide(self, state: _TableTest, n: int, k: int) -> Decision:
        certify_at, futile_at = self._tables
        if k >= certify_at[n]:
            p = float(self._p_lower(np.array(n), np.array(k)))
            return Decision(Verdict.CERTIFIED, n, k, p, radius_of(self.sigma, p))
        if n == self.max_queries:
            return Decision(Verdict.EXHAUSTED, n, k)
        if k <= futile_at[n]:
            return Decision(Verdict.FUTILE, n, k)
        return Decision(Verdict.CONTINUE, n, k)

    def simulate(self, votes: np.ndarray) -> SimulationResult:
        """Run the design on boolean vote streams (True = vote for the candidate), one per row."""
        cap = self.max_queries
        counts = _cumulative(votes, cap)
        certify_at, futile_at = self._tables
        t_cert = _first_true(counts >= certify_at[1:])
        t_fut = _first_true(counts <= futile_at[1:])
        certified = (t_cert < cap) & (t_cert <= t_fut)  # futile_at < certify_at: never both at once
        t_stop = np.minimum(np.minimum(t_cert, t_fut), cap - 1)
        n_stop = t_stop + 1
        verdict = np.where(certified, _CERTIFIED, np.where(t_fut < cap, _FUTILE, _EXHAUSTED))
        k_stop = counts[np.arange(len(counts)), t_stop]
        p_lower = np.where(certified, self._p_lower(n_stop, k_stop), np.nan)
        return SimulationResult(verdict.astype(np.int8), n_stop, p_lower, self.sigma)


class _TableTest:
    """Per-image state of a table-driven design: last look and the final decision once made."""

    def __init__(self, design: TargetDesign | BestRadiusDesign) -> None:
        self._design = design
        self._n = 0
        self._k = 0
        self._best = 0.0  # running max of the anytime lower bound (best-radius mode)
        self._final: Decision | None = None

    @property
    def max_queries(self) -> int:
        return self._design.max_queries

    def next_look(self) -> int | None:
        """Total estimation votes at the next look; None once a final decision was made."""
        if self._final is not None:
            return None
        return next(n for n in self._design.looks if n > self._n)

    def look(self, n_votes: int, n_for_candidate: int) -> Decision:
        """Decide from the first n_votes estimation votes, n_for_candidate of them for the candidate.

        Only scheduled looks decide; any other count returns CONTINUE (skipping a look never hurts
        validity). After a final decision the same decision is returned again.
        """
        if self._final is not None:
            return self._final
        if not 0 <= n_for_candidate <= n_votes <= self.max_queries:
            raise ValueError(f"need 0 <= k <= n <= {self.max_queries}, got k={n_for_candidate}, n={n_votes}")
        if n_votes < self._n or n_for_candidate < self._k or n_votes - n_for_candidate < self._n - self._k:
            raise ValueError("counts must only grow: look at prefixes of one vote stream")
        self._n, self._k = n_votes, n_for_candidate
        if n_votes not in self._design.looks:
            return Decision(Verdict.CONTINUE, n_votes, n_for_candidate)
        decision = self._design._decide(self, n_votes, n_for_candidate)
        if decision.final:
            self._final = decision
        return decision


@dataclass(frozen=True)
class MixtureDesign(TargetDesign):
    """Beta-mixture likelihood-ratio boundaries (target-radius mode), looks as often as every vote.

    Certifies at a look iff the mixture likelihood ratio of p > p_needed against p_needed, prior
    Beta(prior_a, prior_b) truncated to (p_needed, 1), is >= exp(-theta). It reports p_needed and R.

    calibration="ville": threshold 1/alpha. Guarantee (Ville's inequality): for ANY stopping rule and
    any looks, P(certified at radius R while sigma * Phi^-1(pA) < R) <= alpha.

    calibration="exact": the lowest threshold whose exact crossing probability on this look schedule
    under pA = p_needed is <= alpha. Guarantee: the same statement for this schedule and cap.
    """

    sigma: float
    alpha: float
    target_radius: float
    looks: tuple[int, ...] = every(1, 400)
    futility_beta: float = 0.05
    calibration: str = "ville"
    prior_a: float = 1.0
    prior_b: float = 0.5
    futility_p: float | None = None
    futility_chance: float = 0.0
    futility_prior: tuple[float, float] = (1.0, 1.0)

    def __post_init__(self) -> None:
        self._validate(("ville", "exact"))
        if not (self.prior_a > 0 and self.prior_b > 0):
            raise ValueError("prior parameters must be positive")

    @functools.cached_property
    def _log_ratios(self) -> list[np.ndarray]:
        """log mixture ratio for k = 0..n, per look; made non-decreasing in k so boundaries are
        up-sets (it already is in exact arithmetic: more agreeing votes favour every p > p_needed)."""
        out = []
        for n in self.looks:
            k = np.arange(n + 1)
            lr = _log_mixture_above(k, n - k, self.p_needed, self.prior_a, self.prior_b)
            out.append(np.flip(np.minimum.accumulate(np.flip(lr))))
        return out

    def _boundary(self, theta: float) -> np.ndarray:
        return np.array([int((lr < -theta).sum()) for lr in self._log_ratios])

    @property
    def _safe_theta(self) -> float:
        return math.log(self.alpha)

    @property
    def _max_theta(self) -> float:
        return 0.0


# ----------------------------------------------------------------------------------------------
# Best-radius mode.
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BestRadiusDesign:
    """Largest radius under a per-image cap (the last look), from a lower bound on pA valid at all looks.

    bound="mixture": `mixture_lower_bound` (prior Beta(prior_a, prior_b)), valid simultaneously at
    every vote count (Ville). bound="bonferroni": one-sided Clopper-Pearson at alpha / len(looks) at
    each look, valid simultaneously at the looks (union bound); tighter when there are few looks.
    The certified p_lower is the running maximum of the bound over the looks made, radius
    sigma * Phi^-1(p_lower), certified iff that exceeds min_radius. Guarantee: P(certified radius >
    sigma * Phi^-1(pA)) <= alpha under any stopping rule over these looks, the one below included.

    Stopping rule at a look with n votes, k for the candidate, m = max_queries - n left. Let q be an
    optimistic rate for the remaining votes: the anytime upper confidence bound on pA at level
    projection_beta (uniform-prior mixture on the disagreeing votes), or q = 1 when projection_beta
    is None. The projected bound is p_proj = max(p_lower, bound(k + ceil(q * m), max_queries)):
    * futile: stop (abstain) when p_proj <= Phi(min_radius / sigma);
    * plateau (no ladder): stop and certify when Phi^-1(p_proj) - Phi^-1(p_lower) < tolerance
      (tolerance in units of sigma);
    * ladder (radii of interest, e.g. the radii certified accuracy is reported at): more votes are
      worth buying only to pass the next rung above the current radius; stop (certify, or abstain if
      nothing is certified yet) when sigma * Phi^-1(p_proj) is below it or every rung is passed;
    * predictive futility (futility_chance > 0): the goal of the ladder rule (the next rung; without
      a ladder, any certificate while none is made) also counts as out of reach when the predictive
      probability of passing it at a later look (`predictive_chance`, prior futility_prior) is
      below futility_chance;
    * exhausted: at the cap, certify if p_lower allows, else abstain.
    With q = 1, p_proj is the ceiling (the bound if every remaining vote agrees; an agreeing vote
    never lowers the bound), so the stops are then exact: no continuation could have done better.
    With q < 1 they are a heuristic about the likely gain (pA <= q except with probability
    projection_beta); either way the stopping rule cannot affect validity.
    """

    sigma: float
    alpha: float
    looks: tuple[int, ...] = every(10, 400)
    bound: str = "mixture"
    tolerance: float = 0.1  # in units of sigma
    min_radius: float = 0.0
    projection_beta: float | None = 0.05
    prior_a: float = 1.0
    prior_b: float = 0.5
    ladder: tuple[float, ...] = ()
    futility_chance: float = 0.0
    futility_prior: tuple[float, float] = (1.0, 1.0)

    def __post_init__(self) -> None:
        if not (self.sigma > 0 and 0 < self.alpha < 1):
            raise ValueError("need sigma > 0 and 0 < alpha < 1")
        if list(self.ladder) != sorted(set(self.ladder)) or any(r < self.min_radius for r in self.ladder):
            raise ValueError("ladder must be increasing radii >= min_radius")
        if self.projection_beta is not None and not 0 < self.projection_beta < 1:
            raise ValueError("projection_beta must be None or in (0, 1)")
        if not self.looks or list(self.looks) != sorted(set(self.looks)) or self.looks[0] < 1:
            raise ValueError("looks must be strictly increasing positive vote counts")
        if self.bound not in ("mixture", "bonferroni"):
            raise ValueError("bound must be 'mixture' or 'bonferroni'")
        if not self.tolerance >= 0 <= self.min_radius:
            raise ValueError("need tolerance, min_radius >= 0")
        if not (math.isfinite(self.futility_chance) and 0 <= self.futility_chance < 1):
            raise ValueError("futility_chance must be a finite number in [0, 1)")
        if not all(math.isfinite(x) and x > 0 for x in self.futility_prior):
            raise ValueError("futility_prior must be two finite numbers > 0")

    @property
    def max_queries(self) -> int:
        return self.looks[-1]

    @property
    def p_needed(self) -> float:
        return float(stats.norm.cdf(self.min_radius / self.sigma))

    @functools.cached_property
    def _bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(lower[i, k], projected[i, k]) at the i-th look (nan for k above its vote count)."""
        cap, looks = self.max_queries, self.looks
        # All (look, k) pairs at once: one vectorised bisection instead of one per look.
        i = np.concatenate([np.full(m + 1, j) for j, m in enumerate(looks)])
        k = np.concatenate([np.arange(m + 1) for m in looks])
        n = np.asarray(looks)[i]
        lower = np.full((len(looks), cap + 1), np.nan)
        if self.bound == "mixture":
            lower[i, k] = mixture_lower_bound(k, n, self.alpha, self.prior_a, self.prior_b)
        else:
            lower[i, k] = np.nan_to_num(stats.beta.ppf(self.alpha / len(looks), k, n - k + 1))  # k = 0: 0
        if self.projection_beta is None:
            q = np.ones(len(n))
        else:
            q = 1.0 - mixture_lower_bound(n - k, n, self.projection_beta, 1.0, 1.0)
        # Round the projected count up (optimistic) and never past the cap; the last row is the cap.
        k_cap = np.minimum(k + np.ceil(q * (cap - n) - 1e-9).astype(np.int64), cap)
        projected = np.full((len(looks), cap + 1), np.nan)
        projected[i, k] = lower[-1, k_cap]
        return lower, projected

    @property
    def _goals(self) -> np.ndarray:
        """What more votes are bought for, in units of sigma: the ladder's rungs, or (no ladder)
        any certificate at all."""
        return np.asarray(self.ladder or (self.min_radius,)) / self.sigma

    @functools.cached_property
    def _chances(self) -> np.ndarray:
        """chance[g, i, k]: predictive probability of passing goal g at a later look, from k votes
        for the candidate at the i-th look; a last row of zeros stands for "every goal passed"."""
        lower = np.nan_to_num(self._bounds[0])
        with np.errstate(divide="ignore"):
            z = np.where(lower > self.p_needed, stats.norm.ppf(lower), -np.inf)
        chances = [predictive_chance(self.looks, z >= goal, self.futility_prior) for goal in self._goals]
        return np.stack([*chances, np.zeros_like(chances[0])])

    def _stops(
        self, best: np.ndarray, proj: np.ndarray, rows: np.ndarray, counts: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(futile, certify now) before the cap, from the running bound, its projection and where the
        test is (look index and count, broadcast with best)."""
        certifiable = best > self.p_needed
        with np.errstate(divide="ignore", invalid="ignore"):
            z_best = np.where(certifiable, stats.norm.ppf(best), -np.inf)
            z_proj = stats.norm.ppf(proj)
        futile = proj <= self.p_needed
        # Next goal not yet passed (a rung counts as passed once the certified radius reaches it).
        goal = np.searchsorted(self._goals, z_best, side="right")
        hopeless = np.zeros(np.shape(best), dtype=bool)
        if self.futility_chance > 0:
            hopeless = self._chances[goal, rows, counts] < self.futility_chance
        if not self.ladder:
            return futile | (~certifiable & hopeless), certifiable & (z_proj - z_best < self.tolerance)
        next_rung = np.append(self._goals, np.inf)[goal]
        pointless = (z_proj < next_rung) | hopeless
        return futile | (~certifiable & pointless), certifiable & pointless

    def start(self) -> SequentialTest:
        """A fresh per-image test (estimation counts start at zero)."""
        return _TableTest(self)

    def _decide(self, state: _TableTest, n: int, k: int) -> Decision:
        lower, projected = self._bounds
        row = self.looks.index(n)
        state._best = best = max(state._best, float(lower[row, k]))
        certified = Decision(Verdict.CERTIFIED, n, k, best, radius_of(self.sigma, best))
        if n == self.max_queries:
            return certified if best > self.p_needed else Decision(Verdict.EXHAUSTED, n, k)
        futile, done = self._stops(
            np.array([best]), np.array([max(best, float(projected[row, k]))]), np.array([row]), np.array([k])
        )
        if futile[0]:
            return Decision(Verdict.FUTILE, n, k)
        return certified if done[0] else Decision(Verdict.CONTINUE, n, k)

    def simulate(self, votes: np.ndarray) -> SimulationResult:
        """Run the design on boolean vote streams (True = vote for the candidate), one per row."""
        counts = _cumulative(votes, self.max_queries)
        lower, projected = self._bounds
        looks = np.array(self.looks)
        k = counts[:, looks - 1]  # counts at the looks only
        rows = np.arange(len(looks))
        best = np.maximum.accumulate(lower[rows, k], axis=1)
        futile, done = self._stops(best, np.maximum(best, projected[rows, k]), rows[None, :], k)
        futile[:, -1] = False
        done[:, -1] = True  # the cap: certify if possible, else exhausted (never both: see _stops)
        t_fut, t_done = _first_true(futile), _first_true(done)
        stop = np.minimum(t_fut, t_done)
        p_stop = best[np.arange(len(counts)), stop]
        certified = (t_done < t_fut) & (p_stop > self.p_needed)
        verdict = np.where(certified, _CERTIFIED, np.where(t_fut < t_done, _FUTILE, _EXHAUSTED))
        return SimulationResult(
            verdict.astype(np.int8), looks[stop], np.where(certified, p_stop, np.nan), self.sigma
        )


@functools.cache  # designs build their tables once (about a second); share them across images and runs
def default_target_design(
    sigma: float, alpha: float, target_radius: float, max_queries: int = 400, futility_chance: float = 0.0
) -> MixtureDesign:
    """The target-radius design chosen by bench/sequential_sim.py (see docs/sequential.md).

    Beta(1, 1/2) mixture boundary, exactly calibrated, a look allowed after every vote, futility at
    the automatic p_futile with beta = 0.05, and the predictive futility rule at futility_chance
    (prior FUTILITY_PRIOR). Guarantee: P(certified at radius R while the true radius is < R) <=
    alpha, whichever of the allowed looks the engine uses; futility stops only abstain.
    """
    return MixtureDesign(
        sigma,
        alpha,
        target_radius,
        looks=every(1, max_queries),
        calibration="exact",
        futility_chance=futility_chance,
        futility_prior=FUTILITY_PRIOR,
    )


@functools.cache
def default_best_radius_design(
    sigma: float,
    alpha: float,
    max_queries: int = 400,
    ladder: tuple[float, ...] = (),
    futility_chance: float = 0.0,
) -> BestRadiusDesign:
    """The best-radius design chosen in docs/sequential.md: Clopper-Pearson at alpha / 8 at looks
    every cap/8 votes, projection rule, stopping at the given ladder of radii if any (without one,
    at a gain below 0.1 sigma), and at a predictive chance of the next gain below futility_chance
    (prior FUTILITY_PRIOR). Guarantee: P(certified radius > true radius) <= alpha."""
    looks = every(max(1, max_queries // 8), max_queries)
    return BestRadiusDesign(
        sigma,
        alpha,
        looks=looks,
        bound="bonferroni",
        ladder=ladder,
        futility_chance=futility_chance,
        futility_prior=FUTILITY_PRIOR,
    )


# ----------------------------------------------------------------------------------------------
# Selection of the candidate class.
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """Outcome of a selection look: label is the candidate once done (None: no clear leader)."""

    done: bool
    label: str | None
    n_votes: int


@dataclass(frozen=True)
class LeaderSelection:
    """Stop selecting as soon as one label leads every other by `lead` votes, or at `max_votes`.

    At the cap the unique leader is chosen; a tie for first abstains (the image cannot have pA > 1/2
    clearly enough to be worth estimation queries). Selection votes are NEVER counted in estimation:
    the estimation test starts from zero, so any selection rule (this one included) leaves the
    1 - alpha guarantee intact. When the caller already has a candidate (the vendor's label on the
    clean image), skip selection entirely and start the estimation test directly.
    """

    lead: int = 2
    max_votes: int = 20

    def __post_init__(self) -> None:
        if self.lead < 1 or self.max_votes < 1:
            raise ValueError("lead and max_votes must be positive")

    def stops(
        self, n_votes: np.ndarray | int, top: np.ndarray | int, runner_up: np.ndarray | int
    ) -> np.ndarray:
        """Whether selection stops after n_votes votes, the two largest label counts being given."""
        return (np.asarray(top) - np.asarray(runner_up) >= self.lead) | (
            np.asarray(n_votes) >= self.max_votes
        )

    def look(self, counts: Mapping[str, int]) -> Selection:
        """Decide from the label counts of the selection votes so far (labels canonicalised)."""
        n = sum(counts.values())
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])
        top = ranked[0][1] if ranked else 0
        second = ranked[1][1] if len(ranked) > 1 else 0
        if not bool(self.stops(n, top, second)):
            return Selection(False, None, n)
        return Selection(True, ranked[0][0] if top > second else None, n)
