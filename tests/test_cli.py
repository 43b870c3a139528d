"""The command line end to end on the embedded local vendor (real classifier, few samples)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from apiwrap.cli import app
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
    assert f"{SAMPLE.name}: NOT CERTIFIED (budget exhausted;" in result.output
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
