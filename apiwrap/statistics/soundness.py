"""Exact false-certificate probabilities of the sequential designs, by dynamic programming.

Monte Carlo cannot resolve alpha = 0.001 in a test's time (a million streams give a standard
error of 3e-5 around 1e-3, and the designs are calibrated to sit just under alpha). Here the
distribution of the vote count is propagated exactly from look to look, under a true rate pA
of votes for the candidate, applying the design's own decision tables: mass that certifies,
stops as futile or reaches the cap leaves the propagation. What is left is arithmetic in
float64 (errors around 1e-15), so a bound of alpha can be checked exactly.

* :func:`target_false_certificate_probability`: a target-radius design certifies radius R;
  the certificate is false when sigma * Phi^-1(pA) < R. Certifying is an increasing event of
  the votes, so the worst pA is p_needed itself (the limit from below).
* :func:`best_radius_false_certificate_probability`: a best-radius design certifies the
  running maximum of its lower bound; the certificate is false when that exceeds pA. The
  state is (count, running bound), since the shipped stopping rule reads the bound.
* :func:`peeking_probability`: the same propagation for any count boundary, e.g. a fixed-n
  test at level alpha looked at after every batch ("naive peeking"), to show what the
  propagation flags.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

from apiwrap.statistics.cost import best_radius_looks
from apiwrap.statistics.sequential import BestRadiusDesign, TargetDesign

__all__ = [
    "best_radius_false_certificate_probability",
    "naive_peeking_boundary",
    "peeking_probability",
    "target_false_certificate_probability",
]


def _steps(looks: Sequence[int], p: float) -> list[np.ndarray]:
    """pmf of the votes for the candidate added between consecutive looks, at rate p."""
    gaps = np.diff((0, *looks))
    return [stats.binom.pmf(np.arange(gap + 1), gap, p) for gap in gaps]


def peeking_probability(
    looks: Sequence[int], certify_at: Sequence[int], p: float, futile_at: Sequence[int] | None = None
) -> float:
    """P(the count reaches certify_at[i] at look i, for some i, before a futility stop), votes ~ Bernoulli(p).

    ``futile_at[i]`` is the largest count that stops as futile at look i (-1: none).
    """
    cap = looks[-1]
    count = np.zeros(cap + 1)
    count[0] = 1.0
    certified = 0.0
    futile = futile_at if futile_at is not None else [-1] * len(looks)
    for step, least, most_futile in zip(_steps(looks, p), certify_at, futile, strict=True):
        count = np.convolve(count, step)[: cap + 1]
        certified += float(count[least:].sum())
        count[least:] = 0.0
        count[: most_futile + 1] = 0.0
    return certified


def target_false_certificate_probability(design: TargetDesign, p: float | None = None) -> float:
    """P(the design certifies) when the true rate is ``p`` (default: p_needed, the worst false case).

    Runs the design's shipped tables: certify boundary and futility stops at every look.
    """
    rate = design.p_needed if p is None else p
    return peeking_probability(
        design.looks, design.certify_boundary.tolist(), rate, design.futility_boundary.tolist()
    )


def best_radius_false_certificate_probability(design: BestRadiusDesign, p: float) -> float:
    """P(the design certifies a p_lower above ``p``) when the true rate is ``p``.

    Exact under the shipped stopping rule (futility, ladder or plateau stops, the cap), which
    reads the running maximum of the lower bound: the propagated state is that maximum (one
    of the finitely many values the bound takes) and the count.
    """
    false_certificates = 0.0
    for _, state, best, certified, _ in best_radius_looks(design, p):
        false_certificates += float(state[certified & (best > p)].sum())
    return false_certificates


def naive_peeking_boundary(looks: Sequence[int], p_needed: float, alpha: float) -> list[int]:
    """Certify at look n when a fixed-n test at level alpha would: P(Bin(n, p_needed) >= k) < alpha.

    Each look alone is a valid test; looking at every one and stopping at the first success is not.
    """
    return [int((stats.binom.sf(np.arange(n + 1) - 1, n, p_needed) >= alpha).sum()) for n in looks]
