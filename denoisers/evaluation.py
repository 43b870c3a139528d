"""Denoising quality: PSNR and SSIM of a denoiser on an image folder at a given sigma.

Noise is drawn from a generator seeded once per call, image by image in sorted file order,
so two evaluations with the same seed see exactly the same noisy images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn import functional

from apiwrap.denoisers.data import list_images, load_image

__all__ = [
    "AgreementScores",
    "DenoisingScores",
    "classifier_agreement",
    "evaluate_folder",
    "psnr",
    "square_crop",
    "ssim",
]


def psnr(estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB for [0, 1] images, one value per image of a (B, C, H, W) batch."""
    mse = (estimate.float() - reference.float()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-12))


def _gaussian_window(size: int, sigma: float, channels: int) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    kernel_1d = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel_1d /= kernel_1d.sum()
    return (kernel_1d[:, None] * kernel_1d[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(
    estimate: torch.Tensor, reference: torch.Tensor, window_size: int = 11, window_sigma: float = 1.5
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) for [0, 1] images, per image of a (B, C, H, W) batch.

    Gaussian 11x11 window with sigma 1.5 and K1 = 0.01, K2 = 0.03 as in the reference code;
    statistics over valid window positions only, averaged over channels.
    """
    c1, c2 = 0.01**2, 0.03**2
    x, y = estimate.float(), reference.float()
    window = _gaussian_window(window_size, window_sigma, x.shape[1]).to(x.device)

    def local_mean(tensor: torch.Tensor) -> torch.Tensor:
        return functional.conv2d(tensor, window, groups=x.shape[1])

    mu_x, mu_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mu_x**2
    var_y = local_mean(y * y) - mu_y**2
    covariance = local_mean(x * y) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + c1) * (2 * covariance + c2)
    ssim_map = numerator / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(1)


@dataclass
class DenoisingScores:
    """Mean PSNR / SSIM of denoised and (for reference) of noisy-but-clipped images."""

    folder: str
    sigma: float
    images: int
    psnr: float
    ssim: float
    noisy_psnr: float
    noisy_ssim: float
    per_image_psnr: list[float] = field(repr=False, default_factory=list)


def evaluate_folder(
    denoise: Callable[[torch.Tensor], torch.Tensor],
    folder: str | Path,
    sigma: float,
    *,
    seed: int = 0,
    max_images: int | None = None,
) -> DenoisingScores:
    """Scores `denoise` (noisy batch -> denoised batch in [0, 1]) on every image of `folder`."""
    generator = torch.Generator().manual_seed(seed)
    paths = list_images(folder)[:max_images]
    rows: list[tuple[float, float, float, float]] = []
    for path in paths:
        clean = load_image(path)[None]
        noisy = clean + sigma * torch.randn(clean.shape, generator=generator)
        denoised = denoise(noisy).float().cpu()
        clipped = noisy.clamp(0.0, 1.0)
        rows.append(
            (
                float(psnr(denoised, clean)),
                float(ssim(denoised, clean)),
                float(psnr(clipped, clean)),
                float(ssim(clipped, clean)),
            )
        )
    means = torch.tensor(rows).mean(0).tolist()
    return DenoisingScores(
        folder=str(folder),
        sigma=sigma,
        images=len(rows),
        psnr=means[0],
        ssim=means[1],
        noisy_psnr=means[2],
        noisy_ssim=means[3],
        per_image_psnr=[row[0] for row in rows],
    )


@dataclass
class AgreementScores:
    """How often a classifier's top-1 on denoised noisy copies equals its top-1 on the clean image."""

    folder: str
    sigma: float
    images: int
    noises_per_image: int
    agreement: float
    per_image_agreement: list[float] = field(repr=False, default_factory=list)

    @property
    def majority(self) -> float:
        """Fraction of images whose copies keep the clean label more often than not: a rough
        proxy for certified accuracy at r = 0, which needs p_A > 1/2."""
        return sum(share > 0.5 for share in self.per_image_agreement) / len(self.per_image_agreement)


def square_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """The centre square of a (3, H, W) image resized to size x size: the framing of an
    ImageNet validation image, so that scene photographs are seen at the object scale the
    vendors' classifiers expect."""
    _, height, width = image.shape
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = image[None, :, top : top + side, left : left + side]
    resized = functional.interpolate(
        square, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return resized[0].clamp(0.0, 1.0)


def classifier_agreement(
    denoise: Callable[[torch.Tensor], torch.Tensor],
    classifier: Callable[[torch.Tensor], torch.Tensor],
    folder: str | Path,
    sigma: float,
    *,
    noises_per_image: int = 10,
    max_images: int | None = None,
    seed: int = 0,
    image_size: int | None = None,
) -> AgreementScores:
    """The quantity Stab training raises: the fraction of sigma-noisy, denoised copies on which
    `classifier` keeps its clean-image top-1 label (a proxy for certified accuracy at r = 0).

    `image_size` first takes each image's centre square at that size (`square_crop`).
    Evaluation only: any folder is allowed, the evaluation set included.
    """
    generator = torch.Generator().manual_seed(seed)
    per_image: list[float] = []
    with torch.inference_mode():
        for path in list_images(folder)[:max_images]:
            image = load_image(path)
            clean = (square_crop(image, image_size) if image_size else image)[None]
            reference = classifier(clean).argmax(1)
            noisy = clean + sigma * torch.randn((noises_per_image, *clean.shape[1:]), generator=generator)
            votes = classifier(denoise(noisy)).argmax(1)
            per_image.append(float((votes == reference).float().mean()))
    return AgreementScores(
        folder=str(folder),
        sigma=sigma,
        images=len(per_image),
        noises_per_image=noises_per_image,
        agreement=sum(per_image) / len(per_image),
        per_image_agreement=per_image,
    )
