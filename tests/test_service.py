"""The HTTP service end to end: a real uvicorn server on 127.0.0.1, an httpx client, an emulated vendor."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from PIL import Image

from apiwrap.adapters.emulators import Emulator, EmulatorConfig, emulator
from apiwrap.engine.scheduler import VendorLimits
from apiwrap.service import (
    MetricsConfig,
    ServiceConfig,
    TenantConfig,
    VendorConfig,
    create_app,
    hash_key,
    uvicorn_config,
)
from apiwrap.testing import fake_classify, solid_png

RED = solid_png((200, 30, 30))  # fake_classify: "goldfish"
GREEN = solid_png((30, 200, 30))  # "tree frog"
FAST = {"n0": 5, "n": 20, "selection": "leader"}  # 1 + 5 + 20 = 26 queries per image
KEYS = {"alice": "key-alice", "bob": "key-bob", "carol": "key-carol"}
METRICS_KEY = "key-metrics"
SCRAPER = {"Authorization": f"Bearer {METRICS_KEY}"}


class ServerThread:
    """uvicorn serving ``app`` on a free port of 127.0.0.1 in a thread, lifespan included."""

    def __init__(self, app: FastAPI) -> None:
        config = uvicorn_config(app, app.state.config, host="127.0.0.1", port=0, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def service_config(tmp_path: Path, endpoint: str, **overrides: Any) -> ServiceConfig:
    caps: dict[str, dict[str, Any]] = overrides.pop("caps", {})
    tenants = {name: TenantConfig(name, hash_key(key), **caps.get(name, {})) for name, key in KEYS.items()}
    limits = overrides.pop("limits", VendorLimits(concurrency=4))
    metrics = overrides.pop("metrics", MetricsConfig(hash_key(METRICS_KEY)))
    return ServiceConfig(
        runs_dir=tmp_path / "runs",
        vendors={"aws": VendorConfig("aws", limits, {"endpoint": endpoint})},
        tenants=tenants,
        metrics=metrics,
        **overrides,
    )


def client(base: str, tenant: str | None = "alice") -> httpx.Client:
    headers = {"Authorization": f"Bearer {KEYS[tenant]}"} if tenant else {}
    return httpx.Client(base_url=base, headers=headers, timeout=60)


def wait_for_job(api: httpx.Client, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = api.get(f"/v1/jobs/{job_id}").json()
        if status["status"] != "running":
            return status
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still running after {timeout_s} s")


@pytest.fixture
def vendor() -> Iterator[Emulator]:
    running = emulator("aws", EmulatorConfig(classify=fake_classify))
    running.start()
    yield running
    running.stop()


@pytest.fixture
def server(tmp_path: Path, vendor: Emulator) -> Iterator[str]:
    with ServerThread(
        create_app(service_config(tmp_path, vendor.endpoint, max_request_bytes=200_000))
    ) as base:
        yield base


def test_certify_and_predict_end_to_end(server: str, vendor: Emulator) -> None:
    with client(server) as api:
        raw = api.post("/v1/certify", params=FAST, content=RED, headers={"Content-Type": "image/png"})
        form = api.post("/v1/predict", data={"n": "20"}, files={"file": ("leaf.png", GREEN, "image/png")})
        metrics = api.get("/metrics", headers=SCRAPER).text

    assert raw.status_code == 200, raw.text
    certified = raw.json()
    assert certified["result"]["status"] == "certified"
    assert certified["result"]["label"] == "goldfish"
    assert certified["result"]["radius"] > 0
    assert certified["job"]["progress"] == {"queries_done": 26, "queries_total": 26}
    # aws: $1 per 1,000
    assert certified["job"]["spend"] == {
        "cost": {"amount": "0.026", "currency": "USD"},
        "billable_queries": 26,
        "possibly_billed_queries": 0,
    }

    assert form.status_code == 200, form.text
    predicted = form.json()
    assert predicted["result"]["status"] == "predicted"
    assert predicted["result"]["label"] == "tree frog"
    assert predicted["result"]["image"] == "leaf.png"
    assert predicted["job"]["settings"]["n"] == 20  # the form field overrode the default

    assert vendor.billable == 26 + 21  # every query paid once, nothing else
    assert 'apiwrap_vendor_queries_total{outcome="ok",vendor="aws"} 47.0' in metrics
    assert 'apiwrap_certificates_total{mode="certify",vendor="aws"} 1.0' in metrics
    assert 'apiwrap_spend_micro_usd_total{tenant="alice",vendor="aws"} 47000.0' in metrics
    assert 'apiwrap_budget_spent_micro_usd{tenant="alice"} 47000.0' in metrics
    assert 'apiwrap_http_requests_total{method="POST",route="/v1/certify",status="200"} 1.0' in metrics
    assert 'apiwrap_http_request_seconds_count{method="POST",route="/v1/predict"} 1.0' in metrics
    assert "apiwrap_vendor_request_seconds_count" in metrics


def test_batch_job_progress_results_and_openapi(server: str) -> None:
    files = [("files", (f"photo {i}.png", RED if i % 2 else GREEN, "image/png")) for i in range(3)]
    with client(server) as api:
        created = api.post("/v1/jobs", params=FAST, files=files)
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        assert created.headers["Location"] == f"/v1/jobs/{job_id}"
        final = wait_for_job(api, job_id)
        results = api.get(f"/v1/jobs/{job_id}/results").json()["results"]
        by_form = api.post("/v1/jobs", data={"mode": "predict", "n": "20"}, files={"files": ("g.png", GREEN)})
        predicted = wait_for_job(api, by_form.json()["id"])
        predictions = api.get(f"/v1/jobs/{predicted['id']}/results").json()["results"]
        listed = api.get("/v1/jobs").json()
        schema = api.get("/openapi.json").json()
        health = api.get("/healthz").json()

    assert final["status"] == "done"
    assert final["progress"] == {"queries_done": 78, "queries_total": 78}
    assert final["spend"]["billable_queries"] == 78
    assert [r["image"] for r in results] == ["photo 0.png", "photo 1.png", "photo 2.png"]
    assert [r["label"] for r in results] == ["tree frog", "goldfish", "tree frog"]
    assert all(r["status"] == "certified" for r in results)
    assert predicted["settings"]["mode"] == "predict" and predicted["progress"]["queries_total"] == 21
    assert [(r["status"], r["label"]) for r in predictions] == [("predicted", "tree frog")]
    assert [job["id"] for job in listed["jobs"]] == [job_id, predicted["id"]]
    assert listed["next_cursor"] is None
    assert {"/v1/certify", "/v1/predict", "/v1/jobs", "/v1/jobs/{job_id}", "/metrics"} <= set(schema["paths"])
    assert health["status"] == "ok"


def test_auth_failures_and_tenant_isolation(server: str, vendor: Emulator) -> None:
    with client(server) as alice, client(server, "bob") as bob, client(server, None) as anonymous:
        job_id = alice.post("/v1/jobs", params=FAST, files={"files": ("a.png", RED, "image/png")}).json()[
            "id"
        ]
        no_key = anonymous.post("/v1/certify", content=RED, headers={"Content-Type": "image/png"})
        bad_key = anonymous.get(f"/v1/jobs/{job_id}", headers={"Authorization": "Bearer nope"})
        peeks = [
            bob.get(f"/v1/jobs/{job_id}"),
            bob.get(f"/v1/jobs/{job_id}/results"),
            bob.post(f"/v1/jobs/{job_id}/cancel"),
            bob.delete(f"/v1/jobs/{job_id}"),
        ]
        missing = bob.get("/v1/jobs/job-000000000000000000000000")
        bob_jobs = bob.get("/v1/jobs").json()["jobs"]
        wait_for_job(alice, job_id)
        bob_budget = bob.get("/v1/budget").json()

    assert no_key.status_code == 401 and no_key.headers["WWW-Authenticate"] == "Bearer"
    assert no_key.json()["code"] == "unauthorized"
    assert bad_key.status_code == 401
    # Another tenant's job answers exactly like a job that does not exist.
    assert [peek.status_code for peek in peeks] == [404] * 4
    assert peeks[0].json()["detail"].replace(job_id, "X") == missing.json()["detail"].replace(
        "job-000000000000000000000000", "X"
    )
    assert bob_jobs == []
    assert bob_budget["spent"] == {"cost": {"amount": "0.00", "currency": "USD"}, "billable_queries": 0}
    assert vendor.billable == 26  # only alice's job reached the vendor


def test_a_request_the_tenant_cannot_pay_for_is_refused_before_any_query(
    tmp_path: Path, vendor: Emulator
) -> None:
    config = service_config(tmp_path, vendor.endpoint, caps={"carol": {"max_queries": 30}})
    with ServerThread(create_app(config)) as base, client(base, "carol") as api:
        first = api.post("/v1/certify", params=FAST, content=RED, headers={"Content-Type": "image/png"})
        paid_for_first = vendor.billable
        doomed = api.post("/v1/certify", params=FAST, content=GREEN, headers={"Content-Type": "image/png"})
        doomed_batch = api.post(
            "/v1/jobs", params={"n0": 1, "n": 1, "selection": "leader"}, files=[("files", ("a.png", RED))] * 2
        )
        budget = api.get("/v1/budget").json()
        jobs = api.get("/v1/jobs").json()["jobs"]
        paid_after_refusals = vendor.billable
        other = client(base, "alice").post(
            "/v1/certify", params=FAST, content=RED, headers={"Content-Type": "image/png"}
        )

    assert first.status_code == 200, first.text
    # 4 queries are left and the design needs 26: refused with the cap's own figures, nothing bought.
    assert doomed.status_code == 402
    body = doomed.json()
    assert body["code"] == "budget_exceeded"
    assert (body["cap"], body["limit"], body["spent"], body["requested"]) == ("queries", 30, 30 - 4, 26)
    # two images of 1 + 1 + 1 queries need 6 of the 4 left
    assert doomed_batch.status_code == 402 and doomed_batch.json()["requested"] == 6
    assert paid_after_refusals == paid_for_first == 26
    assert budget["spent"]["billable_queries"] == 26 and budget["remaining"]["queries"] == 4
    assert len(jobs) == 1  # the refused requests left no job behind
    assert other.status_code == 200  # one tenant's exhausted budget is not another's


def test_a_job_whose_allowance_runs_out_answers_402_naming_the_job_and_what_it_bought(
    tmp_path: Path,
) -> None:
    # Every other answer is malformed: billed and retried, so the job's 10% retry margin runs out.
    faulty = emulator("aws", EmulatorConfig(classify=fake_classify, fault_rates={"malformed": 0.5}))
    with faulty as endpoint:
        config = service_config(tmp_path, endpoint, caps={"carol": {"max_queries": 40}})
        with ServerThread(create_app(config)) as base, client(base, "carol") as api:
            partial = api.post("/v1/certify", params=FAST, content=RED, headers={"Content-Type": "image/png"})
            job = api.get(partial.headers["Location"]).json()

    assert partial.status_code == 402, partial.text
    body = partial.json()
    assert body["code"] == "budget_ran_out"
    assert body["job"]["id"] == job["id"] and partial.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert job["id"] in body["detail"]
    assert body["job"]["budget_exhausted"] is True
    assert body["job"]["spend"]["billable_queries"] == job["spend"]["billable_queries"] == faulty.billable
    assert body["result"]["status"] == "budget"
    assert 0 < body["result"]["queries"] < 26  # the votes it did buy, reported


def _gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (96, 96), (200, 30, 30)).save(buffer, "GIF")
    return buffer.getvalue()


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` RGB pixels and holds almost none of them."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


def test_upload_limits_are_checked_before_any_work(server: str, vendor: Emulator) -> None:
    png = {"Content-Type": "image/png"}

    def chunks() -> Iterator[bytes]:
        for _ in range(30):
            yield b"\x00" * 10_000

    with client(server) as api:
        too_long = api.post("/v1/certify", content=b"\x89PNG" + b"\x00" * 250_000, headers=png)
        streamed = api.post("/v1/certify", content=chunks(), headers=png)  # chunked: no Content-Length
        gif = api.post("/v1/certify", content=_gif(), headers={"Content-Type": "image/gif"})
        gif_as_png = api.post("/v1/certify", content=_gif(), headers=png)
        text = api.post("/v1/certify", content=b"hello", headers={"Content-Type": "text/plain"})
        truncated = api.post("/v1/certify", content=RED[: len(RED) // 2], headers=png)
        empty = api.post("/v1/certify", content=b"", headers=png)
        no_file = api.post("/v1/jobs", data={"n": "5"}, files={"other": ("x.txt", b"", "text/plain")})
        bad_sigma = api.post("/v1/certify", params={"sigma": -1}, content=RED, headers=png)
        bad_vendor = api.post("/v1/certify", params={"vendor": "../../etc"}, content=RED, headers=png)
        bad_denoiser = api.post("/v1/certify", params={"denoiser": "/tmp/x.pt"}, content=RED, headers=png)
        unknown = api.post("/v1/certify", params={"shell": "rm"}, content=RED, headers=png)
        too_small_for_aws = api.post("/v1/certify", content=solid_png(size=(40, 40)), headers=png)
        bomb = api.post("/v1/certify", content=_png_header(30_000, 30_000), headers=png)

    assert (too_long.status_code, streamed.status_code) == (413, 413)
    assert too_long.json()["code"] == streamed.json()["code"] == "payload_too_large"
    assert gif.status_code == gif_as_png.status_code == text.status_code == 415
    assert truncated.status_code == 422 and "truncated" in truncated.json()["detail"]
    assert empty.status_code == 422
    assert no_file.status_code == 422
    assert bad_sigma.status_code == bad_vendor.status_code == bad_denoiser.status_code == 422
    assert unknown.status_code == 422
    # Samples the vendor's limits would refuse (AWS: sides of 80 pixels at least).
    assert too_small_for_aws.status_code == 422
    assert too_small_for_aws.json()["code"] == "rejected_by_vendor"
    # Pillow will not even open a header of 900 million pixels (DecompressionBombError): 422, not 500.
    assert bomb.status_code == 422 and "too large to decode safely" in bomb.json()["detail"]
    assert vendor.calls == 0


def test_cancel_stops_a_running_job_and_busy_tenants_wait(tmp_path: Path) -> None:
    slow = emulator("aws", EmulatorConfig(classify=fake_classify, latency_ms=20))
    with slow as endpoint:
        config = service_config(
            tmp_path, endpoint, limits=VendorLimits(concurrency=2), max_running_jobs_per_tenant=1
        )
        with ServerThread(create_app(config)) as base, client(base) as api, client(base, "bob") as bob:
            long_job = {"n0": 5, "n": 200}
            job_id = api.post("/v1/jobs", params=long_job, files={"files": ("a.png", RED)}).json()["id"]
            busy = api.post("/v1/jobs", params=long_job, files={"files": ("b.png", RED)})
            other_tenant = bob.post("/v1/jobs", params=long_job, files={"files": ("c.png", RED)})
            while api.get(f"/v1/jobs/{job_id}").json()["progress"]["queries_done"] < 10:
                time.sleep(0.02)
            cancelled = api.post(f"/v1/jobs/{job_id}/cancel")
            again = api.delete(f"/v1/jobs/{job_id}")
            budget = api.get("/v1/budget").json()
            bob.delete(f"/v1/jobs/{other_tenant.json()['id']}")
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "5"
    assert busy.json()["code"] == "tenant_busy"
    assert other_tenant.status_code == 202  # one tenant's limit is not another's
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert 10 <= cancelled.json()["progress"]["queries_done"] < 206
    assert again.status_code == 409
    assert budget["held_by_running_jobs"]["billable_queries"] == 0
    assert budget["spent"]["billable_queries"] == cancelled.json()["spend"]["billable_queries"]


def test_vendor_refusing_our_credentials_answers_502(tmp_path: Path) -> None:
    strict = emulator("aws", EmulatorConfig(classify=fake_classify, api_key="the-real-key"))
    with (
        strict as endpoint,
        ServerThread(create_app(service_config(tmp_path, endpoint))) as base,
        client(base) as api,
    ):
        response = api.post("/v1/certify", params=FAST, content=RED, headers={"Content-Type": "image/png"})
    assert response.status_code == 502
    assert response.json()["code"] == "vendor_failed"
    assert "the-real-key" not in response.text
    assert strict.billable == 0


def test_concurrent_jobs_of_one_tenant_never_pass_its_cap(tmp_path: Path) -> None:
    # 50 ms per query: each job runs for about a second, so all three are admitted while the others run.
    slow = emulator("aws", EmulatorConfig(classify=fake_classify, latency_ms=50))
    with slow as endpoint:
        config = service_config(tmp_path, endpoint, caps={"carol": {"max_queries": 60}})
        with ServerThread(create_app(config)) as base, client(base, "carol") as api:
            jobs = [
                api.post("/v1/jobs", params=FAST, files={"files": (f"{i}.png", RED, "image/png")}).json()
                for i in range(3)
            ]
            finals = [wait_for_job(api, job["id"]) for job in jobs[:2]]
            budget = api.get("/v1/budget").json()
            paid_by_jobs = slow.billable
            last = api.post("/v1/certify", params=FAST, content=RED, headers={"Content-Type": "image/png"})

    # Two jobs fit (26 queries each, plus their retry margin); the third could not and was refused.
    assert jobs[2]["code"] == "budget_exceeded"
    assert [final["spend"]["billable_queries"] for final in finals] == [26, 26]
    assert paid_by_jobs == budget["spent"]["billable_queries"] == 52
    assert budget["held_by_running_jobs"]["billable_queries"] == 0
    assert last.status_code == 402  # the 8 queries left cannot pay for 26: refused, nothing spent
    assert slow.billable == 52


def test_vendor_throttles_are_retried_and_counted(tmp_path: Path) -> None:
    # The server is not told the vendor's rate limit: the vendor throttles and the jobs retry.
    strict = emulator("aws", EmulatorConfig(classify=fake_classify, tps=50, burst=1))
    with (
        strict as endpoint,
        ServerThread(create_app(service_config(tmp_path, endpoint))) as base,
        client(base) as api,
    ):
        response = api.post("/v1/certify", params=FAST, content=RED, headers={"Content-Type": "image/png"})
        metrics = api.get("/metrics", headers=SCRAPER).text
    assert response.status_code == 200
    assert response.json()["result"]["status"] == "certified"
    throttles = strict.outcomes["throttle"]
    assert throttles > 0
    assert f'apiwrap_vendor_throttles_total{{vendor="aws"}} {float(throttles)}' in metrics
    assert f'apiwrap_vendor_retries_total{{vendor="aws"}} {float(throttles)}' in metrics
    assert strict.billable == 26  # throttled attempts are not billed


def test_by_default_the_service_certifies_the_vendors_clean_label(server: str, vendor: Emulator) -> None:
    with client(server) as api:
        answer = api.post("/v1/certify", params={"n": 20}, content=RED, headers={"Content-Type": "image/png"})
    assert answer.status_code == 200, answer.text
    result = answer.json()["result"]
    # no selection query: the clean image and 20 estimation samples
    assert (result["candidate"], result["queries"]) == (result["reference_label"], 1 + 20)
    assert answer.json()["job"]["spend"]["billable_queries"] == 21 == vendor.billable


def _denoisers_checked(caplog: pytest.LogCaptureFixture) -> list[tuple[str, float]]:
    return [
        (record.event["denoiser"], record.event["sigma"])  # type: ignore[attr-defined]
        for record in caplog.records
        if record.getMessage() == "denoiser.checked"
    ]


def test_the_denoiser_is_loaded_only_for_an_admitted_request(
    tmp_path: Path, vendor: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="apiwrap.service")
    config = service_config(
        tmp_path, vendor.endpoint, caps={"carol": {"max_queries": 10}}, max_running_jobs_per_tenant=1
    )
    png = {"Content-Type": "image/png"}
    params = {**FAST, "sigma": 0.5, "denoiser": "fast-mse-s050"}
    with ServerThread(create_app(config)) as base, client(base) as alice, client(base, "carol") as carol:
        unpaid = carol.post("/v1/certify", params=params, content=RED, headers=png)
        long_job = {"n0": 5, "n": 5000, "selection": "leader", "sigma": 0.25, "denoiser": "fast-mse-s025"}
        running = alice.post("/v1/jobs", params=long_job, files={"files": ("a.png", RED)}).json()
        busy = alice.post("/v1/certify", params=params, content=RED, headers=png)
        checked_while_refusing = _denoisers_checked(caplog)
        alice.delete(f"/v1/jobs/{running['id']}")
        wrong_sigma = alice.post(
            "/v1/certify", params={**params, "denoiser": "fast-mse-s025"}, content=RED, headers=png
        )
        held_after_wrong_sigma = alice.get("/v1/budget").json()["held_by_running_jobs"]["billable_queries"]
        paid = alice.post("/v1/certify", params=params, content=RED, headers=png)
        again = alice.post("/v1/certify", params=params, content=GREEN, headers=png)
        jobs = alice.get("/v1/jobs").json()["jobs"]

    assert unpaid.status_code == 402 and busy.status_code == 503
    # Only the admitted long job's denoiser was loaded: the refused requests cost no load.
    assert checked_while_refusing == [("fast-mse-s025", 0.25)]
    # A denoiser trained for another sigma is still refused (422), and gives its admission back.
    assert wrong_sigma.status_code == 422 and "0.25" in wrong_sigma.json()["detail"]
    assert held_after_wrong_sigma == 0 and len(jobs) == 3
    assert paid.status_code == again.status_code == 200
    assert _denoisers_checked(caplog) == [("fast-mse-s025", 0.25), ("fast-mse-s050", 0.5)]  # once each


def test_money_is_a_decimal_string_with_its_currency_and_times_are_iso_utc(
    tmp_path: Path, vendor: Emulator
) -> None:
    config = service_config(tmp_path, vendor.endpoint, caps={"carol": {"max_usd": Decimal("0.03")}})
    png = {"Content-Type": "image/png"}
    with ServerThread(create_app(config)) as base, client(base, "carol") as api:
        paid = api.post("/v1/certify", params=FAST, content=RED, headers=png).json()
        refused = api.post("/v1/certify", params=FAST, content=GREEN, headers=png).json()
        budget = api.get("/v1/budget").json()

    def usd(amount: str) -> dict[str, str]:
        return {"amount": amount, "currency": "USD"}

    assert paid["job"]["spend"]["cost"] == usd("0.026")  # aws: $1 per 1,000 images
    assert (refused["cap"], refused["limit"], refused["spent"], refused["requested"]) == (
        "usd",
        usd("0.03"),
        usd("0.026"),
        usd("0.026"),
    )
    assert budget["max_cost"] == usd("0.03") and budget["remaining"]["cost"] == usd("0.004")
    assert budget["held_by_running_jobs"]["cost"] == usd("0.00")
    created, finished = paid["job"]["created_at"], paid["job"]["finished_at"]
    assert created.endswith("Z") and finished.endswith("Z")
    assert datetime.fromisoformat(created) <= datetime.fromisoformat(finished)
    assert datetime.fromisoformat(created).utcoffset() == timedelta(0)
