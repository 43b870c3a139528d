"""Google's error model (``google.rpc.Status``, AIP-193) mapped onto the vendor error tree, once.

Two adapters meet it: ``google`` gets a status from gRPC (the call's, or an image's inside a
successful batch) and ``http`` gets the same status as JSON from Google's REST API, either as a
whole-request error body ``{"error": {"code": 400, "status": "INVALID_ARGUMENT", "details":
[...]}}`` (``code`` is the HTTP status there, ``status`` the canonical name) or as an image's
``responses[i].error`` ``{"code": 3, "message": ...}`` (``code`` is the canonical code). Both
adapters map it through :meth:`GoogleStatus.error`, so one body means one outcome. Pure: no SDK,
no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from apiwrap.adapters.errors import AuthError, Fatal, Rejected, Throttled, Transient, VendorError

__all__ = ["AUTH_REASONS", "GoogleStatus", "code_for_http_status"]

#: ``google.rpc.Code`` by name (google/rpc/code.proto).
_CODES = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}
_NAMES = {code: name for name, code in _CODES.items()}
#: The canonical code an HTTP status stands for when a body names none (code.proto's mapping).
_FROM_HTTP = {400: 3, 401: 16, 403: 7, 404: 5, 429: 8, 499: 1, 500: 13, 501: 12, 503: 14, 504: 4}

_THROTTLED = frozenset({_CODES["RESOURCE_EXHAUSTED"]})
_AUTH = frozenset({_CODES["PERMISSION_DENIED"], _CODES["UNAUTHENTICATED"]})
_REJECTED = frozenset({_CODES["INVALID_ARGUMENT"], _CODES["FAILED_PRECONDITION"], _CODES["OUT_OF_RANGE"]})
_TRANSIENT = frozenset(
    _CODES[name]
    for name in (
        "UNKNOWN",
        "DEADLINE_EXCEEDED",
        "ABORTED",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
    )
)

#: ``google.rpc.ErrorInfo`` reasons that mean the credentials, whatever the code says: Google
#: answers a wrong API key with INVALID_ARGUMENT, which would otherwise read as a refused image.
AUTH_REASONS = frozenset(
    {"API_KEY_INVALID", "API_KEY_SERVICE_BLOCKED", "SERVICE_DISABLED", "ACCESS_TOKEN_EXPIRED"}
)
_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)s$")  # protobuf's JSON form of a Duration


@dataclass(frozen=True, slots=True)
class GoogleStatus:
    """One ``google.rpc.Status``: its canonical code, message and the details that decide its class."""

    code: int
    message: str
    reasons: frozenset[str] = frozenset()
    #: Seconds from a ``google.rpc.RetryInfo`` detail.
    retry_after: float | None = None

    @property
    def name(self) -> str:
        return _NAMES.get(self.code, f"code {self.code}")

    def error(self, source: str, auth_hint: str) -> VendorError:
        """The vendor error this status is; ``source`` opens its message, ``auth_hint`` ends an auth one."""
        text = f"{source} {self.name}: {self.message}"
        if self.code in _THROTTLED:
            return Throttled(text, retry_after=self.retry_after)
        if self.code in _AUTH or self.reasons & AUTH_REASONS:
            return AuthError(f"{text} ({auth_hint})")
        if self.code in _REJECTED:
            return Rejected(text)
        if self.code in _TRANSIENT:
            return Transient(text)
        return Fatal(text)

    @classmethod
    def from_error_body(cls, document: object) -> GoogleStatus | None:
        """The status of a REST error body, or None if it is not Google's error body.

        Only a body whose ``error.status`` names a canonical code counts: other services that
        answer ``{"error": {...}}`` keep the generic mapping of their HTTP status.
        """
        error = document.get("error") if isinstance(document, Mapping) else None
        if not isinstance(error, Mapping) or error.get("status") not in _CODES:
            return None
        reasons, retry_after = _details(error.get("details"))
        return cls(_CODES[error["status"]], str(error.get("message", "")), reasons, retry_after)

    @classmethod
    def from_image_error(cls, error: object) -> GoogleStatus | None:
        """The status of one image's ``error`` (``responses[i].error``), or None if it holds none."""
        if not isinstance(error, Mapping):
            return None
        code = error.get("code")
        if not isinstance(code, int) or isinstance(code, bool) or code == 0:
            return None
        reasons, retry_after = _details(error.get("details"))
        return cls(code, str(error.get("message", "")), reasons, retry_after)


def code_for_http_status(http_status: int) -> int:
    """The canonical code of an error known only by its HTTP status; -1 (Fatal) for one code.proto
    does not list, except a 5xx, which is INTERNAL."""
    return _FROM_HTTP.get(http_status, _CODES["INTERNAL"] if http_status >= 500 else -1)


def _details(details: Any) -> tuple[frozenset[str], float | None]:
    """ErrorInfo reasons and the RetryInfo delay from a status's JSON ``details``."""
    reasons: set[str] = set()
    retry_after = None
    for detail in details if isinstance(details, list) else ():
        if not isinstance(detail, Mapping):
            continue
        if detail.get("@type") == _ERROR_INFO and isinstance(detail.get("reason"), str):
            reasons.add(detail["reason"])
        if detail.get("@type") == _RETRY_INFO:
            match = _DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                retry_after = float(match.group(1))
    return frozenset(reasons), retry_after
