"""What every request passes through before its route: request ids, HTTP metrics, read timeouts,
the security headers.

:class:`RequestContext` (ASGI middleware) gives each request an id (the client's ``X-Request-ID``
when it is a sane token, else a new one), echoes it on the response and puts it in every log
line written meanwhile; adds the headers of :func:`security_headers` to every answer (an
unexpected error's 500 included: it answers that one itself); counts the answer by route
template, method and status with its latency, and error answers by reason; and bounds the wait
for each chunk of the body and for the whole body (so a client trickling a byte now and then
still cannot hold its socket for long).

:func:`uvicorn_config` sets what only the server can: how many connections may be open.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from apiwrap.service._config import ServiceConfig
from apiwrap.service._errors import PayloadTooLarge, RequestTimeout, internal_error, problem
from apiwrap.service._logging import request_id_var
from apiwrap.service._metrics import Metrics

__all__ = ["BodyLimit", "RequestContext", "security_headers", "uvicorn_config"]

_log = logging.getLogger("apiwrap.service")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_NO_FRAMING = "frame-ancestors 'none'"


def security_headers(headers: list[tuple[bytes, bytes]], *, cacheable: bool) -> list[tuple[bytes, bytes]]:
    """``headers`` with ``X-Content-Type-Options: nosniff``, ``frame-ancestors 'none'`` in the one
    Content-Security-Policy (added to the route's own policy, if it has one) and, unless
    ``cacheable`` (the static assets of the docs pages), ``Cache-Control: no-store``: answers
    carry tenants' results and spend, which no cache should keep."""
    replaced = {b"content-security-policy", b"cache-control"}
    kept = [(key, value) for key, value in headers if key not in replaced]
    policies = [value for key, value in headers if key == b"content-security-policy"]
    policy = b"; ".join(policy.strip().rstrip(b";") for policy in policies)
    if b"frame-ancestors" not in policy:
        policy = policy + b"; " + _NO_FRAMING.encode() if policy else _NO_FRAMING.encode()
    kept.append((b"content-security-policy", policy))
    if b"x-content-type-options" not in {key for key, _ in kept}:
        kept.append((b"x-content-type-options", b"nosniff"))
    if cacheable:
        kept += [(key, value) for key, value in headers if key == b"cache-control"]
    else:
        kept.append((b"cache-control", b"no-store"))
    return kept


def _request_id(scope: Scope) -> str:
    for key, value in scope["headers"]:
        if key == b"x-request-id":
            candidate = value.decode("latin-1")
            # Echoed into headers and logs: only a bounded token, never a client's free text.
            if _REQUEST_ID.match(candidate):
                return candidate
    return secrets.token_hex(16)


class RequestContext:
    """ASGI middleware: request id, HTTP metrics, ``body_timeout_s`` per chunk of the body and
    ``body_deadline_s`` for all of it, from the moment its headers are in."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        body_timeout_s: float,
        body_deadline_s: float,
        cacheable_prefix: str,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.body_timeout_s = body_timeout_s
        self.body_deadline_s = body_deadline_s
        #: Paths under it (the docs pages' static assets) may be cached; every other answer is no-store.
        self.cacheable_prefix = cacheable_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        token = request_id_var.set(request_id)
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        body_deadline = loop.time() + self.body_deadline_s
        status = 500
        reason: str | None = None
        body_done = False
        response_started = False
        cacheable = scope["path"].startswith(self.cacheable_prefix)

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()  # e.g. a disconnect watch while the response streams
            chunk_deadline = loop.time() + self.body_timeout_s
            try:
                async with asyncio.timeout_at(min(chunk_deadline, body_deadline)):
                    message = await receive()
            except TimeoutError:
                if chunk_deadline < body_deadline:
                    raise RequestTimeout(f"no request body data for {self.body_timeout_s:g} s") from None
                raise RequestTimeout(
                    f"the request body did not arrive within {self.body_deadline_s:g} s"
                ) from None
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def tagged_send(message: Message) -> None:
            nonlocal status, reason, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = security_headers(list(message.get("headers", [])), cacheable=cacheable)
                for key, value in headers:
                    if key == b"x-problem-code":
                        reason = value.decode("latin-1")
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, timed_receive, tagged_send)
        except Exception:
            if response_started:  # nothing more can be said on this answer
                raise
            # Answered here, not by Starlette's outer error layer: past this middleware, that
            # answer would miss the request id and the security headers.
            _log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            await internal_error(scope["path"])(scope, receive, tagged_send)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.count(
                "apiwrap_http_requests_total", route=template, method=method, status=str(status)
            )
            self.metrics.observe(
                "apiwrap_http_request_seconds", time.monotonic() - started, route=template, method=method
            )
            if status >= 400:
                self.metrics.count("apiwrap_refusals_total", reason=reason or f"http_{status}")
            request_id_var.reset(token)


class BodyLimit:
    """ASGI middleware: 413 for a body over ``max_bytes``, told by Content-Length or counted as it streams."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"request body is over the limit of {self.max_bytes:,} bytes"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            # Refused before a byte of the body is read (a bad header is treated as too large).
            response = problem(
                413, PayloadTooLarge.code, message, instance=scope["path"], headers={"Connection": "close"}
            )
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            chunk = await receive()
            if chunk["type"] == "http.request":
                received += len(chunk.get("body", b""))
                if received > self.max_bytes:
                    raise PayloadTooLarge(message)
            return chunk

        await self.app(scope, counted, send)


def uvicorn_config(
    app: ASGIApp,
    service: ServiceConfig,
    *,
    host: str,
    port: int,
    log_level: str = "info",
    graceful_timeout_s: int = 30,
) -> uvicorn.Config:
    """How the service runs on uvicorn, with uvicorn's own settings only: h11, one worker, a 503
    from uvicorn itself past ``max_connections`` open connections, its loggers left to
    :func:`~apiwrap.service._logging.configure_logging`."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http="h11",
        log_level=log_level,
        # uvicorn's loggers write the service's JSON lines (configure_logging), not uvicorn's format.
        log_config=None,
        limit_concurrency=service.max_connections,
        # SIGTERM/SIGINT: uvicorn stops accepting, lets open requests finish (up to this long),
        # then the lifespan stops the jobs; they stay in the store and resume at the next start.
        timeout_graceful_shutdown=graceful_timeout_s,
    )
