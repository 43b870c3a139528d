"""One budget over many images: likely certificates funded first, hopeless images given up."""

from __future__ import annotations

import asyncio
import io
import sqlite3
from pathlib import Path

import numpy as np
from PIL import Image

from apiwrap.engine.allocator import BudgetAllocator
from apiwrap.engine.jobs import JobReport
from apiwrap.engine.replay import replay_journal
from apiwrap.statistics.allocation import Admission, ImageState
from apiwrap.statistics.fixed import AbstainReason
from apiwrap.statistics.summary import spending
from tests.fakes import FaultyVendor
from tests.test_engine import _certificates, _run, _spec
from tests.test_sequential_engine import _settings

P_SIGMA = 0.8413  # pA needed for radius sigma


def _grey(value: int, seed: int) -> bytes:
    pixels = np.full((12, 12, 3), value, dtype=np.uint8)
    pixels[0, 0] = seed  # distinct images, same brightness
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _bright_is_clear(image: bytes) -> float:
    """Bright images get "cat" 97% of the time (certifiable at sigma); dark ones 80%: just short of
    Phi(1) = 0.84, costly to rule out."""
    return 0.97 if np.asarray(Image.open(io.BytesIO(image))).mean() > 127 else 0.8


def _mixed_images() -> list[tuple[str, Path | bytes]]:
    # Hopeless images first: a first-come spender would pay for them before the clear ones.
    dark = [(f"dark{i}.png", _grey(30, i)) for i in range(4)]
    bright = [(f"bright{i}.png", _grey(220, i)) for i in range(4)]
    return dark + bright


def _billed(journal: Path) -> int:
    with sqlite3.connect(journal) as db:
        return int(db.execute("SELECT COUNT(*) FROM attempts WHERE billed = 1").fetchone()[0])


def test_a_tight_budget_goes_to_the_likely_certificates(tmp_path: Path) -> None:
    settings = _settings(design="target", target_radius=0.25, max_queries=400)
    unlimited = _run(
        _spec(tmp_path, "unlimited", settings=settings),
        FaultyVendor(share_of=_bright_is_clear),
        _mixed_images(),
    )
    assert all(r.status == "certified" for r in unlimited.results if r.image.startswith("bright"))
    bright_cost = sum(r.queries for r in unlimited.results if r.image.startswith("bright"))
    # Enough for the clear images plus a little, far from enough for every image.
    cap = bright_cost + 48
    assert cap < sum(r.queries for r in unlimited.results) / 2

    def certified(allocate: bool) -> tuple[list[str], Path, JobReport]:
        spec = _spec(tmp_path, f"allocate-{allocate}", settings=settings, max_queries=cap, allocate=allocate)
        report = _run(spec, FaultyVendor(share_of=_bright_is_clear), _mixed_images())
        assert _billed(report.journal) <= cap
        return sorted(r.image for r in report.results if r.status == "certified"), report.journal, report

    allocated, _, report = certified(allocate=True)
    first_come, _, _ = certified(allocate=False)
    assert len(allocated) >= 3 and all(name.startswith("bright") for name in allocated)
    assert len(allocated) > len(first_come)
    for result in report.results:
        if result.image.startswith("dark"):
            assert result.status in {"abstained", "budget"}
    assert report.allocation is not None and report.allocation.rounds > 1
    bought = {row.outcome: row for row in spending(report.results)}
    assert bought["certified"].images == len(allocated)
    assert sum(row.queries for row in bought.values()) == sum(r.queries for r in report.results)


def test_allocation_stops_replay_exactly(tmp_path: Path) -> None:
    settings = _settings(design="best", max_queries=200)
    spec = _spec(tmp_path, settings=settings, max_queries=700)
    report = _run(spec, FaultyVendor(share_of=_bright_is_clear), _mixed_images())
    reasons = {r.abstain_reason for r in report.results}
    assert reasons & {AbstainReason.HOPELESS.value, AbstainReason.BUDGET.value}  # the allocator did stop some
    replayed = replay_journal(report.journal).results
    assert _certificates(report) == [(r.image, r.status, r.label, r.radius) for r in replayed]
    assert [r.abstain_reason for r in report.results] == [r.abstain_reason for r in replayed]

    # Resuming the finished job buys nothing and decides the same: journaled votes are free.
    again = FaultyVendor(share_of=_bright_is_clear)
    resumed = _run(spec, again, _mixed_images())
    assert again.calls == 0
    assert _certificates(resumed) == _certificates(report)


def test_a_round_funds_the_likeliest_and_waits_for_every_image() -> None:
    async def scenario() -> dict[str, Admission]:
        allocator = BudgetAllocator(lambda: 30)
        for name in ("likely", "fresh", "hopeless", "selecting"):
            allocator.enter(name)
        asks = {
            "likely": ImageState("", 25, 25, 50, P_SIGMA),
            "fresh": ImageState("", 0, 0, 25, P_SIGMA),
            "hopeless": ImageState("", 25, 10, 50, P_SIGMA),
        }
        tasks = {name: asyncio.ensure_future(allocator.admit(name, state)) for name, state in asks.items()}
        await asyncio.sleep(0)
        assert not any(task.done() for task in tasks.values())  # "selecting" has not asked yet
        allocator.leave("selecting")
        await asyncio.sleep(0)
        decided = {name: task.result() for name, task in tasks.items() if task.done()}
        assert "fresh" not in decided  # outranked, waits for the next round
        allocator.leave("hopeless")  # stopped
        allocator.leave("likely")  # bought its batch and finished
        decided["fresh"] = await tasks["fresh"]
        return decided

    decided = asyncio.run(scenario())
    assert decided == {
        "likely": Admission.GRANTED,
        "hopeless": Admission.HOPELESS,
        "fresh": Admission.GRANTED,  # 25 fit once "likely" no longer competes for the 30
    }


def test_under_a_budget_the_futility_rule_gives_up_the_hopeless_images_itself(tmp_path: Path) -> None:
    spent = {}
    for futility in (0.0, 0.1):
        settings = _settings(design="target", target_radius=0.25, futility=futility)
        spec = _spec(tmp_path, f"futility-{futility}", settings=settings, max_queries=5000)
        report = _run(spec, FaultyVendor(share_of=_bright_is_clear), _mixed_images())
        dark = [r for r in report.results if r.image.startswith("dark")]
        assert all(r.status == "certified" for r in report.results if r.image.startswith("bright"))
        assert all(r.status == "abstained" for r in dark)
        spent[futility] = sum(r.queries for r in dark)
        if futility:
            assert all(r.abstain_reason == AbstainReason.FUTILE.value for r in dark)
    assert spent[0.1] < spent[0.0] / 2
