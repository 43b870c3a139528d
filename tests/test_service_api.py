"""The service's HTTP contract: atomic admission, idempotent POSTs, long certifies, problem+json
errors, request ids and logs, keyed metrics, pages, OPTIONS, owner-only files, read timeouts,
retention, and ``apiwrap serve`` on its embedded default."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from apiwrap.adapters.emulators import Emulator, EmulatorConfig, emulator
from apiwrap.cli.serve import serve
from apiwrap.engine.scheduler import VendorLimits
from apiwrap.service import JsonFormatter, MetricsConfig, add_tenant, create_app, hash_key, load_config
from apiwrap.testing import fake_classify
from tests.test_service import (
    FAST,
    GREEN,
    KEYS,
    METRICS_KEY,
    RED,
    SCRAPER,
    ServerThread,
    client,
    service_config,
    wait_for_job,
)

PNG = {"Content-Type": "image/png"}
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def vendor() -> Iterator[Emulator]:
    running = emulator("aws", EmulatorConfig(classify=fake_classify))
    running.start()
    yield running
    running.stop()


@pytest.fixture
def slow_vendor() -> Iterator[Emulator]:
    """20 ms per query: a FAST certificate takes about half a second at concurrency 1."""
    running = emulator("aws", EmulatorConfig(classify=fake_classify, latency_ms=20))
    running.start()
    yield running
    running.stop()


async def _submit_all(base: str, tenants: list[str]) -> list[httpx.Response]:
    async def one(tenant: str, index: int) -> httpx.Response:
        headers = {"Authorization": f"Bearer {KEYS[tenant]}"}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as api:
            files = {"files": (f"{index}.png", RED, "image/png")}
            return await api.post("/v1/jobs", params={"n0": 5, "n": 200, "selection": "leader"}, files=files)

    return list(await asyncio.gather(*(one(tenant, i) for i, tenant in enumerate(tenants))))


@pytest.mark.parametrize(
    ("limits", "tenants", "refusal"),
    [
        ({"max_running_jobs_per_tenant": 8}, ["alice"] * 16, "tenant_busy"),
        ({"max_running_jobs": 8}, ["alice", "bob"] * 8, "server_busy"),
    ],
)
def test_sixteen_concurrent_submissions_against_a_limit_of_eight_admit_exactly_eight(
    tmp_path: Path, slow_vendor: Emulator, limits: dict[str, int], tenants: list[str], refusal: str
) -> None:
    config = service_config(tmp_path, slow_vendor.endpoint, limits=VendorLimits(concurrency=1), **limits)
    with ServerThread(create_app(config)) as base:
        responses = asyncio.run(_submit_all(base, tenants))
        with client(base) as alice, client(base, "bob") as bob:
            listed = []
            for api in (alice, bob):
                own = api.get("/v1/jobs").json()["jobs"]
                listed += own
                for job in own:  # stop them: the test is about admission
                    api.delete(f"/v1/jobs/{job['id']}")

    statuses = Counter(response.status_code for response in responses)
    assert statuses == {202: 8, 503: 8}
    assert {response.json()["code"] for response in responses if response.status_code == 503} == {refusal}
    assert len(listed) == 8  # a refused submission leaves no job behind


def test_the_same_idempotency_key_returns_the_same_job(tmp_path: Path, slow_vendor: Emulator) -> None:
    config = service_config(tmp_path, slow_vendor.endpoint)
    with ServerThread(create_app(config)) as base, client(base) as api:
        key = {"Idempotency-Key": "batch-7"}
        files = [("files", ("a.png", RED, "image/png")), ("files", ("b.png", GREEN, "image/png"))]
        first = api.post("/v1/jobs", params=FAST, files=files, headers=key)
        again = api.post("/v1/jobs", params=FAST, files=files, headers=key)  # new multipart boundary
        other_body = api.post("/v1/jobs", params=FAST, files=files[:1], headers=key)
        bob_same_key = client(base, "bob").post("/v1/jobs", params=FAST, files=files, headers=key)
        wait_for_job(api, first.json()["id"])
        certify_key = {**PNG, "Idempotency-Key": "one-image"}
        certified = api.post("/v1/certify", params=FAST, content=RED, headers=certify_key)
        certified_again = api.post("/v1/certify", params=FAST, content=RED, headers=certify_key)
        cancel_key = {"Idempotency-Key": "stop-it"}
        long_job = api.post(
            "/v1/jobs", params={"n0": 5, "n": 400, "selection": "leader"}, files={"files": ("c.png", RED)}
        ).json()
        stopped = api.post(f"/v1/jobs/{long_job['id']}/cancel", headers=cancel_key)
        stopped_again = api.post(f"/v1/jobs/{long_job['id']}/cancel", headers=cancel_key)
        jobs = api.get("/v1/jobs").json()["jobs"]
        paid_by_alice = api.get("/v1/budget").json()["spent"]["billable_queries"]

    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert other_body.status_code == 422 and other_body.json()["code"] == "idempotency_key_reused"
    assert (
        bob_same_key.status_code == 202 and bob_same_key.json()["id"] != first.json()["id"]
    )  # keys are per tenant
    assert certified.status_code == certified_again.status_code == 200
    assert certified_again.json() == certified.json()
    assert stopped.status_code == stopped_again.status_code == 200
    assert stopped_again.json()["status"] == "cancelled"
    assert len(jobs) == 3  # the batch, the certify, the cancelled job: each made once
    assert paid_by_alice == 2 * 26 + 26 + stopped.json()["spend"]["billable_queries"]


def test_a_client_that_gives_up_on_certify_can_fetch_its_result(
    tmp_path: Path, slow_vendor: Emulator
) -> None:
    config = service_config(tmp_path, slow_vendor.endpoint, limits=VendorLimits(concurrency=1))
    with ServerThread(create_app(config)) as base, client(base) as api:
        key = {**PNG, "Idempotency-Key": "retry-me"}
        with pytest.raises(httpx.ReadTimeout):
            api.post("/v1/certify", params=FAST, content=RED, headers=key, timeout=0.2)
        retried = api.post("/v1/certify", params=FAST, content=RED, headers=key)
        asynchronous = api.post(
            "/v1/certify", params=FAST, content=GREEN, headers={**PNG, "Prefer": "respond-async"}
        )
        location = asynchronous.headers["Location"]
        finished = wait_for_job(api, location.rsplit("/", 1)[1])
        results = api.get(f"{location}/results").json()["results"]

    assert retried.status_code == 200, retried.text
    assert retried.json()["result"]["label"] == "goldfish"
    assert retried.json()["job"]["spend"]["billable_queries"] == 26  # the job ran once, on its own
    assert asynchronous.status_code == 202
    assert asynchronous.headers["Preference-Applied"] == "respond-async"
    assert asynchronous.json()["status"] == "running"
    assert finished["status"] == "done" and results[0]["label"] == "tree frog"
    assert slow_vendor.billable == 2 * 26


def test_metrics_need_their_key(tmp_path: Path, vendor: Emulator) -> None:
    keyed = service_config(tmp_path / "keyed", vendor.endpoint)
    anonymous = service_config(tmp_path / "anonymous", vendor.endpoint, metrics=MetricsConfig(None))
    unlabelled = service_config(
        tmp_path / "unlabelled",
        vendor.endpoint,
        metrics=MetricsConfig(hash_key(METRICS_KEY), tenant_labels=False),
    )
    with ServerThread(create_app(keyed)) as base, client(base) as api:
        api.post("/v1/certify", params=FAST, content=RED, headers=PNG)
        refused = api.get("/metrics", headers={"Authorization": "Bearer nope"})
        tenant_key = api.get("/metrics")  # a tenant's key is not the metrics key
        scraped = api.get("/metrics", headers=SCRAPER)
    with ServerThread(create_app(anonymous)) as base:
        off = httpx.get(f"{base}/metrics")
    with ServerThread(create_app(unlabelled)) as base, client(base) as api:
        api.post("/v1/certify", params=FAST, content=RED, headers=PNG)
        without_tenants = api.get("/metrics", headers=SCRAPER).text

    assert refused.status_code == tenant_key.status_code == 401
    assert "alice" not in refused.text
    assert scraped.status_code == 200 and 'tenant="alice"' in scraped.text
    assert 'apiwrap_refusals_total{reason="unauthorized"} 2.0' in scraped.text
    assert off.status_code == 404 and "--create-metrics-key" in off.json()["detail"]
    assert "alice" not in without_tenants
    assert 'apiwrap_spend_micro_usd_total{vendor="aws"} 26000.0' in without_tenants


def _raw_request(base: str, data: bytes, wait_s: float) -> tuple[bytes, float]:
    """Send ``data`` on a fresh connection and read until the server closes it; (answer, seconds)."""
    host, port = base.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=wait_s) as connection:
        connection.sendall(data)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer, time.monotonic() - started


def test_error_bodies_of_every_status_are_problem_json(tmp_path: Path, vendor: Emulator) -> None:
    strict = emulator("aws", EmulatorConfig(classify=fake_classify, api_key="the-real-key"))
    with strict as refusing_endpoint:
        config = service_config(
            tmp_path,
            vendor.endpoint,
            caps={"carol": {"max_queries": 10}},
            max_request_bytes=100_000,
            max_running_jobs_per_tenant=1,
            body_timeout_s=0.5,
        )
        refusing = service_config(tmp_path / "refusing", refusing_endpoint)
        with ServerThread(create_app(config)) as base, client(base) as api, client(base, "carol") as carol:
            running = api.post(
                "/v1/jobs",
                params={"n0": 5, "n": 5000, "selection": "leader"},
                files={"files": ("a.png", RED)},
            )
            answers = {
                400: api.post("/v1/certify", files=[("file", ("a.png", RED)), ("file", ("b.png", RED))]),
                401: api.get("/v1/jobs", headers={"Authorization": "Bearer nope"}),
                402: carol.post("/v1/certify", params=FAST, content=RED, headers=PNG),
                404: api.get("/v1/jobs/job-000000000000000000000000"),
                405: api.put("/v1/jobs"),
                413: api.post("/v1/certify", content=b"\0" * 200_000, headers=PNG),
                415: api.post("/v1/certify", content=b"hello", headers={"Content-Type": "text/plain"}),
                422: api.post("/v1/certify", params={"sigma": -1}, content=RED, headers=PNG),
                503: api.post("/v1/jobs", params=FAST, files={"files": ("b.png", RED)}),
            }
            api.delete(f"/v1/jobs/{running.json()['id']}")
            answers[409] = api.delete(f"/v1/jobs/{running.json()['id']}")
            slow_body, _ = _raw_request(
                base,
                b"POST /v1/certify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer key-alice\r\n"
                b"Content-Type: image/png\r\nContent-Length: 1000\r\n\r\n\x89PNG",
                wait_s=10,
            )
        with ServerThread(create_app(refusing)) as base, client(base) as api:
            answers[502] = api.post("/v1/certify", params=FAST, content=RED, headers=PNG)

    for status, response in answers.items():
        assert response.status_code == status, (status, response.text)
        assert response.headers["Content-Type"] == "application/problem+json", status
        body = response.json()
        assert body["status"] == status and isinstance(body["detail"], str) and body["title"]
        assert body["type"] == f"tag:apiwrap.dev,2026:problem:{body['code']}"
        assert body["request_id"] == response.headers["X-Request-ID"]
    assert answers[422].json()["errors"][0]["loc"] == ["query", "sigma"]
    head, _, payload = slow_body.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408") and b"application/problem+json" in head
    assert json.loads(payload)["code"] == "request_timeout"


def test_request_ids_are_echoed_and_logged_with_job_events(
    tmp_path: Path, vendor: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="apiwrap.service")
    config = service_config(tmp_path, vendor.endpoint)
    with ServerThread(create_app(config)) as base, client(base) as api:
        given = api.post("/v1/certify", params=FAST, content=RED, headers={**PNG, "X-Request-ID": "trace-42"})
        made_up = api.get("/v1/jobs", headers={"X-Request-ID": "not a token"})

    assert given.headers["X-Request-ID"] == "trace-42"
    assert made_up.headers["X-Request-ID"] != "not a token" and len(made_up.headers["X-Request-ID"]) == 32
    events = {record.getMessage(): record for record in caplog.records if record.name == "apiwrap.service"}
    assert {"job.admitted", "job.finished"} <= set(events)
    finished = json.loads(JsonFormatter().format(events["job.finished"]))
    assert finished["request_id"] == "trace-42"
    assert finished["job"] == given.json()["job"]["id"] and finished["status"] == "done"
    assert finished["spent_micro_usd"] == 26_000 and finished["tenant"] == "alice"


def test_job_pages_follow_the_cursor(tmp_path: Path, vendor: Emulator) -> None:
    config = service_config(tmp_path, vendor.endpoint)
    with ServerThread(create_app(config)) as base, client(base) as api:
        made = [
            api.post("/v1/jobs", params={"mode": "predict", "n": 2}, files={"files": ("a.png", RED)}).json()[
                "id"
            ]
            for _ in range(5)
        ]
        pages, cursor = [], None
        while True:
            page = api.get("/v1/jobs", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
            pages.append(page.json())
            cursor = page.json()["next_cursor"]
            if cursor is None:
                break
            assert page.headers["Link"] == f'</v1/jobs?limit=2&cursor={cursor}>; rel="next"'
        forged = api.get("/v1/jobs", params={"cursor": "bm9wZQ"})
        options = api.options(f"/v1/jobs/{made[0]}")

    assert [len(page["jobs"]) for page in pages] == [2, 2, 1]
    assert [job["id"] for page in pages for job in page["jobs"]] == made
    assert forged.status_code == 422 and forged.json()["code"] == "invalid_request"
    assert options.status_code == 204
    assert set(options.headers["Allow"].split(", ")) == {"GET", "DELETE", "OPTIONS"}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_are_owner_only(tmp_path: Path, vendor: Emulator) -> None:
    previous = os.umask(0o022)
    try:
        config_file = tmp_path / "service.toml"
        config_file.write_text("[vendors.local]\n")  # 0644 under this umask: adding a tenant restricts it
        add_tenant(config_file, "acme")
        config = service_config(tmp_path, vendor.endpoint)
        with ServerThread(create_app(config)) as base, client(base) as api:
            job = api.post("/v1/certify", params=FAST, content=RED, headers=PNG).json()["job"]
            runs = config.runs_dir
            modes = {path.name: _mode(path) for path in runs.iterdir()}  # the store's WAL is open
    finally:
        os.umask(previous)
    assert _mode(config_file) == 0o600
    assert _mode(runs) == 0o700
    assert {"service.sqlite", "service.sqlite-wal", f"{job['id']}.sqlite"} <= set(modes)
    assert modes == dict.fromkeys(modes, 0o600)


def test_prune_deletes_old_finished_jobs_but_keeps_their_spend(tmp_path: Path, vendor: Emulator) -> None:
    config_file = tmp_path / "service.toml"
    config_file.write_text(
        f'[service]\nruns_dir = "runs"\n\n[vendors.aws]\noptions = {{ endpoint = "{vendor.endpoint}" }}\n'
    )
    key = add_tenant(config_file, "acme", max_queries=100)
    config = load_config(config_file)
    with ServerThread(create_app(config)) as base:
        api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        job = api.post("/v1/certify", params=FAST, content=RED, headers=PNG).json()["job"]
    app = typer.Typer()
    app.command()(serve)
    kept = CliRunner().invoke(app, ["--config", str(config_file), "--prune", "--retention-days", "1"])
    pruned = CliRunner().invoke(
        app, ["--config", str(config_file), "--prune", "--retention-days", "0.000001"]
    )
    with ServerThread(create_app(config)) as base:
        api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        gone = api.get(f"/v1/jobs/{job['id']}")
        budget = api.get("/v1/budget").json()

    assert kept.exit_code == 0 and "pruned 0 " in kept.stdout
    assert pruned.exit_code == 0 and "pruned 1 " in pruned.stdout
    assert gone.status_code == 404
    assert not (config.runs_dir / f"{job['id']}.sqlite").exists()
    assert budget["spent"]["billable_queries"] == 26 and budget["remaining"]["queries"] == 74


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_serve_with_no_config_starts_on_the_embedded_default(tmp_path: Path) -> None:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", "from apiwrap.cli.main import app; app()", "serve", "--port", str(port)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stderr=subprocess.PIPE,
        text=True,
    )
    health: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not health:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).json()
            except httpx.TransportError:
                time.sleep(0.2)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=60)
    written = tmp_path / "apiwrap-service.toml"
    assert health == {"status": "ok", "vendors": ["local"], "jobs_running": 0}
    assert _mode(written) == 0o600
    assert f"apiwrap serve --config {written.name} --create-tenant NAME" in stderr
    assert load_config(written).vendors.keys() == {"local"}


def _budget_status(base: str, key: str) -> int:
    return httpx.get(f"{base}/v1/budget", headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code


def _after_sighup(process: subprocess.Popen[str], check: Callable[[], bool]) -> bool:
    """Send SIGHUP and wait (30 s at most) for ``check`` to hold; whether it did."""
    process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def test_sighup_reloads_the_tenants_without_a_restart(tmp_path: Path) -> None:
    config_file = tmp_path / "service.toml"
    # No query is sent in this test: the vendor's endpoint is never called.
    config_file.write_text(
        '[service]\nruns_dir = "runs"\n\n[vendors.aws]\noptions = { endpoint = "http://127.0.0.1:9" }\n'
    )
    old_key = add_tenant(config_file, "zed")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-c", "from apiwrap.cli.main import app; app()", "serve"]
    # The server's log goes to a file: a pipe nobody reads until the end fills and blocks it.
    log = tmp_path / "server.log"
    with log.open("w") as log_file:
        process = subprocess.Popen(
            [*command, "--config", str(config_file), "--port", str(port)],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stderr=log_file,
            text=True,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None and time.monotonic() < deadline, "the server did not start"
            try:
                httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        new_key = add_tenant(config_file, "acme", max_queries=100)
        before_reload = _budget_status(base, new_key)
        added = _after_sighup(process, lambda: _budget_status(base, new_key) == 200)
        config_file.write_text(
            config_file.read_text()
            .replace("max_queries = 100", "max_queries = 50")
            .replace("[tenants.zed]", "[old.zed]")
        )
        broken = _after_sighup(
            process, lambda: _budget_status(base, old_key) == 401
        )  # [old] is not a table we know
        zed_table = r"\[old\.zed\]\n(?:(?:#.*|[a-z0-9_]+ = .*)\n)*"
        config_file.write_text(re.sub(zed_table, "", config_file.read_text()))
        revoked = _after_sighup(process, lambda: _budget_status(base, old_key) == 401)
        acme = httpx.get(f"{base}/v1/budget", headers={"Authorization": f"Bearer {new_key}"}).json()
    finally:
        process.terminate()
        process.wait(timeout=60)
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    reloads = [event for event in events if event["msg"].startswith("tenants.")]

    assert before_reload == 401 and added
    assert not broken  # a file that does not load changes nothing: zed was still served
    assert revoked and acme["max_queries"] == 50
    assert [event["msg"] for event in reloads] == [
        "tenants.reloaded",
        "tenants.reload_failed",
        "tenants.reloaded",
    ]
    assert reloads[0]["added"] == ["acme"] and reloads[2]["removed"] == ["zed"]
    assert "unknown keys in [the top level]: old" in reloads[1]["error"]
