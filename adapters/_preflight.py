"""Pre-flight checks on the exact bytes an adapter is about to send.

A vendor charges for (or at least counts) a request it then rejects, so every adapter
checks the vendor's documented limits locally first and returns :class:`Rejected`
without sending anything.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from apiwrap.adapters.base import ImageLimits, VendorAnswer
from apiwrap.adapters.errors import Rejected, VendorError
from apiwrap.errors import ImageError
from apiwrap.imaging import read_header

__all__ = ["check_image", "label_one_at_a_time", "probe_image"]


def probe_image(data: bytes) -> tuple[int, int, str]:
    """Width, height and format name (``"PNG"``, ``"JPEG"``, ...) read from the header only."""
    try:
        header = read_header(data)
    except ImageError as exc:
        raise Rejected("the bytes are not an image in a format that can be identified") from exc
    return header.width, header.height, header.format


def check_image(data: bytes, limits: ImageLimits, max_pixels: int | None = None) -> None:
    """Raise :class:`Rejected` if ``data`` breaks ``limits`` (or has more than ``max_pixels``)."""
    if len(data) > limits.max_bytes:
        # Checked before decoding: an oversize upload must be refused even if it is garbage.
        raise Rejected(f"image is {len(data)} bytes; the vendor accepts at most {limits.max_bytes}")
    width, height, image_format = probe_image(data)
    limits.check(len(data), width, height, image_format)
    if max_pixels is not None and width * height > max_pixels:
        raise Rejected(f"image has {width * height} pixels; the vendor accepts at most {max_pixels}")


async def label_one_at_a_time(
    vendor: str,
    images: Sequence[bytes],
    limits: ImageLimits,
    label: Callable[[bytes], Awaitable[VendorAnswer]],
) -> list[VendorAnswer | VendorError]:
    """``label_batch`` for a vendor that takes one image per request.

    The engine sends one image per call to such a vendor; more is a programming error. An
    image that breaks the limits gets :class:`Rejected` in its slot and is never sent.
    """
    if len(images) > 1:
        raise ValueError(f"{vendor} takes 1 image per call, got {len(images)}")
    results: list[VendorAnswer | VendorError] = []
    for image in images:
        try:
            check_image(image, limits)
        except Rejected as exc:
            results.append(exc)
            continue
        results.append(await label(image))
    return results
