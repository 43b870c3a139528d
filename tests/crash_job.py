"""A job run in its own process so a test can SIGKILL it (see test_crash.py)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from apiwrap.engine.jobs import run_job
from tests.fakes import FaultyVendor
from tests.test_engine import PRICES, _images, _spec


def main(runs_dir: Path, ledger: Path, latency_s: float) -> None:
    vendor = FaultyVendor(latency_s=latency_s, ledger_file=ledger)
    asyncio.run(run_job(_spec(runs_dir), _images(6), adapter=vendor, price_table=PRICES))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]))
