"""Reading user images: every supported mode becomes 8-bit RGB; bad files fail alone."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from apiwrap.engine.images import encode_png, find_images, load_image, to_uint8
from apiwrap.errors import ImageError


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


GRADIENT = np.linspace(0, 255, 48 * 40 * 3).reshape(48, 40, 3).astype(np.uint8)


@pytest.mark.parametrize(
    ("image", "fmt"),
    [
        (Image.fromarray(GRADIENT), "PNG"),
        (Image.fromarray(GRADIENT), "JPEG"),
        (Image.fromarray(GRADIENT), "WEBP"),
        (Image.fromarray(GRADIENT).convert("L"), "PNG"),
        (Image.fromarray(GRADIENT).convert("P"), "PNG"),
        (Image.fromarray(GRADIENT).convert("RGBA"), "PNG"),
        (Image.fromarray(GRADIENT).convert("LA"), "PNG"),
        (Image.fromarray(GRADIENT).convert("CMYK"), "JPEG"),
        (Image.fromarray(GRADIENT[..., 0].astype(np.uint16) * 257), "PNG"),
    ],
    ids=["rgb-png", "jpeg", "webp", "gray", "palette", "rgba", "gray-alpha", "cmyk-jpeg", "16-bit"],
)
def test_every_mode_becomes_rgb_floats(image: Image.Image, fmt: str) -> None:
    loaded = load_image(_encode(image, fmt), name="x")
    assert loaded.pixels.shape == (48, 40, 3)
    assert loaded.pixels.dtype == np.float32
    assert loaded.pixels.min() >= 0.0 and loaded.pixels.max() <= 1.0


def test_sixteen_bit_is_scaled_not_clipped() -> None:
    wide = np.full((8, 8), 65535, dtype=np.uint16)
    wide[0, 0] = 32896  # 128 * 257
    loaded = load_image(_encode(Image.fromarray(wide), "PNG"), name="x")
    assert loaded.pixels[1, 1, 0] == pytest.approx(1.0)
    assert loaded.pixels[0, 0, 0] == pytest.approx(128 / 255)


def test_transparency_is_composited_on_white() -> None:
    clear = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert np.allclose(load_image(_encode(clear, "PNG"), name="x").pixels, 1.0)


def test_digest_names_pixels_not_files() -> None:
    png = load_image(_encode(Image.fromarray(GRADIENT), "PNG"), name="a")
    again = load_image(_encode(Image.fromarray(GRADIENT), "PNG"), name="b")
    assert png.digest == again.digest
    other = load_image(_encode(Image.fromarray(255 - GRADIENT), "PNG"), name="c")
    assert other.digest != png.digest


def test_resize_crops_to_a_square_and_remembers_the_original() -> None:
    loaded = load_image(_encode(Image.fromarray(GRADIENT), "PNG"), name="x", size=32)
    assert loaded.shape == (32, 32, 3)
    assert loaded.resized_from == (40, 48)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"this is not an image at all", "not a readable image"),
        (_encode(Image.fromarray(GRADIENT), "PNG")[:200], "corrupt or truncated"),
        (_encode(Image.fromarray(GRADIENT), "GIF"), "not supported"),
    ],
    ids=["empty", "garbage", "truncated", "gif"],
)
def test_bad_input_raises_a_clear_image_error(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message) as info:
        load_image(data, name="broken.png")
    assert "broken.png" in str(info.value)


def test_decompression_bomb_is_refused_before_decoding() -> None:
    bomb = _encode(Image.new("1", (10_000, 10_000)), "PNG")  # 100 MP in a few kB
    assert len(bomb) < 100_000
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(bomb, name="bomb.png")


def test_missing_file_is_an_image_error(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="cannot read"):
        load_image(tmp_path / "nope.png")


def test_find_images_expands_folders_and_keeps_files(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    for name in ("b.png", "a.JPG", "notes.txt"):
        (folder / name).write_bytes(b"x")
    loose = tmp_path / "loose.dat"
    assert [p.name for p in find_images([folder, loose])] == ["a.JPG", "b.png", "loose.dat"]


def test_png_encoding_is_lossless_and_deterministic() -> None:
    pixels = to_uint8(np.random.default_rng(1).random((16, 16, 3)))
    data = encode_png(pixels)
    assert data == encode_png(pixels.copy())
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), pixels)


def test_quantisation_clips_and_rounds() -> None:
    assert to_uint8(np.array([-0.3, 0.0, 0.6 / 255, 1.4 / 255, 1.0, 1.7])).tolist() == [0, 0, 1, 1, 255, 255]
