"""The service's parts on their own: the fair vendor gate, the config file and tenant keys, metrics."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from pathlib import Path

import pytest
import typer
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from apiwrap.cli.serve import DEFAULT_CONFIG_PATH, serve
from apiwrap.service import add_tenant, hash_key, load_config, write_default_config
from apiwrap.service._logging import configure_logging, log_event, request_id_var
from apiwrap.service._metrics import Metrics
from apiwrap.service._models import money
from apiwrap.service._vendors import FairGate


async def test_gate_serves_tenants_round_robin_whatever_their_backlog() -> None:
    gate = FairGate(concurrency=1)
    order: list[str] = []

    async def request(tenant: str) -> None:
        async with gate.slot(tenant):
            order.append(tenant)
            await asyncio.sleep(0.001)

    # "big" queues 12 requests before "small" queues 3: small still gets every other turn.
    tasks = [asyncio.create_task(request("big")) for _ in range(12)]
    await asyncio.sleep(0)
    tasks += [asyncio.create_task(request("small")) for _ in range(3)]
    await asyncio.gather(*tasks)
    assert order[:8] == ["big", "big", "small", "big", "small", "big", "small", "big"]


async def test_gate_caps_concurrency_and_spaces_starts() -> None:
    gate = FairGate(concurrency=2, requests_per_second=50)
    inside, most, starts = 0, 0, []

    async def request(tenant: str) -> None:
        nonlocal inside, most
        async with gate.slot(tenant):
            starts.append(time.monotonic())
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.005)
            inside -= 1

    await asyncio.gather(*(request(f"t{i % 3}") for i in range(12)))
    assert most <= 2
    assert starts[-1] - starts[0] >= 11 / 50 * 0.9  # 12 starts at 50 per second


async def test_cancelled_waiter_gives_its_turn_away() -> None:
    gate = FairGate(concurrency=1)
    async with gate.slot("a"):
        waiting = asyncio.create_task(gate.slot("b").__aenter__())
        await asyncio.sleep(0)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
    async with asyncio.timeout(1):  # the slot came back: nobody holds it
        async with gate.slot("c"):
            pass


def test_config_file_and_created_tenant_keys(tmp_path: Path) -> None:
    config = tmp_path / "service.toml"
    config.write_text('[service]\nruns_dir = "data"\n\n[vendors.aws]\nrequests_per_second = 5\n')
    key = add_tenant(config, "acme", max_usd="12.50", max_queries=1000)
    other = add_tenant(config, "beta")
    loaded = load_config(config)

    assert key != other and key.startswith("aw_") and len(key) > 40
    assert key not in config.read_text()  # only its hash is stored
    assert loaded.tenants["acme"].key_sha256 == hash_key(key)
    assert str(loaded.tenants["acme"].max_usd) == "12.50" and loaded.tenants["acme"].max_queries == 1000
    assert loaded.tenants["beta"].max_usd is None
    assert loaded.runs_dir == tmp_path / "data"
    assert loaded.vendors["aws"].limits.requests_per_second == 5
    with pytest.raises(ValueError, match="already exists"):
        add_tenant(config, "acme")
    with pytest.raises(ValueError, match="tenant name"):
        add_tenant(config, "bad name]\n[x")
    config.write_text(config.read_text().replace("requests_per_second", "request_per_second"))
    with pytest.raises(ValueError, match=r"unknown keys in \[vendors.aws\]: request_per_second"):
        load_config(config)


def test_metrics_are_prometheus_clients_text_format_in_one_registry_per_app() -> None:
    metrics = Metrics()
    metrics.count("apiwrap_vendor_queries_total", vendor="aws", outcome="ok")
    metrics.count("apiwrap_abstentions_total", vendor="aws", reason='pA "low"\n')
    metrics.count("apiwrap_spend_micro_usd_total", 1_000, vendor="aws", tenant="acme")
    metrics.count("apiwrap_spend_micro_usd_total", 2_000, vendor="aws", tenant="acme")
    for seconds in (0.003, 0.2, 40.0):
        metrics.observe("apiwrap_vendor_request_seconds", seconds, vendor="aws")
    metrics.gauges = lambda: [("apiwrap_budget_remaining_queries", {"tenant": "acme"}, 7)]
    text = metrics.render().decode()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    unlabelled = Metrics(tenant_labels=False)
    unlabelled.count("apiwrap_spend_micro_usd_total", 1_000, vendor="aws", tenant="acme")
    assert 'apiwrap_vendor_queries_total{outcome="ok",vendor="aws"} 1.0\n' in text
    assert 'reason="pA \\"low\\"\\n"' in text
    assert 'apiwrap_vendor_request_seconds_bucket{le="0.005",vendor="aws"} 1.0\n' in text
    assert 'apiwrap_vendor_request_seconds_bucket{le="30.0",vendor="aws"} 2.0\n' in text
    assert 'apiwrap_vendor_request_seconds_bucket{le="+Inf",vendor="aws"} 3.0\n' in text
    assert 'apiwrap_vendor_request_seconds_count{vendor="aws"} 3.0\n' in text
    assert 'apiwrap_spend_micro_usd_total{tenant="acme",vendor="aws"} 3000.0\n' in text  # whole micro-dollars
    assert 'apiwrap_budget_remaining_queries{tenant="acme"} 7.0\n' in text
    # The process's own metrics, from prometheus-client's collectors.
    assert {"process_resident_memory_bytes", "process_cpu_seconds", "python_info"} <= families.keys()
    assert "acme" not in unlabelled.render().decode()
    # Two apps, two registries: what one counts the other does not show.
    assert "apiwrap_vendor_queries_total{" not in unlabelled.render().decode()


def test_serve_command_creates_a_tenant_and_prints_its_key_once(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(serve)
    config = tmp_path / "service.toml"
    config.write_text("[vendors.aws]\n")
    result = CliRunner().invoke(app, ["--config", str(config), "--create-tenant", "acme", "--max-usd", "3"])
    assert result.exit_code == 0, result.output
    printed = dict(line.split(": ", 1) for line in result.stdout.strip().splitlines())
    acme = load_config(config).tenants["acme"]
    assert acme.key_sha256 == hash_key(printed["api_key"])
    # The /aws door's key pair: the secret is kept, since SigV4 is verified by signing again.
    assert (acme.aws_access_key_id, acme.aws_secret_access_key) == (
        printed["aws_access_key_id"],
        printed["aws_secret_access_key"],
    )
    assert printed["aws_access_key_id"].startswith("AKIA") and len(printed["aws_access_key_id"]) == 20
    told = " ".join(result.stderr.split())
    assert "kill -HUP" in told and "(no restart)" in told
    assert (
        f'curl -H "Authorization: Bearer {printed["api_key"]}" -H "Content-Type: image/png" '
        "--data-binary @image.png http://127.0.0.1:8000/v1/certify"
    ) in told
    again = CliRunner().invoke(app, ["--config", str(config), "--create-tenant", "acme"])
    assert again.exit_code != 0 and "already exists" in again.output


def _unboxed(output: str) -> str:
    """An error as one line: rich draws it in a box, wrapped to the terminal's width."""
    return " ".join(output.replace("│", " ").split())


