"""What a sequential design costs per image, exactly, from its own stopping rule.

The distribution of the estimation votes an image takes is propagated from look to look, as in
:mod:`apiwrap.statistics.soundness`: under a true agreement pA (the rate of votes for the
candidate) the count's distribution moves by binomial increments and the design's decision
tables remove the mass that certifies, stops as futile or reaches the cap. So the expected
votes, the chance of a certificate and the most votes an image can take come from the design
itself, futility rules included, with no simulation.

* :func:`stopping_profile`: one agreement pA.
* :func:`prior_profile`: averaged over a Beta prior on pA (what a batch of images costs when
  their agreement is spread like the prior).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from apiwrap.statistics.sequential import BestRadiusDesign, TargetDesign

__all__ = ["StoppingProfile", "best_radius_looks", "prior_profile", "stopping_profile"]


@dataclass(frozen=True)
class StoppingProfile:
    """Estimation votes of one image under a design (the clean query and selection not included)."""

    expected_votes: float
    certified: float  # probability of a certificate
    most_votes: int  # the most votes any image can take (the last look that can be reached)


def _steps(looks: tuple[int, ...], p: float) -> list[np.ndarray]:
    gaps = np.diff((0, *looks))
    return [stats.binom.pmf(np.arange(gap + 1), gap, p) for gap in gaps]


def _target_looks(design: TargetDesign, p: float) -> Iterator[tuple[int, float, float]]:
    """(votes, mass that stops there, mass that certifies there) per look."""
    cap = design.max_queries
    count = np.zeros(cap + 1)
    count[0] = 1.0
    for n, step, least, most_futile in zip(
        design.looks, _steps(design.looks, p), design.certify_boundary, design.futility_boundary, strict=True
    ):
        count = np.convolve(count, step)[: cap + 1]
        certified = float(count[least:].sum())
        count[least:] = 0.0
        if n == cap:
            yield n, certified + float(count.sum()), certified
            return
        futile = float(count[: most_futile + 1].sum())
        count[: most_futile + 1] = 0.0
        yield n, certified + futile, certified


def best_radius_looks(
    design: BestRadiusDesign, p: float
) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per look: (votes, state, running bound per state row, certified, stopped), before the stops.

    ``state[v, k]`` is the probability of running bound ``values[v]`` and count k at that look
    among the paths still running; ``certified`` and ``stopped`` are masks over it (what the
    shipped stopping rule does there), the stopped mass leaving before the next look.
    """
    lower, projected = design._bounds
    cap = design.max_queries
    values = np.unique(np.append(lower[~np.isnan(lower)], 0.0))  # every running maximum possible
    state = np.zeros((len(values), cap + 1))
    state[0, 0] = 1.0
    counts = np.arange(cap + 1)[None, :]
    for row, step in enumerate(_steps(design.looks, p)):
        n = design.looks[row]
        state = np.array([np.convolve(c, step)[: cap + 1] for c in state])
        # The look's bound at count k becomes the running maximum of every path below it.
        rises = np.searchsorted(values, lower[row, : n + 1])
        for k, top in enumerate(rises):
            state[top, k] += state[:top, k].sum()
            state[:top, k] = 0.0
        best = np.broadcast_to(values[:, None], state.shape)
        if n == cap:
            certified = best > design.p_needed
            stopped = np.ones(state.shape, dtype=bool)
        else:
            proj = np.fmax(best, np.nan_to_num(projected[row])[None, :])
            futile, done = design._stops(best, proj, np.full(counts.shape, row), counts)
            certified, stopped = done & ~futile, futile | done
        yield n, state, best, certified, stopped
        state = np.where(stopped, 0.0, state)


def _stops(design: TargetDesign | BestRadiusDesign, p: float) -> list[tuple[int, float, float]]:
    """(votes, mass that stops there, mass that certifies there) per look."""
    if isinstance(design, BestRadiusDesign):
        return [
            (n, float(state[stopped].sum()), float(state[certified].sum()))
            for n, state, _, certified, stopped in best_radius_looks(design, p)
        ]
    return list(_target_looks(design, p))


def stopping_profile(design: TargetDesign | BestRadiusDesign, p: float) -> StoppingProfile:
    """Expected votes, chance of a certificate and most votes per image when the agreement is ``p``."""
    if not 0 <= p <= 1:
        raise ValueError(f"agreement must be in [0, 1], got {p}")
    stops = _stops(design, p)
    # Every path has a positive probability at an agreement strictly between 0 and 1.
    reachable = stops if 0 < p < 1 else _stops(design, 0.5)
    return StoppingProfile(
        expected_votes=sum(n * mass for n, mass, _ in stops),
        certified=sum(certified for _, _, certified in stops),
        most_votes=max(n for n, mass, _ in reachable if mass > 0),
    )


def prior_profile(
    design: TargetDesign | BestRadiusDesign, a: float, b: float, points: int = 64
) -> StoppingProfile:
    """The profile averaged over pA ~ Beta(a, b) (Gauss-Jacobi quadrature on ``points`` nodes)."""
    if not (a > 0 and b > 0):
        raise ValueError(f"the prior's parameters must be positive, got Beta({a}, {b})")
    # Beta(a, b) on [0, 1] is the Jacobi weight (1 - x)^(b-1) (1 + x)^(a-1) on [-1, 1].
    nodes, weights = special.roots_jacobi(points, b - 1, a - 1)
    weights = weights / weights.sum()
    profiles = [stopping_profile(design, float((x + 1) / 2)) for x in nodes]
    return StoppingProfile(
        float(sum(w * pr.expected_votes for w, pr in zip(weights, profiles, strict=True))),
        float(sum(w * pr.certified for w, pr in zip(weights, profiles, strict=True))),
        max(pr.most_votes for pr in profiles),
    )
