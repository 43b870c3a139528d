"""``apiwrap emulate``: serve vendor emulators on 127.0.0.1 until Ctrl-C or SIGTERM.

Their billing counters are served live at ``/counters`` on a port of their own, and printed
to stderr when the emulators stop, whichever signal stopped them.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Annotated

import typer

from apiwrap.adapters.emulators import FAULTS, VENDORS, Emulator, EmulatorConfig, emulator
from apiwrap.adapters.emulators.counters import CountersServer

__all__ = ["emulate", "parse_fault_rates"]


def parse_fault_rates(items: list[str]) -> dict[str, float]:
    """``["error=0.05", "reset=0.01"]`` -> ``{"error": 0.05, "reset": 0.01}``."""
    rates: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in FAULTS:
            raise typer.BadParameter(f"{item!r}: use FAULT=RATE with FAULT one of {', '.join(FAULTS)}")
        try:
            rates[name] = float(value)
        except ValueError:
            raise typer.BadParameter(f"{item!r}: the rate must be a number in [0, 1]") from None
    return rates


def _describe(running: Emulator) -> str:
    line = f"{running.vendor:<9} {running.endpoint}"
    rest = getattr(running, "rest_endpoint", None)  # Google also serves REST on a second port
    if rest is not None:
        line += f"  (gRPC; REST: {rest}/v1/images:annotate)"
    return line


def emulate(
    vendor: Annotated[str, typer.Option(help=f"Vendor to emulate: {', '.join(VENDORS)} or all.")] = "all",
    model: Annotated[str, typer.Option(help="Classifier behind the labels.")] = "efficientnet-lite2",
    tps: Annotated[float | None, typer.Option(help="Requests per second before throttling.")] = None,
    latency_ms: Annotated[float, typer.Option(help="Fixed latency of every answer.")] = 0.0,
    jitter_ms: Annotated[float, typer.Option(help="Extra uniform random latency, up to this.")] = 0.0,
    fault_rate: Annotated[
        list[str] | None,
        typer.Option(help=f"FAULT=RATE, repeatable; FAULT in {', '.join(FAULTS)}."),
    ] = None,
    hang_s: Annotated[float, typer.Option(help="How long a 'hang' fault holds the connection.")] = 30.0,
    model_version: Annotated[str | None, typer.Option(help="Model version to report.")] = None,
    api_key: Annotated[str | None, typer.Option(help="Credential to demand (default: accept any).")] = None,
    port: Annotated[int, typer.Option(help="Port (single vendor only; 0 picks a free one).")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of fault and jitter draws.")] = 0,
    counters_port: Annotated[
        int, typer.Option(help="Port of the live counters endpoint (0 picks a free one).")
    ] = 0,
) -> None:
    """Serve the vendors' wire protocols on 127.0.0.1, backed by a real classifier."""
    vendors = list(VENDORS) if vendor == "all" else [vendor]
    if any(name not in VENDORS for name in vendors):
        raise typer.BadParameter(f"--vendor must be one of {', '.join(VENDORS)} or all")
    if port and len(vendors) > 1:
        raise typer.BadParameter("--port needs a single --vendor")
    config = EmulatorConfig(
        model=model,
        latency_ms=latency_ms,
        jitter_ms=jitter_ms,
        tps=tps,
        fault_rates=parse_fault_rates(fault_rate or []),
        hang_s=hang_s,
        model_version=model_version,
        api_key=api_key,
        seed=seed,
        port=port,
    )
    running = [emulator(name, config) for name in vendors]
    running[0].warm_up()  # one classifier, shared by all emulators in this process
    stop = threading.Event()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        stop.set()  # a service manager's stop must print the counters as Ctrl-C does

    signal.signal(signal.SIGTERM, on_sigterm)
    counters: CountersServer | None = None
    try:
        for item in running:
            item.start()
            typer.echo(_describe(item))
        counters = CountersServer(running, port=counters_port)
        typer.echo(f"counters  {counters.url}")
        typer.echo(f"model {model}; try: apiwrap certify IMAGES --vendor {vendors[0]} --endpoint URL")
        typer.echo("serving; press Ctrl-C to stop")
        while not stop.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        if counters is not None:
            counters.close()
        for item in running:
            item.stop()
            item.wait_idle(timeout=10.0)  # calls whose clients gave up are still served, and billed
            typer.echo(f"{item.vendor}: {item.calls} calls, {item.billable} billable images", err=True)
