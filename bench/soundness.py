"""Exact false-certificate probabilities of the shipped sequential designs (markdown table).

Target-radius designs at pA = p_needed (the worst false case), best-radius designs at the
worst of 8 rates just below values their final bound takes, and naive peeking (a fixed-n
Clopper-Pearson test at alpha looked at after every vote) on the same 400 looks. Computed
by apiwrap.statistics.soundness (dynamic programming, no simulation).

    python -m bench.soundness
"""

from __future__ import annotations

import numpy as np

from apiwrap.statistics.radii import report_radii
from apiwrap.statistics.sequential import default_best_radius_design, default_target_design, every
from apiwrap.statistics.soundness import (
    best_radius_false_certificate_probability,
    naive_peeking_boundary,
    peeking_probability,
    target_false_certificate_probability,
)


def _worst_rates(lower: np.ndarray, count: int) -> list[float]:
    values = np.unique(lower[-1][~np.isnan(lower[-1])])
    values = values[values > 0.5]
    return [float(v) - 1e-9 for v in values[np.linspace(0, len(values) - 1, count).round().astype(int)]]


def main() -> None:
    print("| design | R / sigma | cap | alpha | false-certificate probability |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for alpha in (0.01, 0.001):
        for cap in (100, 400):
            for multiple in (0.5, 1.0, 1.5):
                design = default_target_design(1.0, alpha, multiple, cap)
                worst = target_false_certificate_probability(design)
                print(f"| target | {multiple:g} | {cap} | {alpha:g} | {worst:.6f} |")
            best = default_best_radius_design(1.0, alpha, cap, report_radii(1.0))
            worst = max(
                best_radius_false_certificate_probability(best, p) for p in _worst_rates(best._bounds[0], 8)
            )
            print(f"| best radius (ladder 0..2) | - | {cap} | {alpha:g} | {worst:.6f} |")
            looks = every(1, cap)
            p_needed = default_target_design(1.0, alpha, 1.0, cap).p_needed
            naive = peeking_probability(looks, naive_peeking_boundary(looks, p_needed, alpha), p_needed)
            print(f"| naive peeking, every vote | 1 | {cap} | {alpha:g} | {naive:.6f} |")


if __name__ == "__main__":
    main()
