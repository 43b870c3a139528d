"""The /aws door under load: certificates per minute and latency, boto3 clients against a
rate-limited vendor.

An AWS emulator (fake colour classifier, fixed latency, TPS limit) runs in this process; the
service runs as ``apiwrap serve`` in a subprocess with the vendor's rate limit configured and
the doors' default design (sequential, target radius 0.25, at most 200 queries; denoiser
``none``, so the figures are the proxy's and the vendor's, not a denoiser's); 8 threads, each
with its own boto3 Rekognition client, call ``detect_labels`` in a loop, each call with its own
``X-Apiwrap-Seed`` so that no answer comes from the cache. The vendor bound is

    min(TPS, concurrency / latency) * 60 / mean queries per certificate

(the mean read from the answers' ``X-Apiwrap-Queries``). Prints certificates per minute, its
ratio to the bound, p50/p99 call latency, and the mean time a vendor request holds its slot at
the server's gate (from its /metrics).

    python -m bench.proxy [--tps 50] [--latency-ms 50] [--concurrency 8] [--clients 8] [--seconds 40]
"""

from __future__ import annotations

import argparse
import itertools
import signal
import statistics
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import boto3
import httpx
from botocore.config import Config
from botocore.exceptions import ClientError

from apiwrap.adapters.emulators import EmulatorConfig, emulator
from apiwrap.service import add_metrics_key, create_tenant_keys
from apiwrap.testing import fake_classify, solid_png
from bench.service import _mean_request_seconds, _serve


def _client(
    base: str,
    key_id: str,
    secret: str,
    index: int,
    stop_at: float,
    seeds: itertools.count[int],
    log: list[tuple[float, str, int]],
) -> None:
    image = solid_png((200, 30 + 20 * index, 30))  # fake_classify: "goldfish"
    rekognition = boto3.client(
        "rekognition",
        endpoint_url=f"{base}/aws",
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=300),
    )
    seed = {"value": "0"}
    rekognition.meta.events.register(
        "before-sign.rekognition.DetectLabels",
        lambda request, **_: request.headers.__setitem__("X-Apiwrap-Seed", seed["value"]),
    )
    while time.monotonic() < stop_at:
        seed["value"] = str(next(seeds))
        started = time.monotonic()
        try:
            answer = rekognition.detect_labels(Image={"Bytes": image})
        except ClientError as exc:
            log.append((time.monotonic() - started, exc.response["Error"]["Code"], 0))
            continue
        headers = answer["ResponseMetadata"]["HTTPHeaders"]
        log.append(
            (time.monotonic() - started, headers["x-apiwrap-status"], int(headers["x-apiwrap-queries"]))
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tps", type=float, default=50.0, help="vendor requests per second")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="vendor latency per request")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight at the vendor")
    parser.add_argument("--clients", type=int, default=8, help="boto3 clients calling at once")
    parser.add_argument("--seconds", type=float, default=40.0, help="how long the clients run")
    args = parser.parse_args()

    vendor = emulator("aws", EmulatorConfig(classify=fake_classify, latency_ms=args.latency_ms, tps=args.tps))
    with vendor as endpoint, tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "service.toml"
        path.write_text(
            f'[service]\nruns_dir = "runs"\n\n[vendors.aws]\nrequests_per_second = {args.tps}\n'
            f'concurrency = {args.concurrency}\noptions = {{ endpoint = "{endpoint}" }}\n\n'
            '[proxy]\ntarget_radius = 0.25\nmax_queries = 200\ndenoiser = "none"\n'
        )
        keys = create_tenant_keys(path, "app")
        scrape = {"Authorization": f"Bearer {add_metrics_key(path)}"}
        process, base = _serve(path)
        log: list[tuple[float, str, int]] = []
        seeds = itertools.count()
        try:
            started = time.monotonic()
            threads = [
                threading.Thread(
                    target=_client,
                    args=(
                        base,
                        keys.aws_access_key_id,
                        keys.aws_secret_access_key,
                        i,
                        started + args.seconds,
                        seeds,
                        log,
                    ),
                )
                for i in range(args.clients)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.monotonic() - started
            slot_s = _mean_request_seconds(httpx.get(f"{base}/metrics", headers=scrape).text)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
        vendor_calls, vendor_outcomes = vendor.calls, dict(vendor.outcomes)

    answered = [
        (latency, queries) for latency, status, queries in log if status in ("certified", "abstained")
    ]
    certified = sum(status == "certified" for _, status, _ in log)
    per_minute = certified / elapsed * 60
    mean_queries = statistics.mean(queries for _, queries in answered)
    bound = min(args.tps, args.concurrency / (args.latency_ms / 1000)) * 60 / mean_queries
    latencies = sorted(latency for latency, _ in answered)
    p50, p99 = statistics.median(latencies), latencies[int(0.99 * (len(latencies) - 1))]
    print(
        f"vendor: {args.tps:g} TPS, {args.latency_ms:g} ms, concurrency {args.concurrency}; "
        f"{args.clients} boto3 clients for {elapsed:.1f} s"
    )
    print(
        f"answers: {dict(Counter(status for _, status, _ in log))}; "
        f"vendor calls {vendor_calls}, by fate {vendor_outcomes}"
    )
    print(
        f"certificates per minute: {per_minute:.1f} (vendor bound {bound:.1f} at {mean_queries:.1f} queries "
        f"per certificate; ratio {per_minute / bound:.2f})"
    )
    print(
        f"latency: p50 {p50:.2f} s, p99 {p99:.2f} s; a vendor request holds its slot {slot_s * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
