"""Results files: written whole or not at all, private, and a replay that says what the job bought."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from apiwrap.cli import app
from apiwrap.cli.main import _results_file
from tests.test_journal_integrity import _capped_job

SAMPLE = sorted((Path(__file__).resolve().parents[1] / "samples").glob("*.png"))[0]
runner = CliRunner()
CHEAP = ["--vendor", "local", "--denoiser", "none", "--n", "2", "--alpha", "0.5", "--size", "64"]


def _said(result: Result) -> str:
    return " ".join(result.output.split())


def test_a_refused_resume_leaves_the_previous_results_file_as_it_was(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    base = [
        "certify",
        str(SAMPLE),
        *CHEAP,
        "--runs-dir",
        str(tmp_path / "runs"),
        "--job",
        "j",
        "--out",
        str(out),
    ]
    assert runner.invoke(app, base).exit_code == 0
    written = out.read_bytes()
    assert written.count(b"\n") == 1

    refused = runner.invoke(app, [*base, "--sigma", "0.5"])
    assert refused.exit_code == 2 and "other parameters" in _said(refused)
    assert out.read_bytes() == written
    assert sorted(path.name for path in tmp_path.iterdir()) == ["results.jsonl", "runs"]  # no temporary left


def test_an_interrupted_write_keeps_the_previous_file(tmp_path: Path) -> None:
    previous = tmp_path / "results.jsonl"
    previous.write_text("the last run's results\n")
    with pytest.raises(KeyboardInterrupt), _results_file(previous) as temporary:
        temporary.write_text("half of this run's")
        raise KeyboardInterrupt
    assert previous.read_text() == "the last run's results\n"
    assert [path.name for path in tmp_path.iterdir()] == ["results.jsonl"]


def test_results_and_reports_are_private_to_their_owner(tmp_path: Path) -> None:
    out, report = tmp_path / "results.jsonl", tmp_path / "report"
    args = ["certify", str(SAMPLE), *CHEAP, "--runs-dir", str(tmp_path / "runs"), "--job", "p"]
    assert runner.invoke(app, [*args, "--out", str(out), "--report", str(report)]).exit_code == 0
    replayed = tmp_path / "replayed.jsonl"
    assert (
        runner.invoke(
            app, ["replay", "p", "--runs-dir", str(tmp_path / "runs"), "--out", str(replayed)]
        ).exit_code
        == 0
    )
    files = [out, replayed, tmp_path / "runs" / "p.sqlite", *sorted(report.iterdir())]
    assert {path.name: path.stat().st_mode & 0o777 for path in files} == {path.name: 0o600 for path in files}
    assert sorted(path.suffix for path in report.iterdir()) == [".csv", ".html", ".png"]
    assert (tmp_path / "runs").stat().st_mode & 0o777 == 0o700


def test_a_replay_shows_unfunded_images_as_unfunded_with_what_they_bought(tmp_path: Path) -> None:
    journal = _capped_job(tmp_path)
    with sqlite3.connect(journal) as db:
        bought = dict(
            db.execute("SELECT name, COUNT(*) FROM queries JOIN images USING (image_id) GROUP BY name")
        )
        statuses = dict(db.execute("SELECT name, status FROM images"))
    db.close()
    assert "budget" in statuses.values()
    result = runner.invoke(app, ["replay", "job", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    said = _said(result)
    assert "FAILED" not in said
    for name, status in statuses.items():
        if status == "budget":
            assert f"{name}: UNFUNDED (budget exhausted; {bought.get(name, 0)} queries)" in said
    assert f"the job bought {sum(bought.values())} queries" in said
