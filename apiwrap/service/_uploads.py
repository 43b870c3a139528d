"""Reading images out of requests, with every limit checked before any work is done.

Order of checks: the body's size (Content-Length, then the bytes actually streamed: see
:class:`~apiwrap.service._http.BodyLimit`), the content type, each image's format and pixel
count from its header, then a full decode with :func:`apiwrap.engine.images.load_image` (the
function the engine uses), so a job only starts on images the engine will accept. Upload file
names are kept as labels; they never reach a path.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError
from starlette.datastructures import UploadFile
from starlette.requests import Request

from apiwrap.engine.images import load_image
from apiwrap.errors import ImageError
from apiwrap.imaging import SUPPORTED_FORMATS, read_header
from apiwrap.service._errors import InvalidRequest, UnsupportedImage

__all__ = ["IMAGE_MEDIA_TYPES", "Upload", "check_image", "read_upload"]

#: Raw-body content types accepted for one image (octet-stream: the format is sniffed).
IMAGE_MEDIA_TYPES = ("image/png", "image/jpeg", "image/webp", "application/octet-stream")
_MAX_FILENAME = 200


@dataclass(frozen=True)
class Upload:
    """Images (client file name, bytes) and the text fields of a multipart form."""

    images: list[tuple[str, bytes]]
    fields: dict[str, str]


def _filename(name: str | None, position: int) -> str:
    # A label for results only: printable, bounded, never a path.
    cleaned = "".join(ch for ch in (name or "") if ch.isprintable())[:_MAX_FILENAME]
    return cleaned or f"upload-{position}"


async def read_upload(request: Request, *, max_files: int) -> Upload:
    """The images of a request: a raw image body, or a multipart form with file parts."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        form = await request.form(max_files=max_files, max_fields=32)
        images: list[tuple[str, bytes]] = []
        fields: dict[str, str] = {}
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                images.append((_filename(value.filename, len(images)), await value.read()))
            else:
                fields[key] = value
        await form.close()
        if not images:
            raise InvalidRequest("the form has no file part (send the image as 'file')")
        return Upload(images, fields)
    if media_type in IMAGE_MEDIA_TYPES:
        return Upload([("upload", await request.body())], {})
    raise UnsupportedImage(
        f"content type {media_type or 'missing'!r}: send an image ({', '.join(IMAGE_MEDIA_TYPES)}) "
        "or multipart/form-data"
    )


def check_image(name: str, data: bytes, *, max_pixels: int, size: int | None) -> tuple[int, int]:
    """(width, height) as certified; 415 for a format we do not take, 422 for too many pixels or
    an undecodable image."""
    if not data:
        raise InvalidRequest(f"{name}: the image is empty")
    try:
        header = read_header(data, name=name)
    except Image.DecompressionBombError:
        # Pillow refuses to open a header declaring that many pixels at all: far over any limit here.
        raise InvalidRequest(f"{name}: the header declares over the limit of {max_pixels:,} pixels") from None
    except ImageError as exc:
        if isinstance(exc.__cause__, UnidentifiedImageError):
            raise UnsupportedImage(f"{name}: not a PNG, JPEG or WebP image") from None
        raise InvalidRequest(str(exc)) from None
    image_format, width, height = header.format, header.width, header.height
    if image_format not in SUPPORTED_FORMATS:
        raise UnsupportedImage(f"{name}: format {image_format} is not supported; use PNG, JPEG or WebP")
    if width * height > max_pixels:
        raise InvalidRequest(f"{name}: {width}x{height} is over the limit of {max_pixels:,} pixels")
    image = load_image(data, name=name, size=size)  # ImageError (corrupt, truncated): 422 by the table
    height, width, _ = image.shape
    return width, height
