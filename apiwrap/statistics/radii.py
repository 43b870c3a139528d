"""The radii every report reads certified accuracy at, as multiples of sigma.

One list, shared by the reports (CLI summary, benchmarks) and the best-radius design's
ladder, which stops buying votes once the next of these radii is out of reach.
"""

from __future__ import annotations

__all__ = ["REPORT_RADII_IN_SIGMAS", "report_radii"]

#: 2 sigma is out of reach at n = 100 (the ceiling is 1.5 sigma) but not for sequential designs.
REPORT_RADII_IN_SIGMAS = (0.0, 0.5, 1.0, 1.5, 2.0)


def report_radii(sigma: float) -> tuple[float, ...]:
    """The radii reported for a job at noise level ``sigma``: 0, sigma/2, sigma, 3 sigma/2, 2 sigma."""
    return tuple(sigma * multiple for multiple in REPORT_RADII_IN_SIGMAS)
