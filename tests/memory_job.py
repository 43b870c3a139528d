"""Jobs run in their own process to measure their memory (see test_reliability.py).

``huge-n DIR N CAP``: one image with n = N under a query cap. ``large-image DIR FILE SIZE``:
the image FILE between two small ones, sent at --size SIZE (0: as given). Each prints one JSON
line with the job's peak RSS growth in MiB and its outcomes.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
from pathlib import Path

from apiwrap.engine.jobs import run_job
from apiwrap.engine.scheduler import VendorLimits
from apiwrap.statistics.procedures import CertificationSettings
from tests.fakes import FaultyVendor
from tests.test_engine import PRICES, _png, _spec


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _warm_up(runs_dir: Path) -> float:
    """Run a small job first, so the peak measured after it is the big job's, not imports'."""
    image = [("warm-up.png", _png(0, size=64))]
    asyncio.run(run_job(_spec(runs_dir, "warm-up"), image, adapter=FaultyVendor(), price_table=PRICES))
    return _peak_rss_mib()


class _Interrupted(Exception):
    """Stops the first run of huge-n part-way, as Ctrl-C would."""


def huge_n(runs_dir: Path, n: int, max_queries: int) -> None:
    """A fresh fixed job that cannot pay for one image is refused before any query, so the cap
    meets the huge n on a resume: a first run is stopped after half the cap's queries, and the
    resumed run, under the cap, must stop at it with bounded work."""
    image = [("big-n.png", _png(0, size=64))]
    before = _warm_up(runs_dir)
    settings = CertificationSettings(vendor="fake", sigma=0.25, n0=10, n=n, alpha=0.001, seed=1)
    limits = VendorLimits(concurrency=16)
    vendor = FaultyVendor(latency_s=0.001)
    answered = 0

    def stop_half_way() -> None:
        nonlocal answered
        answered += 1
        if answered == max_queries // 2:
            raise _Interrupted

    first = _spec(runs_dir, "big", settings=settings, limits=limits)
    try:
        asyncio.run(run_job(first, image, adapter=vendor, price_table=PRICES, on_query=stop_half_way))
    except* _Interrupted:
        pass
    spec = _spec(runs_dir, "big", settings=settings, max_queries=max_queries, limits=limits)
    report = asyncio.run(run_job(spec, image, adapter=vendor, price_table=PRICES))
    print(
        json.dumps(
            {
                "rss_growth_mib": _peak_rss_mib() - before,
                "samples_prepared": report.samples_prepared,
                "vendor_calls": vendor.calls,
                "status": report.results[0].status,
                "billed": report.budget.spent.queries,
            }
        )
    )


def large_image(runs_dir: Path, large: Path, size: int | None) -> None:
    """The image file ``large`` between two small images, sent at --size ``size`` (0: as given)."""
    images: list[tuple[str, Path | bytes]] = [
        ("small0.png", _png(1, size=32)),
        ("large.png", large),
        ("small1.png", _png(2, size=32)),
    ]
    before = _warm_up(runs_dir)
    settings = CertificationSettings(vendor="fake", sigma=0.25, n0=10, n=60, alpha=0.01, seed=1, size=size)
    spec = _spec(runs_dir, "large", settings=settings)
    report = asyncio.run(run_job(spec, images, adapter=FaultyVendor(), price_table=PRICES))
    print(
        json.dumps(
            {
                "rss_growth_mib": _peak_rss_mib() - before,
                "statuses": {r.image: r.status for r in report.results},
                "errors": {r.image: r.error for r in report.results if r.error},
            }
        )
    )


if __name__ == "__main__":
    if sys.argv[1] == "huge-n":
        huge_n(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    else:
        large_image(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]) or None)
