"""Research designs compared against the shipped ones (bench/sequential_sim.py, tests); not used by jobs.

`GroupSequentialDesign`: Bonferroni-split or exactly calibrated Clopper-Pearson boundaries on a
look schedule fixed in advance. The shipped target design is `MixtureDesign`
(apiwrap.statistics.sequential), chosen by measurement (docs/sequential.md).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from apiwrap.statistics.sequential import TargetDesign

__all__ = ["GroupSequentialDesign"]


@dataclass(frozen=True)
class GroupSequentialDesign(TargetDesign):
    """Clopper-Pearson boundaries on a look schedule fixed in advance (target-radius mode).

    At look n the design certifies iff the one-sided Clopper-Pearson lower bound at a nominal level
    gamma exceeds p_needed = Phi(R / sigma), i.e. iff P(Binomial(n, p_needed) >= k) < gamma
    (theta = log gamma).

    calibration="bonferroni": gamma = alpha / len(looks). Guarantee: by the union bound over looks,
    P(some look's bound exceeds pA) <= alpha, so the reported p_lower (the bound at level gamma, >=
    p_needed) and its radius (>= R) are wrong with probability <= alpha, whatever the futility stops.

    calibration="exact": the largest gamma whose exact crossing probability under pA = p_needed is
    <= alpha. Guarantee: P(certified at radius R while sigma * Phi^-1(pA) < R) <= alpha; it reports
    exactly p_needed and R, since the calibration holds at that one threshold only.
    """

    sigma: float
    alpha: float
    target_radius: float
    looks: tuple[int, ...] = (25, 50, 100, 200, 400)
    futility_beta: float = 0.05
    calibration: str = "bonferroni"
    futility_p: float | None = None
    futility_chance: float = 0.0
    futility_prior: tuple[float, float] = (1.0, 1.0)

    def __post_init__(self) -> None:
        self._validate(("bonferroni", "exact"))

    @functools.cached_property
    def _log_tails(self) -> list[np.ndarray]:
        """log P(Bin(n, p_needed) >= k) for k = 0..n, per look."""
        return [stats.binom.logsf(np.arange(n + 1) - 1, n, self.p_needed) for n in self.looks]

    def _boundary(self, theta: float) -> np.ndarray:
        # Least k with log P(Bin(n, p) >= k) < theta = the number of k whose tail is still >= it.
        return np.array([int((tail >= theta).sum()) for tail in self._log_tails])

    @property
    def _safe_theta(self) -> float:
        return math.log(self.alpha / len(self.looks))

    @property
    def _max_theta(self) -> float:
        return math.log(self.alpha)

    def _p_lower(self, n: np.ndarray, k: np.ndarray) -> np.ndarray:
        if self.calibration == "exact":
            return np.full(np.shape(n), self.p_needed)
        # The level the boundary used (alpha / len(looks) up to rounding), so bound and boundary agree.
        return stats.beta.ppf(math.exp(self.theta), k, n - k + 1)
