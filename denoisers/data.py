"""Image folders for denoiser training and evaluation: loading, the evaluation-set guard,
and seeded random crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.nn import functional

from apiwrap.imaging import decode_rgb8

__all__ = [
    "FORBIDDEN_TRAINING_FOLDERS",
    "IMAGE_SUFFIXES",
    "RandomCropSampler",
    "ensure_not_evaluation_set",
    "list_images",
    "load_image",
    "load_images",
]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})

# The certification experiments run on these images; a denoiser trained on them would make
# every reported certified accuracy optimistic.
FORBIDDEN_TRAINING_FOLDERS = frozenset({"imagenet-api-dev"})


def ensure_not_evaluation_set(folder: str | Path) -> None:
    """Raises ValueError when `folder` is, contains or lies inside an evaluation-only data set."""
    root = Path(folder).resolve()
    if FORBIDDEN_TRAINING_FOLDERS & set(root.parts):
        raise ValueError(
            f"refusing to train on {folder}: imagenet-api-dev is the evaluation set, never training data"
        )
    if root.is_dir():
        for path in root.rglob("*"):
            # symlinks are resolved so that a link into the evaluation set is caught too
            if FORBIDDEN_TRAINING_FOLDERS & set(path.resolve().parts):
                raise ValueError(
                    f"refusing to train on {folder}: it contains {path}, "
                    "part of imagenet-api-dev, the evaluation set"
                )


def list_images(folder: str | Path) -> list[Path]:
    """All image files under `folder` (recursive), sorted so that seeded runs see the same order."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    paths = sorted(path for path in root.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}")
    return paths


def load_image(path: str | Path) -> torch.Tensor:
    """One RGB image as a float32 (3, H, W) tensor in [0, 1]."""
    array = np.asarray(decode_rgb8(Path(path), name=str(path)), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def load_images(folder: str | Path) -> list[torch.Tensor]:
    """Every image under `folder` as uint8 (3, H, W) tensors: four times smaller than float in memory."""
    return [(load_image(path) * 255).round_().to(torch.uint8) for path in list_images(folder)]


class RandomCropSampler:
    """Seeded batches of random square crops with random horizontal flips from images held in memory.

    With `min_scale < 1` a crop is a random-resized crop: a square whose side is a random
    fraction (in [min_scale, 1]) of the image's shorter side, resized to `crop_size`. That
    brings high-resolution photos to the object scale of a 224x224 ImageNet image.
    """

    def __init__(
        self, images: list[torch.Tensor], crop_size: int, *, min_scale: float = 1.0, seed: int = 0
    ) -> None:
        if not images:
            raise ValueError("no images to crop from")
        if not 0.0 < min_scale <= 1.0:
            raise ValueError(f"min_scale must lie in (0, 1], got {min_scale}")
        too_small = [index for index, image in enumerate(images) if min(image.shape[-2:]) < crop_size]
        if too_small and min_scale == 1.0:
            raise ValueError(f"{len(too_small)} image(s) are smaller than the crop size {crop_size}")
        self.images = images
        self.crop_size = crop_size
        self.min_scale = min_scale
        self.generator = torch.Generator().manual_seed(seed)

    def _randint(self, high: int) -> int:
        return int(torch.randint(high, (1,), generator=self.generator))

    def _crop(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        if self.min_scale < 1.0:
            uniform = float(torch.rand((), generator=self.generator))
            fraction = self.min_scale + (1.0 - self.min_scale) * uniform
            side = max(8, round(fraction * min(height, width)))
        else:
            side = self.crop_size
        top, left = self._randint(height - side + 1), self._randint(width - side + 1)
        crop = image[:, top : top + side, left : left + side].float().div_(255.0)
        if side != self.crop_size:
            crop = functional.interpolate(
                crop[None], size=(self.crop_size, self.crop_size), mode="bilinear", antialias=True
            )[0].clamp_(0.0, 1.0)
        # horizontal flips only: classifiers used in Stab training never see upside-down scenes
        if self._randint(2):
            crop = crop.flip(-1)
        return crop

    def sample(self, batch_size: int) -> torch.Tensor:
        """A float32 (batch_size, 3, crop_size, crop_size) batch in [0, 1]."""
        crops = [self._crop(self.images[self._randint(len(self.images))]) for _ in range(batch_size)]
        return torch.stack(crops)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])
