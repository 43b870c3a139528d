"""The one place images are decoded and encoded (Pillow): headers, RGB pixels, sample PNGs.

Every package reads images through here, so formats, modes, size limits and error messages
are the same for the CLI, the service, the adapters' pre-flight checks, the emulators, the
reports and the denoisers' training data:

- :func:`read_header`: format and size from the header alone (no pixel is decoded).
- :func:`decode_rgb8`: PNG, JPEG or WebP of any mode (grayscale, palette, alpha, 16-bit,
  CMYK) to 8-bit RGB; transparency is composited onto white.
- :func:`encode_png`: lossless PNG with fixed settings, so the same pixels give the same bytes.

A corrupt, truncated, empty or oversized image raises :class:`~apiwrap.errors.ImageError`
naming the image and the problem, and so does any other failure of Pillow on the bytes given
(a decompression bomb, a crafted header that trips one of its decoders): user bytes never end a
batch. This module imports only Pillow, numpy and the error tree.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from apiwrap.errors import ImageError

__all__ = ["MAX_PIXELS", "SUPPORTED_FORMATS", "ImageHeader", "decode_rgb8", "encode_png", "read_header"]

SUPPORTED_FORMATS = frozenset({"PNG", "JPEG", "WEBP"})
#: Images above this many pixels are refused before decoding (decompression bombs).
MAX_PIXELS = 40_000_000


@dataclass(frozen=True, slots=True)
class ImageHeader:
    width: int
    height: int
    format: str  # Pillow's name: "PNG", "JPEG", "WEBP", ...


def _open(source: Path | bytes) -> Image.Image:
    return Image.open(source if isinstance(source, Path) else io.BytesIO(source))


def read_header(source: Path | bytes, *, name: str = "<image>") -> ImageHeader:
    """Format and size read from the header only; :class:`ImageError` if it cannot be identified."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # a header is harmless
            with _open(source) as opened:
                return ImageHeader(opened.width, opened.height, opened.format or "UNKNOWN")
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{name}: image is too large to decode safely ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(f"{name}: not a readable image (corrupt or unknown format)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{name}: corrupt image header ({exc})") from exc
    except Exception as exc:  # any other failure of a decoder on hostile bytes: this image's alone
        raise ImageError(f"{name}: Pillow cannot read its header ({type(exc).__name__}: {exc})") from exc


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in {"I;16", "I;16B", "I;16L", "I"}:
        # 16-bit and 32-bit integer grayscale: scale to 8 bits rather than clip.
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(np.rint(array / peak * 255.0), 0, 255).astype(np.uint8))
    if image.mode in {"RGBA", "LA", "PA"} or (image.mode == "P" and "transparency" in image.info):
        # Composite transparency onto white, as vendors' decoders commonly do.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def decode_rgb8(source: Path | bytes, *, name: str = "<image>", max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode one PNG, JPEG or WebP image to 8-bit RGB; :class:`ImageError` on any problem.

    Returns the Pillow image (``np.asarray`` gives its (H, W, 3) uint8 pixels) so a caller
    can resize it before paying for an array.
    """
    try:
        data = source.read_bytes() if isinstance(source, Path) else source
    except OSError as exc:
        raise ImageError(f"{name}: cannot read file ({exc.strerror or exc})") from exc
    if not data:
        raise ImageError(f"{name}: file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as opened:
                if opened.format not in SUPPORTED_FORMATS:
                    raise ImageError(
                        f"{name}: format {opened.format} is not supported; use PNG, JPEG or WebP"
                    )
                width, height = opened.size
                if width * height > max_pixels:
                    raise ImageError(
                        f"{name}: {width}x{height} pixels exceeds the limit of {max_pixels:,} "
                        "(possible decompression bomb)"
                    )
                opened.load()
                return _to_rgb(opened)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{name}: image is too large to decode safely ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(f"{name}: not a readable image (corrupt or unknown format)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{name}: image data is corrupt or truncated ({exc})") from exc
    except MemoryError as exc:
        raise ImageError(f"{name}: not enough memory to decode it") from exc
    except Exception as exc:  # any other failure of a decoder on hostile bytes: this image's alone
        raise ImageError(f"{name}: Pillow cannot decode it ({type(exc).__name__}: {exc})") from exc


def encode_png(pixels: np.ndarray) -> bytes:
    """Lossless PNG of an (H, W, 3) uint8 array with fixed settings (same pixels, same bytes)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1, optimize=False)
    return buffer.getvalue()
