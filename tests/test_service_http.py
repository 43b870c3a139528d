"""The service at the HTTP level: slow and many connections, the headers every answer carries."""

from __future__ import annotations

import io
import json
import logging
import re
import socket
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi import Response

from apiwrap.service import configure_logging, create_app
from tests.test_service import ServerThread, service_config

TRICKLED_BODY = 10_000  # bytes declared; one is sent every 0.1 s, so the body would take 1,000 s


def _trickle(base: str, trickle_s: float) -> tuple[bytes, int]:
    """Declare a body of TRICKLED_BODY bytes and send one byte every 0.1 s, well inside the chunk
    timeout, for ``trickle_s``; then read the answer. (The answer, bytes of the body sent.)

    The trickle stops before the server's deadline: a byte arriving as the server closes would
    make it reset the connection and lose its answer."""
    host, port = base.removeprefix("http://").split(":")
    sent = 0
    answer = b""
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(
            b"POST /v1/certify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer key-alice\r\n"
            b"Content-Type: image/png\r\nContent-Length: %d\r\n\r\n" % TRICKLED_BODY
        )
        stop_sending = time.monotonic() + trickle_s
        while time.monotonic() < stop_sending:
            connection.sendall(b"\0")
            sent += 1
            time.sleep(0.1)
        while chunk := connection.recv(65536):
            answer += chunk
    return answer, sent


def test_a_body_trickled_inside_the_chunk_timeout_is_cut_at_the_body_deadline(tmp_path: Path) -> None:
    config = service_config(tmp_path, "http://127.0.0.1:9", body_timeout_s=5, body_deadline_s=2)
    with ServerThread(create_app(config)) as base, ThreadPoolExecutor(10) as pool:
        trickles = list(pool.map(lambda _: _trickle(base, trickle_s=1), range(10)))

    for answer, sent in trickles:
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        # The body deadline's answer, not the chunk timeout's ("no request body data for 5 s").
        assert b'"code":"request_timeout"' in answer and b"did not arrive within 2 s" in answer
        assert 0 < sent < TRICKLED_BODY


def test_connections_past_max_connections_are_answered_503(tmp_path: Path) -> None:
    config = service_config(tmp_path, "http://127.0.0.1:9", max_connections=3)
    with ServerThread(create_app(config)) as base:
        host, port = base.removeprefix("http://").split(":")
        alone = httpx.get(f"{base}/healthz")
        idle = [socket.create_connection((host, int(port))) for _ in range(3)]
        try:
            crowded = httpx.get(f"{base}/healthz")
        finally:
            for connection in idle:
                connection.close()
        deadline = time.monotonic() + 10
        while (after := httpx.get(f"{base}/healthz")).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)

    assert alone.status_code == 200
    assert crowded.status_code == 503
    assert after.status_code == 200  # the closed connections gave their places back


def _headers_of_every_kind_of_answer(tmp_path: Path) -> dict[str, httpx.Response]:
    app = create_app(service_config(tmp_path, "http://127.0.0.1:9", max_request_bytes=1000))

    async def boom() -> None:
        raise RuntimeError("a bug no handler expects")

    async def framed() -> Response:
        return Response("x", headers={"Content-Security-Policy": "default-src 'none'"})

    app.add_api_route("/test/boom", boom)
    app.add_api_route("/test/framed", framed)
    with ServerThread(app) as base, httpx.Client(base_url=base, timeout=60) as api:
        alice = {"Authorization": "Bearer key-alice"}
        return {
            "json": api.get("/healthz"),
            "openapi": api.get("/openapi.json"),
            "docs page": api.get("/docs"),
            "401": api.get("/v1/jobs"),
            "404 unknown path": api.get("/nowhere"),
            "405": api.put("/v1/jobs", headers=alice),
            "413": api.post("/v1/certify", content=b"\0" * 2000, headers=alice),
            "422": api.get("/v1/jobs", params={"limit": 0}, headers=alice),
            "500": api.get("/test/boom"),
            "own policy": api.get("/test/framed"),
        }


