"""The service at the HTTP level: slow and many connections, the headers every answer carries."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from fastapi import Response

from apiwrap.service import create_app
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
