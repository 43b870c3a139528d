"""Image denoisers for denoised smoothing (knows images, nothing of vendors).

The engine depends on exactly `__all__`: `load_denoiser(name_or_path, sigma)` returns a
`Denoiser` that maps float32 (B, 3, H, W) noisy images to denoised ones in [0, 1], and
whose `provenance` (a `DenoiserProvenance`) names what decides its outputs: the sha256 of
its weights' files, the runtime, device kind and precision;
`available_denoisers()` lists the shipped names ("none" is the identity);
`recommended_denoiser(sigma)` is the best installed one for a noise level (what ``--denoiser auto``
resolves to, in `apiwrap.engine.settings`).
"""

from apiwrap.denoisers.architectures import ARCHITECTURES, create_architecture
from apiwrap.denoisers.denoiser import (
    Denoiser,
    available_denoisers,
    load_checkpoint,
    load_denoiser,
    save_checkpoint,
)
from apiwrap.denoisers.provenance import DenoiserProvenance
from apiwrap.denoisers.recommended import recommended_denoiser, recommended_sigma

__all__ = [
    "ARCHITECTURES",
    "Denoiser",
    "DenoiserProvenance",
    "available_denoisers",
    "create_architecture",
    "load_checkpoint",
    "load_denoiser",
    "recommended_denoiser",
    "recommended_sigma",
    "save_checkpoint",
]
