"""Every code block of README.md and docs/*.md runs here, or its fence says why it does not.

The convention is README.md's "Writing docs": a fence's first word is the block's language.
``python`` runs as a script (or, when it defines tests, as a pytest file) and ``bash`` with
``bash -euo pipefail``, each in a new folder outside the repository with a copy of samples/,
so nothing of this repository's pytest settings (``asyncio_mode = "auto"``) or working tree
helps it; ``toml`` and ``json`` are parsed, and a service config or price file is loaded by
the function that reads it. ``text`` never runs; ``text output`` is the exact standard output
of the runnable block above it. ``LANG no-run: REASON`` is shown but not run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from apiwrap.budgets import PriceTable
from apiwrap.service import load_config

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = ("python", "bash", "toml", "json")
#: The languages whose blocks print: a ``text output`` block may follow them.
SCRIPTS = ("python", "bash")
NO_RUN = re.compile(r"no-run: \S")
#: Top-level tables that make a TOML block a service config (docs/service.md).
SERVICE_TABLES = {"service", "vendors", "tenants", "metrics"}
#: Longest a block may take; the whole file takes about half a minute on two cores.
BLOCK_TIMEOUT_S = 300

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced code block of a document."""

    document: str  # relative to the repository
    line: int  # of the opening fence, from 1
    language: str
    marker: str  # the rest of the info string
    code: str
    #: The ``text output`` block that follows it, if any: its expected standard output.
    output: str | None = None

    @property
    def where(self) -> str:
        return f"{self.document}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.language in RUNNABLE and not self.marker

    @property
    def is_test_file(self) -> bool:
        """A python block that defines tests: a user's own test file, run by pytest."""
        return (
            self.language == "python" and re.search(r"^def test_", self.code, flags=re.MULTILINE) is not None
        )


def read_blocks(text: str, document: str) -> list[Block]:
    """The fenced blocks of a Markdown text (CommonMark fences); a ``text output`` block is also
    given, as its expected output, to the block before it."""
    blocks: list[Block] = []
    lines = text.split("\n")
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        index += 1
        if opening is None:
            continue
        first_line, fence, indent = index, opening["fence"], opening["indent"]
        language, _, marker = opening["info"].strip().partition(" ")
        body: list[str] = []
        while index < len(lines):
            line = lines[index]
            index += 1
            if _closes(line, fence):
                break
            body.append(line.removeprefix(indent))
        code = "".join(f"{line}\n" for line in body)
        block = Block(document, first_line, language, marker.strip(), code)
        if (block.language, block.marker) == ("text", "output") and blocks:
            blocks[-1] = dataclasses.replace(blocks[-1], output=code)
        blocks.append(block)
    return blocks


def _closes(line: str, fence: str) -> bool:
    """A closing fence: the opening's character, at least as many, and no info string."""
    closing = _FENCE.match(line)
    return (
        bool(closing)
        and closing["fence"][0] == fence[0]
        and len(closing["fence"]) >= len(fence)
        and not closing["info"].strip()
    )


def problems(blocks: list[Block]) -> list[str]:
    """Why each block that neither runs nor says why it does not breaks the convention."""
    found = []
    for previous, block in zip([None, *blocks], blocks, strict=False):
        if block.language == "text":
            if block.marker == "output" and not (previous and previous.runs and previous.language in SCRIPTS):
                found.append(
                    f"{block.where}: a text output block must follow a python or bash block that runs"
                )
            elif block.marker not in ("", "output"):
                found.append(f"{block.where}: text takes no marker but 'output', got {block.marker!r}")
        elif block.language not in RUNNABLE:
            name = block.language or "no language"
            found.append(f"{block.where}: {name}: use one of {', '.join(RUNNABLE)} or text")
        elif block.marker and not NO_RUN.match(block.marker):
            found.append(f"{block.where}: {block.marker!r}: a block that does not run says 'no-run: REASON'")
    return found


BLOCKS = [
    block
    for document in DOCUMENTS
    for block in read_blocks(document.read_text(encoding="utf-8"), str(document.relative_to(ROOT)))
]


def test_every_block_runs_or_says_why_not() -> None:
    assert problems(BLOCKS) == []


