"""The HTTP service under load: certificates per minute and latency against a rate-limited vendor.

An AWS emulator (fake colour classifier, fixed latency, TPS limit) runs in this process; the
service runs as ``apiwrap serve`` in a subprocess with the vendor's rate limit configured; 8
clients (6 of tenant "heavy", 2 of tenant "light") each POST /v1/certify in a loop. Prints
certificates per minute as a ratio of the vendor bound

    min(TPS, concurrency / latency) * 60 / queries per certificate

p50/p99 request latency, and each tenant's share of the certificates (the vendor gate is
round-robin across tenants, so "light" should get about half despite having a quarter of the
clients).

    python -m bench.service [--tps 40] [--latency-ms 50] [--concurrency 8] [--seconds 40]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from apiwrap.adapters.emulators import EmulatorConfig, emulator
from apiwrap.service import add_metrics_key, add_tenant
from apiwrap.testing import fake_classify, solid_png

ROOT = Path(__file__).resolve().parents[1]
SERVE = "import typer; from apiwrap.cli.serve import serve; typer.run(serve)"
PARAMS = {"n0": 5, "n": 20}
QUERIES_PER_CERTIFICATE = 1 + 5 + 20
CLIENTS = ("heavy",) * 6 + ("light",) * 2


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _serve(config: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE, "--config", str(config), "--port", str(port), "--log-level", "warning"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return process, base
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the service did not start")


async def _client(
    base: str, key: str, tenant: str, index: int, stop_at: float, log: list[tuple[str, float, int]]
) -> None:
    image = solid_png((200, 30 + 20 * index, 30))  # fake_classify: "goldfish", one digest per client
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "image/png"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=300) as api:
        while time.monotonic() < stop_at:
            started = time.monotonic()
            response = await api.post("/v1/certify", params={**PARAMS, "seed": len(log)}, content=image)
            log.append((tenant, time.monotonic() - started, response.status_code))


async def _load(
    base: str, keys: dict[str, str], seconds: float
) -> tuple[list[tuple[str, float, int]], float]:
    log: list[tuple[str, float, int]] = []
    started = time.monotonic()
    await asyncio.gather(
        *(_client(base, keys[tenant], tenant, i, started + seconds, log) for i, tenant in enumerate(CLIENTS))
    )
    return log, time.monotonic() - started


def _mean_request_seconds(metrics: str) -> float:
    """Mean time a vendor request held its slot at the gate, from the service's own histogram."""
    values = {
        line.split("{")[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith(("apiwrap_vendor_request_seconds_sum", "apiwrap_vendor_request_seconds_count"))
    }
    return values["apiwrap_vendor_request_seconds_sum"] / values["apiwrap_vendor_request_seconds_count"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tps", type=float, default=40.0, help="vendor requests per second")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="vendor latency per request")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight at the vendor")
    parser.add_argument("--seconds", type=float, default=40.0, help="how long the clients run")
    args = parser.parse_args()

    vendor = emulator("aws", EmulatorConfig(classify=fake_classify, latency_ms=args.latency_ms, tps=args.tps))
    with vendor as endpoint, tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "service.toml"
        path.write_text(
            f'[service]\nruns_dir = "runs"\n\n[vendors.aws]\nrequests_per_second = {args.tps}\n'
            f'concurrency = {args.concurrency}\noptions = {{ endpoint = "{endpoint}" }}\n'
        )
        keys = {tenant: add_tenant(path, tenant) for tenant in sorted(set(CLIENTS))}
        scrape = {"Authorization": f"Bearer {add_metrics_key(path)}"}
        process, base = _serve(path)
        try:
            log, elapsed = asyncio.run(_load(base, keys, args.seconds))
            slot_s = _mean_request_seconds(httpx.get(f"{base}/metrics", headers=scrape).text)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
        vendor_calls, vendor_outcomes = vendor.calls, dict(vendor.outcomes)

    ok = [(tenant, latency) for tenant, latency, status in log if status == 200]
    statuses = Counter(status for _, _, status in log)
    latencies = sorted(latency for _, latency in ok)
    per_minute = len(ok) / elapsed * 60
    query_bound = min(args.tps, args.concurrency / (args.latency_ms / 1000))
    bound = query_bound * 60 / QUERIES_PER_CERTIFICATE
    shares = Counter(tenant for tenant, _ in ok)
    print(
        f"vendor: {args.tps:g} TPS, {args.latency_ms:g} ms, concurrency {args.concurrency}; "
        f"{len(CLIENTS)} clients for {elapsed:.1f} s; {QUERIES_PER_CERTIFICATE} queries per certificate"
    )
    print(f"responses: {dict(statuses)}; vendor calls {vendor_calls}, by fate {vendor_outcomes}")
    ratio = per_minute / bound
    print(f"certificates per minute: {per_minute:.1f} (vendor bound {bound:.1f}; ratio {ratio:.2f})")
    p50, p99 = statistics.median(latencies), latencies[int(0.99 * (len(latencies) - 1))]
    print(
        f"latency: p50 {p50:.2f} s, p99 {p99:.2f} s; a vendor request holds its slot {slot_s * 1000:.0f} ms"
    )
    print(
        "tenant shares: "
        + ", ".join(f"{t} ({CLIENTS.count(t)} clients) {shares[t] / len(ok):.0%}" for t in sorted(shares))
    )


if __name__ == "__main__":
    main()
