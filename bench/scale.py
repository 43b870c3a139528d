"""Throughput of one job on Ray as preparation actors are added, against an emulated vendor.

For each number of preparation actors, one certification job (the 8 sample images, the
default CPU denoiser) runs on a local Ray instance against a fake vendor with a fixed
latency and a high requests/s limit, sent from two query actors. Prints the steady
throughput (first to last vote) as a ratio of the bound
min(vendor requests/s, actors x per-actor preparation rate), where the per-actor rate is
measured first by one preparation actor alone; and as a ratio of what the same number of
actors prepare together with no engine around them ("pool alone": on a machine with fewer
cores than actors plus driver, actors cannot scale linearly). Also prints what bounds the
driver: its ceiling with no denoiser, and the round trip of one actor call (what a
rate-limiter or budget actor would add to every query).

    python -m bench.scale [--actors 1 2] [--tps 1000] [--latency-ms 50] [--queries 400]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import tempfile
import time
from pathlib import Path

import ray

from apiwrap.budgets import Price, PriceTable
from apiwrap.engine.distributed import NAMESPACE, PreparationWorker, RayOptions
from apiwrap.engine.images import find_images, load_image
from apiwrap.engine.jobs import JobSpec, run_job
from apiwrap.engine.scheduler import VendorLimits
from apiwrap.statistics.procedures import CertificationSettings
from bench.pipeline import SAMPLES, LatencyVendor

ROOT = Path(__file__).resolve().parents[1]
SIGMA = 0.25


def preparation_rate(denoiser: str, actors: int, seconds: float = 10.0) -> float:
    """Samples per second ``actors`` preparation actors sustain together, with no engine around them
    (noise, denoiser, PNG and the transfer of batches of 16)."""
    image = load_image(find_images([SAMPLES])[0])
    pool = [
        ray.remote(PreparationWorker).options(num_cpus=1).remote(denoiser, SIGMA, 0, False)
        for _ in range(actors)
    ]
    ray.get([actor.ready.remote() for actor in pool])
    done, index, started = 0, 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        batches = []
        for actor in pool:
            batches.append(
                actor.prepare.remote({image.digest: image}, [(image.digest, index + i) for i in range(16)])
            )
            index += 16
        done += sum(len(batch) for batch in ray.get(batches))
    rate = done / (time.perf_counter() - started)
    for actor in pool:
        ray.kill(actor)
    return rate


def actor_round_trip_ms(calls: int = 300) -> float:
    """Mean time of one call to a trivial async actor method, calls made one after another."""

    @ray.remote(num_cpus=0)
    class Echo:
        async def ping(self) -> None:
            return None

    echo = Echo.remote()  # type: ignore[attr-defined]
    ray.get(echo.ping.remote())
    started = time.perf_counter()
    for _ in range(calls):
        ray.get(echo.ping.remote())
    elapsed = time.perf_counter() - started
    ray.kill(echo)
    return 1000 * elapsed / calls


def run(denoiser: str, actors: int, args: argparse.Namespace) -> dict[str, float]:
    images = find_images([SAMPLES])
    per_image = max(2, args.queries // len(images))
    settings = CertificationSettings(
        vendor="bench", sigma=SIGMA, n=per_image - 1, alpha=0.001, denoiser=denoiser
    )
    vote_times: list[float] = []
    with tempfile.TemporaryDirectory() as runs:
        spec = JobSpec(
            settings=settings,
            job=f"scale-{denoiser}-{actors}",
            runs_dir=Path(runs),
            limits=VendorLimits(requests_per_second=args.tps, concurrency=args.concurrency),
            images_in_flight=len(images),
            ray=RayOptions(preparation_actors=actors, query_actors=2),
        )
        cpu_before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        report = asyncio.run(
            run_job(
                spec,
                [(str(p), p) for p in images],
                adapter=LatencyVendor(args.latency_ms / 1000, args.tps),
                price_table=PriceTable({"bench": Price("0")}),
                on_query=lambda: vote_times.append(time.perf_counter()),
            )
        )
        cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    queries = sum(r.queries for r in report.results)
    steady = vote_times[-1] - vote_times[0]
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return {
        "queries": queries,
        "startup_s": vote_times[0] - started,
        "qps": (len(vote_times) - 1) / steady,
        "driver_cpu_ms": 1000 * cpu / queries,
        "throttled": report.throttled,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--tps", type=float, default=1000)
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--denoiser", default="fast-stab-s025")
    parser.add_argument("--address", default=None, help="Ray cluster to use (default: a local instance)")
    args = parser.parse_args()
    # Query actors are built from a pickled LatencyVendor: workers must import bench.pipeline.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    ray.init(address=args.address, namespace=NAMESPACE, log_to_driver=False)
    cpus = ray.cluster_resources().get("CPU", 0)
    print(f"Ray: {cpus:g} CPUs; vendor {args.latency_ms:g} ms latency, {args.tps:g} requests/s; ")
    print(f"actor round trip: {actor_round_trip_ms():.2f} ms")
    rate = preparation_rate(args.denoiser, 1)
    print(f"one preparation actor alone ({args.denoiser}): {rate:.1f} samples/s")
    columns = ("actors", "queries", "startup s", "q/s", "bound", "ratio", "pool alone", "ratio pool",
               "drv CPU ms/q", "throttled")  # fmt: skip
    print("".join(f"{name:>13}" for name in columns))
    for actors in args.actors:
        row = run(args.denoiser, actors, args)
        bound = min(args.tps, actors * rate)
        pool = min(args.tps, preparation_rate(args.denoiser, actors))
        values = (actors, row["queries"], row["startup_s"], row["qps"], bound, row["qps"] / bound, pool,
                  row["qps"] / pool, row["driver_cpu_ms"], row["throttled"])  # fmt: skip
        print("".join(f"{value:>13.2f}" for value in values))
    ceiling = run("none", max(args.actors), args)
    print(
        f"driver ceiling (no denoiser, {max(args.actors)} actors): {ceiling['qps']:.1f} q/s, "
        f"{ceiling['driver_cpu_ms']:.1f} driver CPU ms per query"
    )


if __name__ == "__main__":
    main()
