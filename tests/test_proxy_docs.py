"""The "after" snippets of docs/proxy.md, run as written against a live proxy.

Each one's host, port and keys are put in place of the placeholders it shows, and it must
print what its last line's comment says. One server serves the four doors, in front of the AWS
wire emulator (a door certifies against the default vendor when the server has none of its name).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from apiwrap.testing import fake_classify
from tests.proxy_kit import API_KEYS, AWS_KEYS, RED, proxy_config, proxy_server, vendor_emulator
from tests.test_docs import ROOT, Block, read_blocks

MARKER = "tests/test_proxy_docs.py runs it"
PLACEHOLDERS = {
    "http://127.0.0.1:8000": None,  # the live server's base URL
    "aw_YOUR_TENANT_KEY": API_KEYS["alice"],
    "AKIAYOURTENANTKEYID0": AWS_KEYS["alice"][0],
    "your-tenant-secret": AWS_KEYS["alice"][1],
}


def _snippets() -> list[Block]:
    document = ROOT / "docs" / "proxy.md"
    return [block for block in read_blocks(document.read_text(), "docs/proxy.md") if MARKER in block.marker]


def test_every_door_has_a_snippet_that_runs_here() -> None:
    doors = {
        door for door in ("/aws", "/google", "/azure", "/clarifai") for b in _snippets() if door in b.code
    }
    assert doors == {"/aws", "/google", "/azure", "/clarifai"}


@pytest.mark.parametrize("block", _snippets(), ids=lambda block: block.where)
def test_a_proxy_snippet_prints_what_it_says(block: Block, tmp_path: Path) -> None:
    assert fake_classify([RED])[0][0][0] == "goldfish"  # the photo the snippets read
    (tmp_path / "photo.png").write_bytes(RED)
    expected = block.code.rstrip().rsplit("  # ", 1)[1]
    with (
        vendor_emulator("aws") as vendor,
        proxy_server(proxy_config(tmp_path, "aws", vendor.endpoint)) as base,
    ):
        code = block.code
        for placeholder, value in PLACEHOLDERS.items():
            code = code.replace(placeholder, value or base)
        ran = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == expected
