"""A Ray job's driver in its own process, so a test can SIGKILL it (see test_ray.py)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import ray

from apiwrap.engine.distributed import NAMESPACE, RayOptions
from apiwrap.engine.jobs import run_job
from apiwrap.engine.scheduler import VendorLimits
from tests.fakes import FaultyVendor
from tests.test_engine import PRICES, _images, _spec

WORKERS = RayOptions(preparation_actors=1, query_actors=2)
#: As in test_ray.py: no request may time out, or its answer could be billed after the timeout.
PATIENT = VendorLimits(concurrency=16, request_timeout_s=30)


def main(address: str, runs_dir: Path, ledger: Path, latency_s: float) -> None:
    ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
    vendor = FaultyVendor(latency_s=latency_s, ledger_file=ledger)
    asyncio.run(
        run_job(_spec(runs_dir, ray=WORKERS, limits=PATIENT), _images(6), adapter=vendor, price_table=PRICES)
    )


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4]))
