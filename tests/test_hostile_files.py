"""Hostile files: a bomb, a path given twice, names that read as Rich markup; the batch goes on."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from apiwrap.cli import app
from apiwrap.engine.images import find_images, load_image
from apiwrap.errors import ImageError
from apiwrap.imaging import read_header

SAMPLE = sorted((Path(__file__).resolve().parents[1] / "samples").glob("*.png"))[0]
runner = CliRunner()
CHEAP = ["--vendor", "local", "--denoiser", "none", "--n", "2", "--alpha", "0.5", "--size", "64"]


def _said(result: Result) -> str:
    return " ".join(result.output.split())


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _bomb(side: int = 30_000) -> bytes:
    """A small PNG whose header declares side x side pixels: Pillow refuses it when opening it
    (DecompressionBombError, neither OSError nor ValueError)."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b""))
        + _chunk(b"IEND", b"")
    )


def test_a_decompression_bomb_is_an_image_error_on_every_decode_path() -> None:
    with pytest.raises(ImageError, match=r"bomb\.png: image is too large to decode safely"):
        read_header(_bomb(), name="bomb.png")
    with pytest.raises(ImageError, match=r"bomb\.png: image is too large to decode safely"):
        load_image(_bomb(), name="bomb.png")


def test_a_bomb_in_a_batch_fails_alone(tmp_path: Path) -> None:
    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / "bomb.png").write_bytes(_bomb())
    for index in range(3):
        shutil.copy(SAMPLE, folder / f"good{index}.png")
    out = tmp_path / "results.jsonl"
    result = runner.invoke(
        app, ["certify", str(folder), *CHEAP, "--runs-dir", str(tmp_path / "runs"), "--out", str(out)]
    )
    assert result.exit_code == 3, result.output  # an image failed; the others ran
    assert "bomb.png: FAILED" in _said(result) and "too large to decode safely" in _said(result)
    lines = {Path(row["image"]).name: row for row in map(json.loads, out.read_text().splitlines())}
    assert lines["bomb.png"]["status"] == "failed"
    assert [lines[f"good{index}.png"]["status"] != "failed" for index in range(3)] == [True] * 3


def test_a_file_reached_twice_is_certified_once_in_the_order_first_met(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        shutil.copy(SAMPLE, folder / name)
    again = tmp_path / "d" / ".." / "d" / "a.png"
    assert find_images([folder / "b.png", folder, again]) == [folder / "b.png", folder / "a.png"]

    out = tmp_path / "results.jsonl"
    args = ["certify", str(folder), str(folder / "b.png"), *CHEAP, "--runs-dir", str(tmp_path / "runs")]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    # one line per file (lines come in the order images finish)
    names = [Path(json.loads(line)["image"]).name for line in out.read_text().splitlines()]
    assert sorted(names) == ["a.png", "b.png"]


def test_names_and_errors_that_read_as_markup_are_printed_as_they_are(tmp_path: Path) -> None:
    folder = tmp_path / "x[" / "y]"  # the folder x[/y]: "[/y]" would close a Rich tag
    folder.mkdir(parents=True)
    shutil.copy(SAMPLE, folder / "[bold]good.png")
    (folder / "broken[red].png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    result = runner.invoke(app, ["certify", str(folder), *CHEAP, "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 3, result.output
    said = _said(result)
    assert "Certified accuracy" in said  # the summary after the job is printed whole
    assert "[bold]good.png: " in said
    assert f"broken[red].png: FAILED {folder}/broken[red].png: image data is corrupt" in said
    assert "1 image(s) failed: broken[red].png" in said
