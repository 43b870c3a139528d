"""Sequential designs driven by the engine: early stops, disjoint votes, exact replay."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from apiwrap.engine.replay import replay_journal
from apiwrap.engine.scheduler import RetryPolicy
from apiwrap.engine.settings import (
    FUTILITY,
    CertificationOptions,
    SettingsError,
    parse_options,
    resolve_settings,
)
from apiwrap.errors import ConfigurationError, JournalError
from apiwrap.statistics.fixed import AbstainReason
from apiwrap.statistics.procedures import CertificationSettings
from tests.fakes import FaultRates, FaultyVendor
from tests.test_engine import _certificates, _images, _run, _spec


def _settings(**overrides: object) -> CertificationSettings:
    options: dict[str, object] = {
        "vendor": "fake",
        "sigma": 0.25,
        "n0": 10,
        "alpha": 0.01,
        "seed": 1,
        "selection": "leader",
    }
    options.update(overrides)
    return CertificationSettings(**options)  # type: ignore[arg-type]


def test_target_design_stops_early_on_clear_images(tmp_path: Path) -> None:
    # 97% of samples vote "cat": pA well above Phi(1) = 0.84, so R = sigma certifies quickly.
    vendor = FaultyVendor(cat_share=0.97)
    settings = _settings(design="target", target_radius=0.25, max_queries=400)
    report = _run(_spec(tmp_path, settings=settings), vendor, _images(4))
    certified = [r for r in report.results if r.status == "certified"]
    assert len(certified) >= 3
    assert all(r.label == "cat" and r.radius == pytest.approx(0.25) for r in certified)
    assert all(r.queries < 121 for r in report.results)  # fewer than the fixed protocol


def test_target_design_gives_up_early_on_hopeless_images(tmp_path: Path) -> None:
    vendor = FaultyVendor(cat_share=0.55)  # pA far below Phi(1): R = sigma cannot be certified
    settings = _settings(design="target", target_radius=0.25, max_queries=400)
    report = _run(_spec(tmp_path, settings=settings), vendor, _images(3))
    assert all(r.status == "abstained" for r in report.results)
    assert all(r.abstain_reason == AbstainReason.FUTILE.value for r in report.results)
    assert all(r.queries < 100 for r in report.results)


def test_best_radius_design_goes_past_the_fixed_protocol_ceiling(tmp_path: Path) -> None:
    vendor = FaultyVendor(cat_share=1.0)
    settings = _settings(design="best", max_queries=400)
    report = _run(_spec(tmp_path, settings=settings), vendor, _images(2))
    # n = 100 unanimous votes at alpha = 0.01 certify at most sigma * Phi^-1(0.01 ** (1/100)).
    assert all(
        r.status == "certified" and r.radius is not None and r.radius > 0.25 * 1.6 for r in report.results
    )


def test_clean_label_selection_buys_no_selection_votes(tmp_path: Path) -> None:
    vendor = FaultyVendor(cat_share=0.97)
    settings = _settings(design="target", target_radius=0.25, selection="clean")
    report = _run(_spec(tmp_path, settings=settings), vendor, _images(2))
    for result in report.results:
        assert result.candidate == result.reference_label
        assert result.queries == 1 + result.estimation_votes


def test_sequential_job_replays_exactly_and_resumes_without_queries(tmp_path: Path) -> None:
    faults = FaultRates(server_error=0.1, malformed=0.05)
    settings = _settings(design="best", max_queries=200)
    report = _run(_spec(tmp_path, settings=settings), FaultyVendor(faults=faults, cat_share=0.9), _images(3))
    assert _certificates(report) == [
        (r.image, r.status, r.label, r.radius) for r in replay_journal(report.journal).results
    ]
    again = FaultyVendor(cat_share=0.9)
    assert _certificates(_run(_spec(tmp_path, settings=settings), again, _images(3))) == _certificates(report)
    assert again.calls == 0


def test_a_vendor_that_always_fails_ends_selection_at_its_cap(tmp_path: Path) -> None:
    vendor = FaultyVendor(faults=FaultRates(server_error=1.0))
    settings = _settings(design="target", target_radius=0.25)
    spec = _spec(tmp_path, settings=settings, retry=RetryPolicy(max_attempts=1))
    (result,) = _run(spec, vendor, _images(1)).results
    assert result.abstain_reason == AbstainReason.NO_SELECTION.value
    assert result.queries == 1 + 10


# ------------------------------------------------------------------ predictive futility, end to end


def _resolve(mode: str = "certify", **options: object) -> CertificationSettings:
    return resolve_settings(parse_options(CertificationOptions, options), vendor="v", mode=mode)  # type: ignore[arg-type]


def test_futility_is_a_sequential_setting_with_a_checked_range() -> None:
    assert _resolve(target_radius=0.25).futility == FUTILITY > 0
    assert _resolve(max_queries=200, futility=0).futility == 0
    assert _resolve().futility == 0  # the fixed design buys all its samples
    for bad in (1.0, -0.1, math.nan, math.inf):
        with pytest.raises(SettingsError, match="futility"):
            _resolve(target_radius=0.25, futility=bad)
    with pytest.raises(SettingsError, match="futility: applies to sequential designs"):
        _resolve(futility=0.1)
    with pytest.raises(SettingsError, match="futility"):
        _resolve("predict", futility=0.1)
    with pytest.raises(ConfigurationError, match="futility"):
        _settings(design="target", target_radius=0.25, futility=1.0)


def test_predictive_futility_gives_up_hopeless_images_sooner(tmp_path: Path) -> None:
    # 80% of the votes for the candidate: short of Phi(1) = 0.84, costly to rule out.
    queries = {}
    for futility in (0.0, 0.1):
        settings = _settings(design="target", target_radius=0.25, futility=futility)
        report = _run(
            _spec(tmp_path, f"futility-{futility}", settings=settings),
            FaultyVendor(cat_share=0.8),
            _images(3),
        )
        assert all(r.abstain_reason == AbstainReason.FUTILE.value for r in report.results)
        queries[futility] = sum(r.queries for r in report.results)
        replayed = replay_journal(report.journal).results
        assert [r.estimation_votes for r in replayed] == [r.estimation_votes for r in report.results]
    assert queries[0.1] < queries[0.0] / 2


def test_a_resume_with_another_futility_threshold_is_refused(tmp_path: Path) -> None:
    settings = _settings(design="best", max_queries=100, futility=0.05)
    _run(_spec(tmp_path, settings=settings), FaultyVendor(cat_share=0.9), _images(1))
    other = dataclasses.replace(settings, futility=0.1)
    with pytest.raises(JournalError, match="futility"):
        _run(_spec(tmp_path, settings=other), FaultyVendor(cat_share=0.9), _images(1))
