"""Image denoisers for denoised smoothing (knows images, nothing of vendors).

The engine depends on exactly `__all__`: `load_denoiser(name_or_path, sigma)` returns a
`Denoiser` that maps float32 (B, 3, H, W) noisy images to denoised ones in [0, 1];
`available_denoisers()` lists the shipped names ("none" is the identity).
"""

from apiwrap.denoisers.architectures import ARCHITECTURES, create_architecture
from apiwrap.denoisers.denoiser import (
    Denoiser,
    available_denoisers,
    load_checkpoint,
    load_denoiser,
    save_checkpoint,
)

__all__ = [
    "ARCHITECTURES",
    "Denoiser",
    "available_denoisers",
    "create_architecture",
    "load_checkpoint",
    "load_denoiser",
    "save_checkpoint",
]