def test_the_convention_catches_blocks_that_neither_run_nor_say_why() -> None:
    document = "\n".join(
        [
            "```",
            "a bare fence",
            "```",
            "```sh",
            "ls",
            "```",
            "```python no-run",
            "pass",
            "```",
            "```text output",
            "after a block that does not run",
            "```",
            "```json",
            "{}",
            "```",
            "```text output",
            "after a block that prints nothing",
            "```",
            "````markdown",
            "```python",
            "a fence inside a longer one is text",
            "```",
            "````",
            "  ```bash no-run: indented, in a list item",
            "  sleep 3600",
            "  ```",
            "```python",
            'print("runs")',
            "```",
            "```text output",
            "runs",
            "```",
        ]
    )
    blocks = read_blocks(document, "doc.md")
    assert [(block.line, block.language) for block in blocks] == [
        (1, ""),
        (4, "sh"),
        (7, "python"),
        (10, "text"),
        (13, "json"),
        (16, "text"),
        (19, "markdown"),
        (24, "bash"),
        (27, "python"),
        (30, "text"),
    ]
    assert blocks[7].code == "sleep 3600\n" and not blocks[7].runs
    assert blocks[8].runs and blocks[8].output == "runs\n"
    assert [problem.split(":")[1] for problem in problems(blocks)] == ["1", "4", "7", "10", "16", "19"]


def _execute(block: Block, folder: Path) -> subprocess.CompletedProcess[str]:
    """Run a python or bash block in ``folder``: a user's empty folder outside the repository,
    given the sample images the docs name."""
    shutil.copytree(ROOT / "samples", folder / "samples")
    # The virtual environment's console scripts (apiwrap) first, as in an activated venv.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    environment = {**os.environ, "PATH": path, "PYTHONDONTWRITEBYTECODE": "1"}
    if block.language == "bash":
        command = ["bash", "-euo", "pipefail", "-c", block.code]
    elif block.is_test_file:
        # A user's own test file: the kit's fixtures come from the plugin that installing apiwrap registers.
        (folder / "test_users_own.py").write_text(block.code)
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_users_own.py"]
    else:
        (folder / "example.py").write_text(block.code)
        command = [sys.executable, "example.py"]
    return subprocess.run(
        command, cwd=folder, env=environment, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S
    )


SCRIPT_BLOCKS = [block for block in BLOCKS if block.runs and block.language in SCRIPTS]
CONFIG_BLOCKS = [block for block in BLOCKS if block.runs and block.language not in SCRIPTS]


@pytest.fixture(scope="module")
def script_runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Future[subprocess.CompletedProcess[str]]]]:
    """The selected script blocks, started side by side on every core.

    Most of a block's time is one process starting (imports, a model, an emulator) on one core,
    so running them one after another would leave the other cores idle for most of a minute.
    """
    selected = [
        item.callspec.params["block"]
        for item in request.session.items
        if getattr(item, "originalname", None) == "test_the_script_block_runs_as_written"
    ]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        runs = {
            block.where: pool.submit(_execute, block, tmp_path_factory.mktemp("block")) for block in selected
        }
        yield runs
        for run in runs.values():
            run.cancel()  # those a failed session (pytest -x) never reached


@pytest.mark.parametrize("block", SCRIPT_BLOCKS, ids=lambda block: block.where)
def test_the_script_block_runs_as_written(
    block: Block, script_runs: dict[str, Future[subprocess.CompletedProcess[str]]]
) -> None:
    outcome = script_runs[block.where].result()
    assert outcome.returncode == 0, f"{block.where} failed:\n{outcome.stdout}\n{outcome.stderr}"
    if block.is_test_file:  # pytest 8 skips an async test it cannot run, and exits 0
        assert " skipped" not in outcome.stdout, outcome.stdout
    if block.output is not None:
        assert outcome.stdout == block.output


@pytest.mark.parametrize("block", CONFIG_BLOCKS, ids=lambda block: block.where)
def test_the_config_block_reads_as_written(block: Block, tmp_path: Path) -> None:
    if block.language == "json":
        json.loads(block.code)
        return
    data = tomllib.loads(block.code)
    if SERVICE_TABLES & data.keys():
        path = tmp_path / "service.toml"
        path.write_text(block.code)
        load_config(path)
    elif "prices" in data:
        path = tmp_path / "prices.toml"
        path.write_text(block.code)
        PriceTable.load(path)
