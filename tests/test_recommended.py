"""The rules fixed in advance that pick a denoiser for sigma and a sigma for a target radius."""

from __future__ import annotations

from pathlib import Path

import pytest

from apiwrap.cli.main import RunOptions
from apiwrap.denoisers import available_denoisers, recommended_denoiser, recommended_sigma
from apiwrap.denoisers.recommended import PREFERENCE


@pytest.mark.parametrize(
    ("radius", "sigma"), [(0.05, 0.12), (0.12, 0.12), (0.2, 0.25), (0.25, 0.25), (0.3, 0.5), (2.0, 0.5)]
)
def test_the_sigma_for_a_target_radius_is_the_smallest_that_covers_it(radius: float, sigma: float) -> None:
    assert recommended_sigma(radius) == sigma


def test_the_recommended_denoiser_is_the_first_installed_of_the_measured_order() -> None:
    installed = set(available_denoisers())
    for sigma, names in PREFERENCE.items():
        expected = next(name for name in names if name in installed)
        assert recommended_denoiser(sigma) == expected
    assert recommended_denoiser(0.33) == "none"  # nothing measured: no denoiser


def _options(**overrides: object) -> RunOptions:
    fields: dict[str, object] = dict(
        mode="certify", images=[Path("x.png")], vendor="local", endpoint=None, sigma=None, n0=20, n=100,
        alpha=0.001, seed=0, denoiser="auto", size=None, out=None, job="j", runs_dir=Path("runs"),
        max_usd=None, max_job_queries=None, tps=None, concurrency=8, max_attempts=6, prices=None,
        force_denoiser=False, emulate=False,
    )  # fmt: skip
    return RunOptions(**(fields | overrides))  # type: ignore[arg-type]


def test_the_command_line_resolves_auto_before_the_job_is_journaled() -> None:
    settings = _options(target_radius=0.1).job_spec().settings
    assert (settings.sigma, settings.denoiser) == (0.12, recommended_denoiser(0.12))
    default = _options().job_spec().settings
    assert (default.sigma, default.denoiser, default.selection) == (0.25, recommended_denoiser(0.25), "clean")
    given = _options(sigma=0.5, denoiser="none", target_radius=0.1).job_spec().settings
    assert (given.sigma, given.denoiser) == (0.5, "none")
