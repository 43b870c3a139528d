"""Engine throughput against a fake vendor with fixed latency and a TPS limit.

Prints achieved queries per second as a ratio of the bound
min(TPS, concurrency / latency, sample-preparation throughput), and the engine's CPU time
per query, with no denoiser, the Apache-licensed CPU denoiser and the default one (--denoiser auto).

    python -m bench.pipeline [--tps 50] [--latency-ms 100] [--concurrency 16] [--queries 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import resource
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from apiwrap.adapters import Adapter, ImageLimits, Label, Throttled, VendorAnswer, VendorError
from apiwrap.budgets import Price, PriceTable
from apiwrap.denoisers import load_denoiser, recommended_denoiser
from apiwrap.engine.images import find_images, load_image
from apiwrap.engine.jobs import JobSpec, run_job
from apiwrap.engine.samples import SamplePreparer
from apiwrap.engine.scheduler import VendorLimits
from apiwrap.statistics.procedures import CertificationSettings

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


class LatencyVendor(Adapter):
    """Answers after a fixed latency; answers Throttled when more than ``tps`` calls start in a second."""

    name = "bench"
    max_batch = 1
    limits = ImageLimits(max_bytes=10_000_000)

    def __init__(self, latency_s: float, tps: float) -> None:
        self._latency_s = latency_s
        self._tps = tps
        self._starts: collections.deque[float] = collections.deque()
        self.calls = 0
        self.throttled = 0

    async def label_batch(self, images: Sequence[bytes]) -> list[VendorAnswer | VendorError]:
        now = time.monotonic()
        while self._starts and now - self._starts[0] >= 1.0:
            self._starts.popleft()
        if len(self._starts) >= self._tps:
            self.throttled += 1
            raise Throttled("Rate exceeded", retry_after=0.05)
        self._starts.append(now)
        self.calls += 1
        await asyncio.sleep(self._latency_s)
        return [VendorAnswer((Label("cat", 0.9),), "bench-1", "{}") for _ in images]


def preparation_rate(denoiser: str, sigma: float, seconds: float = 8.0) -> float:
    """Samples per second the preparer alone sustains (noise, denoiser, 8-bit PNG)."""
    image = load_image(find_images([SAMPLES])[0])

    async def run() -> float:
        preparer = SamplePreparer(load_denoiser(denoiser, sigma), seed=0, sigma=sigma, batch_size=16)
        done, index, started = 0, 0, time.perf_counter()
        try:
            while time.perf_counter() - started < seconds:
                batch = await asyncio.gather(*(preparer.prepare(image, index + i) for i in range(32)))
                done += len(batch)
                index += 32
        finally:
            await preparer.aclose()
        return done / (time.perf_counter() - started)

    return asyncio.run(run())


def measure(denoiser: str, args: argparse.Namespace) -> dict[str, float]:
    images = find_images([SAMPLES])
    per_image = max(2, args.queries // len(images))
    settings = CertificationSettings(
        vendor="bench", sigma=0.25, n0=1, n=per_image - 2, alpha=0.001, denoiser=denoiser
    )
    prep_rate = preparation_rate(denoiser, 0.25) if denoiser != "none" else float("inf")
    vendor = LatencyVendor(args.latency_ms / 1000, args.tps)
    with tempfile.TemporaryDirectory() as runs:
        spec = JobSpec(
            settings=settings,
            job="bench",
            runs_dir=Path(runs),
            limits=VendorLimits(requests_per_second=args.tps, concurrency=args.concurrency),
            images_in_flight=len(images),
        )
        cpu_before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        report = asyncio.run(
            run_job(
                spec,
                [(str(p), p) for p in images],
                adapter=vendor,
                price_table=PriceTable({"bench": Price("0")}),
            )
        )
        wall = time.perf_counter() - started
        cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    queries = sum(r.queries for r in report.results)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    bound = min(args.tps, args.concurrency / (args.latency_ms / 1000), prep_rate)
    return {
        "queries": queries,
        "seconds": wall,
        "qps": queries / wall,
        "bound": bound,
        "ratio": queries / wall / bound,
        "prep_rate": prep_rate,
        "cpu_ms_per_query": 1000 * cpu / queries,
        "throttled": vendor.throttled,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tps", type=float, default=50)
    parser.add_argument("--latency-ms", type=float, default=100)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument(
        "--denoisers", nargs="+", default=["none", "fast-stab-s025", recommended_denoiser(0.25)]
    )
    args = parser.parse_args()
    print(f"fake vendor: {args.latency_ms:g} ms latency, {args.tps:g} TPS; concurrency {args.concurrency}")
    columns = ("denoiser", "queries", "seconds", "q/s", "bound", "ratio", "prep/s", "CPU ms/q", "throttled")
    print(f"{columns[0]:<16}" + "".join(f"{name:>10}" for name in columns[1:]))
    for denoiser in args.denoisers:
        row = measure(denoiser, args)
        values = (row["queries"], row["seconds"], row["qps"], row["bound"], row["ratio"], row["prep_rate"],
                  row["cpu_ms_per_query"], row["throttled"])  # fmt: skip
        print(f"{denoiser:<16}" + "".join(f"{value:>10.2f}" for value in values))


if __name__ == "__main__":
    main()
