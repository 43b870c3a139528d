"""The service's error tree and the one table that maps every error to an HTTP answer.

    ServiceError(status, code)
    ├── Unauthorized          401: no API key, or one no tenant holds
    ├── NotFound              404: no such job *for this tenant* (another tenant's job is not revealed)
    ├── Conflict              409: the job is not in a state that allows this
    ├── PayloadTooLarge       413: the request body passes the configured limit
    ├── UnsupportedImage      415: not a PNG, JPEG or WebP image
    ├── InvalidRequest        422: a parameter or an image the service cannot use
    ├── JobFailed             500: the job itself failed on the server (logged there)
    ├── VendorFailed          502: the vendor could not label the image (e.g. refused our credentials)
    └── Busy(retry_after)     503: too many jobs running, or shutting down; come back later

Errors of the other packages are mapped in the same table: ``budgets.BudgetExceeded`` ->
402, ``adapters.Throttled`` -> 503 with Retry-After, ``adapters.Rejected`` (an image the
vendor's limits refuse) and ``apiwrap.engine.images.ImageError`` -> 422, request validation -> 422.
Starlette finds a handler by walking the exception's MRO against the table, so a subclass
inherits its parent's answer. Every body has the same shape: ``{"error": code, "detail":
message, ...}``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from apiwrap.adapters import Rejected, Throttled
from apiwrap.budgets import BudgetExceeded, format_usd
from apiwrap.errors import ApiwrapError, ImageError

__all__ = [
    "EXCEPTION_HANDLERS",
    "Busy",
    "Conflict",
    "InvalidRequest",
    "JobFailed",
    "NotFound",
    "PayloadTooLarge",
    "ServiceError",
    "Unauthorized",
    "UnsupportedImage",
    "VendorFailed",
    "error_body",
]

_log = logging.getLogger("apiwrap.service")


class ServiceError(ApiwrapError):
    """An error the service answers with ``status`` and a machine-readable ``code``."""

    status = 400
    code = "bad_request"

    def headers(self) -> dict[str, str]:
        return {}


class Unauthorized(ServiceError):
    status = 401
    code = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class Conflict(ServiceError):
    status = 409
    code = "conflict"


class PayloadTooLarge(ServiceError):
    status = 413
    code = "payload_too_large"


class UnsupportedImage(ServiceError):
    status = 415
    code = "unsupported_media_type"


class InvalidRequest(ServiceError):
    status = 422
    code = "invalid_request"


class JobFailed(ServiceError):
    status = 500
    code = "job_failed"


class VendorFailed(ServiceError):
    status = 502
    code = "vendor_failed"


class Busy(ServiceError):
    status = 503
    code = "busy"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


def error_body(code: str, detail: Any, **extra: Any) -> dict[str, Any]:
    return {"error": code, "detail": detail, **extra}


def _json(status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    return _json(exc.status, error_body(exc.code, str(exc)), exc.headers())


async def _budget_exceeded(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BudgetExceeded)
    extra: dict[str, Any] = {}
    if exc.cap is not None:
        # The cap's figures in the cap's unit, so a client needs no parsing of the message.
        unit = (lambda value: format_usd(value)) if exc.cap == "usd" else (lambda value: value)
        extra = {
            "cap": exc.cap,
            "limit": unit(exc.limit),
            "spent": unit(exc.spent),
            "reserved": unit(exc.reserved),
            "requested": unit(exc.requested),
        }
    return _json(402, error_body("budget_exceeded", str(exc), **extra))


async def _throttled(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Throttled)
    retry_after = max(1, math.ceil(exc.retry_after or 1))
    return _json(503, error_body("throttled", str(exc)), {"Retry-After": str(retry_after)})


async def _image_error(request: Request, exc: Exception) -> Response:
    return _json(422, error_body("invalid_image", str(exc)))


async def _rejected(request: Request, exc: Exception) -> Response:
    return _json(422, error_body("rejected_by_vendor", f"the vendor would refuse this image: {exc}"))


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError | ValidationError)
    # pydantic's own error dicts may hold the raw input (bytes, exceptions): keep only what is JSON.
    details = [
        {
            "loc": list(error.get("loc", ())),
            "msg": str(error.get("msg", "")),
            "type": str(error.get("type", "")),
        }
        for error in exc.errors()
    ]
    return _json(422, error_body("invalid_request", details))


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code in {204, 304}:
        return Response(status_code=exc.status_code, headers=exc.headers)
    return _json(exc.status_code, error_body("http_error", exc.detail), exc.headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    # Starlette's outer error layer answers 500 with this and re-raises, so it is logged too.
    _log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _json(500, error_body("internal_error", "the server failed to handle this request"))


#: The one table: exception type -> handler (found through the exception's MRO).
EXCEPTION_HANDLERS: dict[int | type[Exception], Callable[[Request, Any], Coroutine[Any, Any, Response]]] = {
    ServiceError: _service_error,
    BudgetExceeded: _budget_exceeded,
    Throttled: _throttled,
    ImageError: _image_error,
    Rejected: _rejected,
    RequestValidationError: _validation_error,
    ValidationError: _validation_error,
    HTTPException: _http_exception,
    Exception: _unexpected,
}
