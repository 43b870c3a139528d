"""Structured logs: one JSON object per line, carrying the request id of the request that caused it.

The request id lives in a context variable set by :class:`~apiwrap.service._http.RequestContext`;
a job's task is created inside its request, so it inherits the id and every event of that
job (admitted, finished, cancelled) carries it, as does a resumed job's ``job.resumed`` (with
no request id: no request caused it). Events are logged as ``_log.info("job.finished",
extra={"event": {...}})``: the message is the event's name and ``event`` its fields.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from typing import Any, TextIO

__all__ = ["JsonFormatter", "configure_logging", "current_request_id", "log_event", "request_id_var"]

request_id_var: ContextVar[str | None] = ContextVar("apiwrap_request_id", default=None)

_log = logging.getLogger("apiwrap.service")


def current_request_id() -> str | None:
    return request_id_var.get()


def log_event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event (``name`` and its fields) with the current request id."""
    _log.log(level, name, extra={"event": fields, "request_id": current_request_id()})


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", "request_id", ...event fields, "exc"}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or current_request_id(),
        }
        entry.update(getattr(record, "event", None) or {})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """Send the service's logs, as JSON lines, to ``stream`` (stderr); done once by ``apiwrap serve``."""
    logger = logging.getLogger("apiwrap")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger.handlers = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
