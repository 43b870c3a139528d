"""The command line end to end on the embedded local vendor (real classifier, few samples)."""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from apiwrap.cli import app
from apiwrap.cli import main as cli_main
from apiwrap.denoisers import recommended_denoiser

SAMPLE = sorted((Path(__file__).resolve().parents[1] / "samples").glob("*.png"))[0]
runner = CliRunner()


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(SAMPLE, folder / SAMPLE.name)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return folder


def test_certify_prints_lines_summary_and_writes_jsonl(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    args = ["certify", str(_folder(tmp_path)), "--n0", "2", "--n", "6", "--alpha", "0.05", "--size", "160"]
    result = runner.invoke(
        app, [*args, "--runs-dir", str(tmp_path / "runs"), "--job", "cli", "--out", str(out)]
    )
    assert result.exit_code == 3, result.output  # an image failed
    assert "broken.png: FAILED" in result.output
    assert "Certified accuracy" in result.output
    assert "160x160 pixels after resizing" in result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    good = next(line for line in lines if line["image"].endswith(SAMPLE.name))
    # the default candidate is the vendor's clean label: no selection query is bought
    assert good["queries"] == 1 + 6
    assert good["reference_label"] and good["candidate"] == good["reference_label"]
    assert f"denoiser {recommended_denoiser(0.25)}" in result.output  # --denoiser auto, named

    replayed = runner.invoke(app, ["replay", "cli", "--runs-dir", str(tmp_path / "runs")])
    assert replayed.exit_code == 0, replayed.output
    assert SAMPLE.name in replayed.output


def test_resuming_with_other_parameters_is_a_clear_error(tmp_path: Path) -> None:
    base = ["certify", str(SAMPLE), "--n0", "1", "--n", "2", "--runs-dir", str(tmp_path), "--job", "j"]
    assert runner.invoke(app, base).exit_code == 0
    changed = runner.invoke(app, [*base, "--sigma", "0.5"])
    assert changed.exit_code == 2
    assert "other parameters" in changed.output


def test_estimate_prints_the_worst_case(tmp_path: Path) -> None:
    result = runner.invoke(app, ["estimate", str(SAMPLE), "--vendor", "aws", "--n0", "20", "--n", "100"])
    assert result.exit_code == 0, result.output
    assert "101" in result.output  # queries: 1 clean + 100 (the clean label is the candidate)
    cohen = runner.invoke(
        app, ["estimate", str(SAMPLE), "--vendor", "aws", "--n0", "20", "--n", "100", "--selection", "leader"]
    )
    assert "$0.101" in result.output
    assert "121" in cohen.output  # queries: 1 clean + 20 selection + 100
    assert "$0.121" in cohen.output


def test_bad_arguments_fail_with_a_message(tmp_path: Path) -> None:
    result = runner.invoke(app, ["certify", str(SAMPLE), "--alpha", "2", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "alpha" in result.output
    unknown = runner.invoke(app, ["certify", str(SAMPLE), "--vendor", "nope", "--runs-dir", str(tmp_path)])
    assert unknown.exit_code == 2
    assert "unknown vendor" in unknown.output


def test_target_radius_runs_a_sequential_design(tmp_path: Path) -> None:
    out = tmp_path / "seq.jsonl"
    args = ["certify", str(SAMPLE), "--target-radius", "0.25", "--selection", "clean", "--max-queries", "30"]
    result = runner.invoke(app, [*args, "--runs-dir", str(tmp_path), "--job", "seq", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "sequential (radius >= 0.25" in result.output
    (line,) = [json.loads(text) for text in out.read_text().splitlines()]
    assert line["queries"] <= 1 + 30  # the clean query, then at most the cap; no selection votes
    assert line["candidate"] == line["reference_label"]


def test_a_budgeted_sequential_job_reports_what_the_budget_bought(tmp_path: Path) -> None:
    args = [
        "certify",
        str(_folder(tmp_path)),
        "--target-radius",
        "0.25",
        "--selection",
        "clean",
        "--denoiser",
        "fast-stab-s025",
    ]
    # Without the futility rule, which could give the image up before the budget runs out.
    budget = ["--max-queries", "200", "--max-job-queries", "12", "--size", "160", "--futility", "0"]
    result = runner.invoke(app, [*args, *budget, "--runs-dir", str(tmp_path), "--job", "budgeted"])
    assert result.exit_code == 4, result.output  # the budget ran out
    assert "What the budget bought" in result.output
    assert "unfunded" in result.output
    assert f"{SAMPLE.name}: UNFUNDED (budget exhausted;" in result.output
    assert "broken.png: FAILED" in result.output  # a bad image neither blocks nor stalls the rounds
    spent = int(result.output.split(" billable queries")[0].rsplit("for ", 1)[1])
    assert 1 <= spent <= 12


def test_eval_denoiser_reports_quality_and_classifier_agreement(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(SAMPLE, folder / SAMPLE.name)
    args = ["eval-denoiser", "fast-mse-s025", "--data", str(folder), "--noises", "2", "--image-size", "96"]
    result = runner.invoke(app, [*args, "--agreement", "efficientnet-lite0"])
    assert result.exit_code == 0, result.output
    assert "PSNR" in result.output and "centre squares at 96px" in result.output
    assert "efficientnet-lite0" in result.output

    unknown = runner.invoke(app, [*args, "--agreement", "resnet-50"])
    assert unknown.exit_code != 0
    assert "unknown classifier resnet-50" in unknown.output


def test_version_and_readable_help() -> None:
    from apiwrap import __version__

    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.output.strip() == f"apiwrap {__version__}"
    wide = {"COLUMNS": "200"}
    shown = runner.invoke(app, ["certify", "--help"], prog_name="apiwrap", env=wide)
    assert shown.exit_code == 0
    for panel in ("Vendor", "Certification", "Sequential design", "Budget", "Rate, retries", "Job, journal"):
        assert f"─ {panel}" in shown.output
    assert "Usage: apiwrap certify [OPTIONS] PATH..." in shown.output
    for unreadable in ("<list[", "<bool>", "{PATH", "{images}"):
        assert unreadable not in shown.output
    serve = runner.invoke(app, ["serve", "--help"], env=wide)
    assert "Add a [metrics] key" in serve.output
    root = runner.invoke(app, ["--help"], env=wide)
    assert "--version" in root.output and "<bool>" not in root.output


def test_no_help_text_loses_brackets_to_rich_markup() -> None:
    import typer
    from rich.text import Text

    root = typer.main.get_command(app)
    for name, command in root.commands.items():  # type: ignore[attr-defined]
        for param in command.params:
            text = getattr(param, "help", None) or ""
            # What Rich shows must be the text itself, a "\[" standing for "[".
            assert Text.from_markup(text).plain == text.replace("\\[", "["), (name, param.name)


def _recording_console(monkeypatch: pytest.MonkeyPatch) -> Console:
    recording = Console(file=io.StringIO(), force_terminal=True, width=200, record=True)
    monkeypatch.setattr(cli_main, "console", recording)
    return recording


def test_the_progress_shows_images_queries_money_and_reused_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text('[prices.local]\nusd_per_1000 = "2.00"\n')  # $0.002 a query
    args = ["certify", str(SAMPLE), "--n", "6", "--denoiser", "none", "--size", "64", "--max-usd", "2.50"]
    args += ["--runs-dir", str(tmp_path), "--job", "shown", "--out", str(tmp_path / "out.jsonl")]
    args += ["--prices", str(prices)]
    first = _recording_console(monkeypatch)
    assert runner.invoke(app, args).exit_code == 0
    drawn = first.export_text()
    assert "1/1 images" in drawn and "7/7 queries" in drawn and "$0.014 of $2.50" in drawn
    assert "reused" not in drawn and "/s" in drawn and "ETA" in drawn
    (line,) = [json.loads(text) for text in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert line["spend_usd"] == "0.014000" and line["image"] == str(SAMPLE.resolve())

    again = _recording_console(monkeypatch)
    resumed = runner.invoke(app, args)
    assert resumed.exit_code == 0
    # The journal's answered queries count from the start: the bar ends full, nothing re-bought.
    assert "7/7 queries (7 reused)" in again.export_text()
    assert "0 requests" in resumed.output


def _answered(journal: Path) -> int:
    if not journal.exists():
        return 0
    with contextlib.closing(sqlite3.connect(journal)) as db:
        try:
            return int(db.execute("SELECT COUNT(*) FROM queries").fetchone()[0])
        except sqlite3.OperationalError:  # the job is still creating its tables
            return 0


def test_ctrl_c_says_what_was_answered_and_how_to_resume(tmp_path: Path) -> None:
    for number in range(2):
        shutil.copy(SAMPLE, tmp_path / f"image{number}.png")
    # 2 x 101 queries at 20 a second: about 10 s, interrupted once 30 are journaled.
    command = ["certify", ".", "--n", "100", "--denoiser", "none", "--size", "64", "--tps", "20"]
    apiwrap = [sys.executable, "-m", "apiwrap"]
    job = subprocess.Popen(
        [*apiwrap, *command], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    journals = tmp_path / "runs"
    deadline = time.monotonic() + 120
    while not any(_answered(path) >= 30 for path in journals.glob("*.sqlite")):
        assert job.poll() is None and time.monotonic() < deadline, job.communicate()
        time.sleep(0.1)
    job.send_signal(signal.SIGINT)
    _, stderr = job.communicate(timeout=120)

    assert job.returncode == 130, stderr
    (journal,) = journals.glob("*.sqlite")
    held = _answered(journal)
    assert f"interrupted: {held} queries answered ({held} in this run), $0.00 spent" in stderr  # local: free
    # The last line is the command to paste: what was typed, with the job's generated name.
    resume = stderr.strip().splitlines()[-1]
    expected = [
        "apiwrap",
        "certify",
        ".",
        "--n",
        "100",
        "--denoiser",
        "none",
        "--size",
        "64",
        "--tps",
        "20.0",
    ]
    assert shlex.split(resume) == [*expected, "--job", journal.stem]

    resumed = subprocess.run(
        [*apiwrap, *shlex.split(resume)[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    # The resumed bar starts from the journal's answered queries and ends at the job's total.
    assert f"202/202 queries ({held} reused)" in resumed.stderr
    assert f"{202 - held} requests" in resumed.stdout  # only what was missing was sent


def test_jobs_lists_runs_newest_first_and_show_tells_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copy(SAMPLE, tmp_path / SAMPLE.name)
    args = ["certify", SAMPLE.name, "--n", "4", "--denoiser", "none", "--size", "64"]
    # Two runs without --job, back to back (the same second): two jobs, never one shared journal.
    assert runner.invoke(app, args).exit_code == 0
    assert runner.invoke(app, [*args, "--n", "5"]).exit_code == 0
    first, second = sorted((tmp_path / "runs").glob("*.sqlite"), key=lambda path: path.stat().st_mtime)
    with contextlib.closing(sqlite3.connect(second)) as db, db:
        db.execute("UPDATE images SET status = 'pending', result = NULL")  # as if killed mid-image

    listed = runner.invoke(app, ["jobs"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    rows = [line for line in listed.output.splitlines() if "certify-" in line]
    assert [row.split()[1] for row in rows] == [second.stem, first.stem]  # newest first
    assert "unfinished" in rows[0] and "finished" in rows[1] and "local" in rows[1]

    shown = runner.invoke(app, ["show", first.stem], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "finished, 1 run(s)" in shown.output
    assert "images: 1 (1 abstained)" in shown.output or "images: 1 (1 certified)" in shown.output
    assert f"journal: {first.resolve()}" in shown.output
    assert f"images from: {tmp_path.resolve()}" in shown.output
    assert "denoiser" in shown.output and "n " in shown.output  # the settings table

    missing = runner.invoke(app, ["show", "no-such-job"])
    assert missing.exit_code == 2 and "no journal at" in missing.output


def test_result_lines_print_above_the_display_on_a_terminal_and_to_a_redirected_stdout() -> None:
    from apiwrap.cli.progress import JobProgress, JournalTally

    def progress(stdout: Console) -> tuple[JobProgress, Console]:
        display = Console(file=io.StringIO(), force_terminal=True, width=120, record=True)
        shown = JobProgress(
            display, label="certify", images=1, queries_per_image=7, before=JournalTally(0, 0), max_usd=None,
            stdout=stdout,
        )  # fmt: skip
        return shown, display

    terminal = Console(file=io.StringIO(), force_terminal=True, record=True)
    on_screen, display = progress(terminal)
    with on_screen:
        on_screen.print_line("cat.png: certified")
    # Through the live display's console, which redraws the bar below the line.
    assert "cat.png: certified" in display.export_text() and terminal.export_text() == ""

    redirected = Console(file=io.StringIO(), force_terminal=False, record=True)
    to_file, display = progress(redirected)
    with to_file:
        to_file.print_line("cat.png: certified")
    assert redirected.export_text() == "cat.png: certified\n"
    assert "cat.png" not in display.export_text()
