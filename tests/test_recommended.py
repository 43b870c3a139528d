"""The rules fixed in advance that pick a denoiser for sigma and a sigma for a target radius."""

from __future__ import annotations

import pytest

from apiwrap.denoisers import available_denoisers, recommended_denoiser, recommended_sigma
from apiwrap.denoisers.recommended import PREFERENCE
from apiwrap.engine.settings import CertificationOptions, parse_options, resolve_settings


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


def test_auto_and_the_target_radius_resolve_before_the_job_is_journaled() -> None:
    def resolve(**options: object) -> tuple[float, str]:
        given = parse_options(CertificationOptions, options)
        settings = resolve_settings(given, vendor="local", mode="certify")
        return settings.sigma, settings.denoiser

    assert resolve(target_radius=0.1) == (0.12, recommended_denoiser(0.12))
    assert resolve() == (0.25, recommended_denoiser(0.25))
    assert resolve(sigma=0.5, denoiser="none", target_radius=0.1) == (0.5, "none")
