"""One image with a huge n under a small query cap, run in its own process to measure memory.

Prints one JSON line: peak RSS growth of the job (MiB), samples prepared, vendor calls and
the image's status. See test_reliability.py.
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


def main(runs_dir: Path, n: int, max_queries: int) -> None:
    image = [("big-n.png", _png(0, size=64))]
    # A small job first, so the peak below measures the big job, not imports and first use.
    asyncio.run(run_job(_spec(runs_dir, "warm-up"), image, adapter=FaultyVendor(), price_table=PRICES))
    before = _peak_rss_mib()
    settings = CertificationSettings(vendor="fake", sigma=0.25, n0=10, n=n, alpha=0.001, seed=1)
    limits = VendorLimits(concurrency=16)
    spec = _spec(runs_dir, "big", settings=settings, max_queries=max_queries, limits=limits)
    vendor = FaultyVendor(latency_s=0.001)
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


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
