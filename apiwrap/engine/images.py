"""Images as a job certifies them: found, checked against the vendor's limits, decoded, resized.

Decoding and encoding are :mod:`apiwrap.imaging`'s (one place for every package): a corrupt,
truncated, empty or oversized file raises :class:`ImageError` naming the file and the
problem, so a batch can skip that one image. Samples are quantised to 8 bits and encoded as
lossless PNG with fixed settings, so the same pixels always give the same bytes (the journal
records their digest).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from apiwrap.adapters.base import ImageLimits
from apiwrap.errors import ImageError
from apiwrap.imaging import MAX_PIXELS, SUPPORTED_FORMATS, decode_rgb8, encode_png, read_header

__all__ = [
    "DECODE_BYTES_PER_PIXEL",
    "ENCODING",
    "MAX_PIXELS",
    "SUPPORTED_FORMATS",
    "SourceImage",
    "check_vendor_limits",
    "encode_png",
    "find_images",
    "load_image",
    "to_uint8",
]

#: Peak memory of decoding (and resizing) one source image, per source pixel: the bound
#: docs/reliability.md states and tests/test_reliability.py measures (288 MB for 24 MP).
DECODE_BYTES_PER_PIXEL = 12
#: Recorded with every job: the sample encoding is part of the base classifier.
ENCODING = "png-rgb8-compress1-v1"
_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


@dataclass(frozen=True)
class SourceImage:
    """An image as certified: RGB floats in [0, 1] at the resolution sent to the vendor."""

    name: str
    pixels: np.ndarray  # (H, W, 3) float32 in [0, 1]
    digest: str  # sha256 of the 8-bit pixels and their shape: names the image, not its file
    resized_from: tuple[int, int] | None = None  # (width, height) before --size

    @property
    def shape(self) -> tuple[int, int, int]:
        height, width, channels = self.pixels.shape
        return height, width, channels


def find_images(paths: list[Path]) -> list[Path]:
    """Expand folders into their image files (sorted); files are kept as given. A file reached
    twice (``d`` and ``d/a.png``, or two spellings of one path) is kept once, where first met: a
    job certifies each file once."""
    found: dict[Path, Path] = {}
    for path in paths:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in _SUFFIXES and p.is_file())
        else:
            files = [path]
        for file in files:
            found.setdefault(file.resolve(), file)
    return list(found.values())


def _resize_and_crop(image: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to ``size`` and centre-crop a square (like ImageNet eval)."""
    return ImageOps.fit(image, (size, size), method=Image.Resampling.BICUBIC, centering=(0.5, 0.5))


def load_image(source: Path | bytes, *, name: str | None = None, size: int | None = None) -> SourceImage:
    """Decode, validate and convert one image; raises :class:`ImageError` on any problem."""
    label = name or (str(source) if isinstance(source, Path) else "<upload>")
    image = decode_rgb8(source, name=label)
    original = image.size
    if size is not None:
        image = _resize_and_crop(image, size)
    pixels8 = np.asarray(image, dtype=np.uint8)
    digest = hashlib.sha256(repr(pixels8.shape).encode() + pixels8.tobytes()).hexdigest()
    return SourceImage(
        name=label,
        pixels=pixels8.astype(np.float32) / 255.0,
        digest=digest,
        resized_from=original if size is not None else None,
    )


def check_vendor_limits(
    source: Path | bytes, limits: ImageLimits, *, name: str, size: int | None = None
) -> None:
    """Refuse, from the file's header alone, an image whose samples the vendor would refuse.

    Runs before the image is decoded and before any query: an image that cannot be sent is
    a failed image, never an abstention bought with failed queries. A noisy sample is
    close to incompressible, so its PNG takes about width x height x 3 bytes; an image
    whose samples would pass the vendor's byte limit is refused here rather than after
    every one of its queries is rejected. This also bounds the memory of a job: no image
    is decoded whose samples are larger than the vendor takes (--size makes them smaller).
    """
    try:
        header = read_header(source, name=name)
    except ImageError:
        return  # load_image names what is wrong with an unreadable file
    width, height = header.width, header.height
    sent_width, sent_height = (size, size) if size is not None else (width, height)
    given = f"{width}x{height}" + (f" (sent as {size}x{size} with --size)" if size is not None else "")
    if min(sent_width, sent_height) < limits.min_side:
        raise ImageError(
            f"{name}: {given} is too small; the vendor accepts sides of at least {limits.min_side} pixels"
        )
    if max(sent_width, sent_height) > limits.max_side:
        raise ImageError(
            f"{name}: {given} is too large; the vendor accepts sides of at most {limits.max_side} pixels "
            "(use --size)"
        )
    sample_bytes = sent_width * sent_height * 3
    if sample_bytes > limits.max_bytes:
        raise ImageError(
            f"{name}: {given} is too large; a noisy sample of it takes about {sample_bytes:,} bytes as "
            f"PNG and the vendor accepts at most {limits.max_bytes:,} (use --size)"
        )


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Clip to [0, 1] and round to 8 bits (part of the base classifier, so deterministic)."""
    return np.rint(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)