@pytest.mark.parametrize(
    "action",
    [["--create-tenant", "acme"], ["--create-metrics-key"], ["--prune", "--retention-days", "1"], []],
    ids=["create-tenant", "create-metrics-key", "prune", "serve"],
)
def test_a_missing_config_path_is_refused_and_not_created(tmp_path: Path, action: list[str]) -> None:
    app = typer.Typer()
    app.command()(serve)
    config = tmp_path / "service.toml"
    result = CliRunner().invoke(app, ["--config", str(config), *action])
    assert result.exit_code == 2, result.output
    message = _unboxed(result.output)
    assert "service.toml does not exist; create it with 'apiwrap serve --config" in message
    assert "--init'" in message
    assert not config.exists()
    with pytest.raises(FileNotFoundError):  # the library does not create one either
        add_tenant(config, "acme")
    assert not config.exists()


def test_init_writes_the_embedded_default_once(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(serve)
    config = tmp_path / "service.toml"
    written = CliRunner().invoke(app, ["--config", str(config), "--init"])
    tenant = CliRunner().invoke(app, ["--config", str(config), "--create-tenant", "acme"])
    again = CliRunner().invoke(app, ["--config", str(config), "--init"])
    loaded = load_config(config)

    assert written.exit_code == 0, written.output
    assert tenant.exit_code == 0, tenant.output
    assert loaded.vendors.keys() == {"local"} and loaded.tenants.keys() == {"acme"}
    assert again.exit_code == 2 and "File exists" in _unboxed(again.output)
    assert load_config(config).tenants.keys() == {"acme"}  # the refused --init wrote nothing


def test_without_config_the_default_path_is_written_before_a_tenant_is_added(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = typer.Typer()
    app.command()(serve)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["--create-tenant", "acme"])
    loaded = load_config(tmp_path / DEFAULT_CONFIG_PATH)
    assert result.exit_code == 0, result.output
    assert loaded.vendors.keys() == {"local"} and loaded.tenants.keys() == {"acme"}


def test_metrics_key_and_service_settings_in_the_config_file(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(serve)
    config = tmp_path / "service.toml"
    write_default_config(config)
    created = CliRunner().invoke(app, ["--config", str(config), "--create-metrics-key"])
    again = CliRunner().invoke(app, ["--config", str(config), "--create-metrics-key"])
    loaded = load_config(config)

    assert created.exit_code == 0, created.output
    assert loaded.metrics.key_sha256 == hash_key(created.stdout.strip().splitlines()[-1])
    assert loaded.metrics.tenant_labels is True
    assert again.exit_code != 0 and "already has a [metrics] table" in again.output
    assert loaded.vendors.keys() == {"local"} and loaded.retention_days == 30
    config.write_text(config.read_text().replace("retention_days = 30", "retention_days = 0"))
    with pytest.raises(ValueError, match="retention_days must be positive"):
        load_config(config)


def test_service_logs_are_json_lines_with_the_request_id() -> None:
    logger = logging.getLogger("apiwrap")
    saved = (logger.handlers, logger.level, logger.propagate)
    stream = io.StringIO()
    try:
        configure_logging("info", stream)
        token = request_id_var.set("req-1")
        log_event("job.resumed", job="job-1", tenant="acme", images=2)
        request_id_var.reset(token)
        log_event("jobs.pruned", jobs=3)
    finally:
        logger.handlers, logger.propagate = saved[0], saved[2]
        logger.setLevel(saved[1])
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (first["msg"], first["job"], first["images"], first["request_id"]) == (
        "job.resumed",
        "job-1",
        2,
        "req-1",
    )
    assert first["level"] == "info" and first["logger"] == "apiwrap.service"
    assert second["request_id"] is None and second["jobs"] == 3


@pytest.mark.parametrize(
    ("micro_usd", "amount"),
    [(0, "0.00"), (26_000, "0.026"), (25_000_000, "25.00"), (1_500, "0.0015"), (1, "0.000001"),
     (1_234_567_890, "1234.56789")],
)  # fmt: skip
def test_money_amounts_are_exact_decimal_strings(micro_usd: int, amount: str) -> None:
    assert money(micro_usd).model_dump() == {"amount": amount, "currency": "USD"}


def test_serve_help_shows_the_metrics_table_name() -> None:
    app = typer.Typer()
    app.command()(serve)
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "Add a [metrics] key to the config" in _unboxed(result.output)  # not eaten as Rich markup
