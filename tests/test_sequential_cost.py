"""What a sequential design costs, from its own stopping rule: the estimate command's arithmetic."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from apiwrap.cli import app
from apiwrap.statistics.cost import prior_profile, stopping_profile
from apiwrap.statistics.radii import report_radii
from apiwrap.statistics.sequential import default_best_radius_design, default_target_design

SAMPLE = sorted((Path(__file__).resolve().parents[1] / "samples").glob("*.png"))[0]
runner = CliRunner()
TARGET = default_target_design(0.25, 0.001, 0.25, 400, 0.02)
BEST = default_best_radius_design(0.25, 0.001, 200, report_radii(0.25), 0.02)


@pytest.mark.parametrize("design", [TARGET, BEST], ids=["target", "best"])
@pytest.mark.parametrize("agreement", [0.6, 0.9, 0.97])
def test_the_stopping_profile_is_what_the_design_does(design, agreement: float) -> None:
    rng = np.random.default_rng(11)
    result = design.simulate(rng.random((20_000, design.max_queries)) < agreement)
    profile = stopping_profile(design, agreement)
    spread = result.n_votes.std() / np.sqrt(len(result.n_votes))
    assert abs(profile.expected_votes - result.n_votes.mean()) < 4 * spread + 1e-9
    assert abs(profile.certified - result.certified.mean()) < 4 * np.sqrt(0.25 / 20_000)
    assert result.n_votes.max() <= profile.most_votes <= design.max_queries


def test_the_prior_profile_averages_over_the_prior() -> None:
    grid = np.linspace(0.0005, 0.9995, 1000)  # midpoints: a uniform prior by the midpoint rule
    plain = [stopping_profile(TARGET, float(p)) for p in grid[::50]]
    averaged = prior_profile(TARGET, 1.0, 1.0)
    coarse = np.mean([p.expected_votes for p in plain])
    assert averaged.expected_votes == pytest.approx(coarse, rel=0.1)
    concentrated = prior_profile(TARGET, 999.0, 1.0)  # agreement about 0.999
    assert concentrated.expected_votes == pytest.approx(
        stopping_profile(TARGET, 0.999).expected_votes, rel=0.05
    )
    with pytest.raises(ValueError, match="positive"):
        prior_profile(TARGET, 0.0, 1.0)


def test_estimate_gives_a_sequential_design_its_expected_cost() -> None:
    args = [
        "estimate",
        str(SAMPLE),
        "--vendor",
        "aws",
        "--target-radius",
        "0.25",
        "--agreement-prior",
        "1,0.5",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Expected cost from the design's stopping rule (futility 0.02" in " ".join(result.output.split())
    expected = 1 + prior_profile(default_target_design(0.25, 0.001, 0.25, 400, 0.02), 1.0, 0.5).expected_votes
    assert f"{expected:.1f}" in result.output
    assert "Beta(1, 0.5)" in result.output
    best = runner.invoke(app, ["estimate", str(SAMPLE), "--vendor", "aws", "--max-queries", "200"])
    assert best.exit_code == 0 and "certified: any radius" in " ".join(best.output.split())


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--target-radius", "0.25", "--agreement-prior", "1"], "--agreement-prior"),
        (["--target-radius", "0.25", "--agreement-prior", "1,-2"], "--agreement-prior"),
        (["--agreement-prior", "1,1"], "fixed design"),
        (["--futility", "0.1"], "--futility"),
    ],
)
def test_estimate_refuses_a_bad_prior_or_futility(extra: list[str], message: str) -> None:
    result = runner.invoke(app, ["estimate", str(SAMPLE), *extra])
    assert result.exit_code == 2
    assert message in result.output


def test_a_fixed_job_whose_budget_cannot_pay_one_image_is_refused_before_any_query(tmp_path: Path) -> None:
    args = ["certify", str(SAMPLE), "--denoiser", "none", "--runs-dir", str(tmp_path), "--job", "poor"]
    result = runner.invoke(app, [*args, "--max-job-queries", "100"])  # one image takes 101
    assert result.exit_code == 2, result.output
    assert "cannot pay for one image's full procedure (101 queries" in result.output
    with sqlite3.connect(tmp_path / "poor.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM attempts").fetchone()[0] == 0
    enough = runner.invoke(app, [*args, "--max-job-queries", "101", "--n", "100"])
    assert enough.exit_code == 0, enough.output
