"""A job run in its own process so a test can SIGKILL it (see test_crash.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from pathlib import Path

from apiwrap.engine.jobs import run_job
from apiwrap.engine.scheduler import VendorLimits
from tests.fakes import FaultyVendor
from tests.test_engine import PRICES, _images, _spec


def main(runs_dir: Path, ledger: Path, latency_s: float, max_queries: int | None = None) -> None:
    # Under a cap the vendor bills on receipt: a query in flight at the kill is paid for.
    vendor = FaultyVendor(latency_s=latency_s, ledger_file=ledger, bill_on_receipt=max_queries is not None)
    spec = _spec(runs_dir, max_queries=max_queries)
    if max_queries is not None:
        spec = dataclasses.replace(spec, limits=VendorLimits(concurrency=16, request_timeout_s=10))
    asyncio.run(run_job(spec, _images(6), adapter=vendor, price_table=PRICES))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]), *map(int, sys.argv[4:5]))