def test_every_answer_carries_nosniff_no_framing_and_no_store(tmp_path: Path) -> None:
    answers = _headers_of_every_kind_of_answer(tmp_path)

    assert answers["500"].status_code == 500 and answers["500"].json()["code"] == "internal_error"
    assert answers["500"].json()["request_id"] == answers["500"].headers["X-Request-ID"]
    for kind, answer in answers.items():
        policies = answer.headers.get_list("Content-Security-Policy")
        assert answer.headers["X-Content-Type-Options"] == "nosniff", kind
        assert len(policies) == 1 and "frame-ancestors 'none'" in policies[0], (kind, policies)
        assert answer.headers.get_list("Cache-Control") == ["no-store"], kind
    # A route's own policy is kept, with frame-ancestors added to it (one header, not two).
    own = answers["own policy"].headers["Content-Security-Policy"]
    assert own == "default-src 'none'; frame-ancestors 'none'"


CHROMIUM = Path("/usr/bin/chromium")


def _rendered(url: str) -> str:
    """The DOM of ``url`` after its scripts ran, in headless chromium that can reach 127.0.0.1 only."""
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        # Every host name but 127.0.0.1 fails to resolve: a CDN reference would leave the page blank.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--virtual-time-budget=15000",
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as profile:
        command = [str(CHROMIUM), *flags, f"--user-data-dir={profile}", "--dump-dom", url]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)"
)
def test_the_docs_pages_render_offline_from_the_services_own_assets(tmp_path: Path) -> None:
    config = service_config(tmp_path, "http://127.0.0.1:9")
    with ServerThread(create_app(config)) as base:
        pages = {path: httpx.get(f"{base}{path}").text for path in ("/docs", "/redoc")}
        assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css|png))"', "".join(pages.values()))
        fetched = [httpx.get(f"{base}{asset}") for asset in assets]
        swagger = _rendered(f"{base}/docs")
        redoc = _rendered(f"{base}/redoc")

    assert len(assets) >= 3 and all(asset.startswith("/docs/assets/") for asset in assets), assets
    assert all(answer.status_code == 200 for answer in fetched)
    assert all("no-store" not in answer.headers.get("Cache-Control", "") for answer in fetched)
    # Swagger UI drew the operations, grouped by tag; ReDoc drew its menu of them.
    for tag in ("certify", "jobs", "budget", "operations"):
        assert f'id="operations-tag-{tag}"' in swagger, tag
        assert f'data-item-id="tag/{tag}"' in redoc, tag
    assert 'data-item-id="tag/certify/operation/certify_v1_certify_post"' in redoc
    assert "Certify one image" in redoc


def test_every_operation_has_a_tag(tmp_path: Path) -> None:
    with ServerThread(create_app(service_config(tmp_path, "http://127.0.0.1:9"))) as base:
        schema = httpx.get(f"{base}/openapi.json").json()
    operations = [op for item in schema["paths"].values() for op in item.values()]
    declared = {tag["name"] for tag in schema["tags"]}
    assert operations and all(op.get("tags") and set(op["tags"]) <= declared for op in operations)


def test_uvicorns_access_and_error_lines_are_the_services_json_with_request_ids(tmp_path: Path) -> None:
    loggers = [logging.getLogger(name) for name in ("apiwrap", "uvicorn.error", "uvicorn.access")]
    saved = [(logger.handlers, logger.level, logger.propagate) for logger in loggers]
    stream = io.StringIO()
    try:
        server = ServerThread(create_app(service_config(tmp_path, "http://127.0.0.1:9")))
        configure_logging("info", stream)  # after the test kit's uvicorn config set warnings only
        with server as base:
            traced = httpx.get(f"{base}/healthz", headers={"X-Request-ID": "trace-7"})
            untraced = httpx.get(f"{base}/nowhere")
    finally:
        for logger, (handlers, level, propagate) in zip(loggers, saved, strict=True):
            logger.handlers, logger.propagate = handlers, propagate
            logger.setLevel(level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]  # every line is JSON

    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert [(line["method"], line["path"], line["status"], line["request_id"]) for line in access] == [
        ("GET", "/healthz", 200, "trace-7"),
        ("GET", "/nowhere", 404, untraced.headers["X-Request-ID"]),
    ]
    assert traced.status_code == 200
    assert any(line["logger"] == "uvicorn.error" and "startup complete" in line["msg"] for line in lines)
    assert all(line["time"].endswith("Z") and line["level"] in {"info", "warning", "error"} for line in lines)
