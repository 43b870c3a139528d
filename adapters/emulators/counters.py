"""A small HTTP endpoint serving running emulators' billing counters as JSON, while they run.

``GET /counters`` answers ``{"emulators": [{"vendor", "endpoint", "calls", "billable",
"outcomes"}, ...]}``: what a benchmark or an operator compares with the client's own ledger
without stopping the emulators.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from apiwrap.adapters.emulators.core import Emulator

__all__ = ["CountersServer"]


class CountersServer:
    """Serves ``GET /counters`` for ``emulators`` on ``host:port`` (0 picks a free port)."""

    def __init__(self, emulators: Sequence[Emulator], host: str = "127.0.0.1", port: int = 0) -> None:
        running = list(emulators)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/counters":
                    self.send_error(404, "only /counters is served here")
                    return
                body = json.dumps({"emulators": [item.counters() for item in running]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return None  # the emulators' own output stays readable

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="emulator-counters", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/counters"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
