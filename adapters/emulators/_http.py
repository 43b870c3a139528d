"""A small threaded HTTP/1.1 server for the REST emulators (stdlib only).

Each vendor module supplies one function from :class:`HttpRequest` to :class:`HttpReply`;
this module does the wire: keep-alive, chunked request bodies (Azure's SDK sends no
Content-Length), and the faults a real network shows (a reset connection).
"""

from __future__ import annotations

import json
import logging
import socket
import struct
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["ConnectionReset", "HttpReply", "HttpRequest", "HttpServer", "json_reply"]


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Message
    body: bytes


@dataclass(frozen=True)
class HttpReply:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


class ConnectionReset(Exception):
    """Raised by a handler to reset the TCP connection instead of answering."""


def json_reply(status: int, document: Any, headers: Mapping[str, str] | None = None) -> HttpReply:
    return HttpReply(status, json.dumps(document).encode(), headers or {})


_log = logging.getLogger(__name__)

Handler = Callable[[HttpRequest], HttpReply]


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs' connection pools expect
    server: _Server

    def do_POST(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        self._serve()

    def _serve(self) -> None:
        url = urlsplit(self.path)
        request = HttpRequest(self.command, url.path, parse_qs(url.query), self.headers, self._read_body())
        try:
            reply = self.server.handler(request)
        except ConnectionReset:
            self._reset()
            return
        except Exception:
            # A bug in an emulator must show, not pass for a vendor outage a test expects.
            _log.exception("emulator handler failed on %s %s", self.command, url.path)
            reply = json_reply(500, {"message": "emulator bug; see the server log"})
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline()  # the CRLF after each chunk

    def _reset(self) -> None:
        # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: request lines may carry API keys (Google's ``?key=``)."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a hanging handler must not hold up shutdown

    def __init__(self, address: tuple[str, int], handler: Handler) -> None:
        super().__init__(address, _RequestHandler)
        self.handler = handler

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet on client disconnects (they are expected when a client times out)."""


class HttpServer:
    """Serves ``handler`` on ``host:port`` (0: a free port) in a background thread."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = _Server((host, port), handler)
        self._host = host
        # shutdown() waits until serve_forever notices, once per poll interval: keep it short.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="emulator-http",
            daemon=True,
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._server.server_port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
