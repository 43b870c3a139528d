"""Pre-flight checks on the exact bytes an adapter is about to send.

A vendor charges for (or at least counts) a request it then rejects, so every adapter
checks the vendor's documented limits locally first and returns :class:`Rejected`
without sending anything.
"""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

from adapters.base import ImageLimits
from adapters.errors import Rejected

__all__ = ["check_image", "probe_image"]


def probe_image(data: bytes) -> tuple[int, int, str]:
    """Width, height and format name (``"PNG"``, ``"JPEG"``, ...) read from the header only."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.width, image.height, image.format or "UNKNOWN"
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise Rejected("the bytes are not an image in a format that can be identified") from exc


def check_image(data: bytes, limits: ImageLimits, max_pixels: int | None = None) -> None:
    """Raise :class:`Rejected` if ``data`` breaks ``limits`` (or has more than ``max_pixels``)."""
    if len(data) > limits.max_bytes:
        # Checked before decoding: an oversize upload must be refused even if it is garbage.
        raise Rejected(f"image is {len(data)} bytes; the vendor accepts at most {limits.max_bytes}")
    width, height, image_format = probe_image(data)
    limits.check(len(data), width, height, image_format)
    if max_pixels is not None and width * height > max_pixels:
        raise Rejected(f"image has {width * height} pixels; the vendor accepts at most {max_pixels}")
