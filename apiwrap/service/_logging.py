"""Structured logs: one JSON object per line, carrying the request id of the request that caused it.

The lines are written by python-json-logger's formatter (:class:`JsonFormatter`), for the
service's own logger and for uvicorn's error and access loggers alike. The request id lives in a
context variable set by :class:`~apiwrap.service._http.RequestContext`; uvicorn writes its access
line while the answer is sent, inside that context, so the line carries the id; a job's task is
created inside its request, so it inherits the id and every event of that job (admitted,
finished, cancelled) carries it, as does a resumed job's ``job.resumed`` (with no request id: no
request caused it). Events are logged as ``_log.info("job.finished", extra={"event": {...}})``:
the message is the event's name and ``event`` its fields, written at the top level of the line.
"""

from __future__ import annotations

import logging
import sys
import time
from contextvars import ContextVar
from typing import Any, TextIO

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter as _PythonJsonFormatter

__all__ = ["JsonFormatter", "configure_logging", "current_request_id", "log_event", "request_id_var"]

request_id_var: ContextVar[str | None] = ContextVar("apiwrap_request_id", default=None)

_log = logging.getLogger("apiwrap.service")
#: The loggers whose lines ``configure_logging`` writes: the service's and uvicorn's.
_LOGGERS = ("apiwrap", "uvicorn.error", "uvicorn.access")
#: The fields of uvicorn's access line, in the order of its ``args``.
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")


def current_request_id() -> str | None:
    return request_id_var.get()


def log_event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event (``name`` and its fields) with the current request id."""
    _log.log(level, name, extra={"event": fields, "request_id": current_request_id()})


class JsonFormatter(_PythonJsonFormatter):
    """``{"time", "level", "logger", "msg", "request_id", ...fields, "exc"}`` on one line.

    ``time`` is ISO 8601 in UTC; the fields are an event's, or those of uvicorn's access line
    (``client``, ``method``, ``path``, ``http_version``, ``status``).
    """

    def __init__(self) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger", "message": "msg", "exc_info": "exc"},
            # Our own fields, and uvicorn's copy of a message with terminal colours.
            reserved_attrs=[*RESERVED_ATTRS, "event", "request_id", "color_message"],
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        milliseconds = int(record.msecs)
        log_data["time"] = (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{milliseconds:03d}Z"
        )
        super().add_fields(log_data, record, message_dict)
        log_data["level"] = record.levelname.lower()
        log_data["request_id"] = getattr(record, "request_id", None) or current_request_id()
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            log_data.update(zip(_ACCESS_FIELDS, record.args, strict=False))
        log_data.update(getattr(record, "event", None) or {})


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """Send the service's logs and uvicorn's, as JSON lines, to ``stream`` (stderr); done once by
    ``apiwrap serve`` (with uvicorn told to leave its loggers alone: ``uvicorn_config``)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
