"""The service's error tree and the one table that maps every error to an RFC 9457 problem.

    ServiceError(status, code)
    ├── Unauthorized          401: no API key, or one no tenant holds
    ├── BudgetRanOut          402: a one-image job stopped when its allowance ran out
    ├── NotFound              404: no such job *for this tenant* (another tenant's job is not revealed)
    ├── RequestTimeout        408: the body did not arrive within ``body_timeout_s``
    ├── Conflict              409: the job is not in a state that allows this
    ├── PayloadTooLarge       413: the request body passes the configured limit
    ├── UnsupportedImage      415: not a PNG, JPEG or WebP image
    ├── InvalidRequest        422: a parameter or an image the service cannot use
    │   └── IdempotencyKeyReused  422: an ``Idempotency-Key`` sent again with another request
    ├── JobFailed             500: the job itself failed on the server (logged there)
    ├── VendorFailed          502: the vendor could not label the image (e.g. refused our credentials)
    └── Busy(retry_after)     503: too many jobs running, or shutting down; come back later

Errors of the other packages are mapped in the same table: ``budgets.BudgetExceeded`` ->
402, ``adapters.Throttled`` -> 503 with Retry-After, ``adapters.Rejected`` (an image the
vendor's limits refuse), ``apiwrap.errors.ImageError``, request validation and the settings
resolver's ``SettingsError`` (options that contradict each other) -> 422,
Starlette's own HTTP errors (404 for an unknown path, 405, 400 for a malformed form) keep their
status. Starlette finds a handler by walking the exception's MRO against the table, so a
subclass inherits its parent's answer. Any other exception is answered 500 ``internal_error``
(:func:`internal_error`) and logged by the request middleware.

Every error body is ``application/problem+json`` (RFC 9457): ``type`` (a stable URI per
``code``), ``title``, ``status``, ``detail`` (always a string), ``instance`` (the path),
``code`` (the stable machine name), ``request_id``, and extension members named per error.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from apiwrap.adapters import Rejected, Throttled
from apiwrap.budgets import BudgetExceeded
from apiwrap.engine.settings import SettingsError
from apiwrap.errors import ApiwrapError, ImageError
from apiwrap.service._logging import current_request_id
from apiwrap.service._models import money

__all__ = [
    "EXCEPTION_HANDLERS",
    "PROBLEM_MEDIA_TYPE",
    "BudgetRanOut",
    "Busy",
    "Conflict",
    "IdempotencyKeyReused",
    "InvalidRequest",
    "JobFailed",
    "NotFound",
    "PayloadTooLarge",
    "ProblemResponse",
    "RequestTimeout",
    "ServiceError",
    "Unauthorized",
    "UnsupportedImage",
    "VendorFailed",
    "internal_error",
    "problem",
    "problem_type",
]

_log = logging.getLogger("apiwrap.service")

PROBLEM_MEDIA_TYPE = "application/problem+json"
#: Codes for Starlette's own HTTP errors, by status.
_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 406: "not_acceptable"}


def problem_type(code: str) -> str:
    """The problem's ``type``: a tag URI (RFC 4151), stable per code and never dereferenced."""
    return f"tag:apiwrap.dev,2026:problem:{code}"


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_MEDIA_TYPE


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> ProblemResponse:
    """The problem document; ``X-Problem-Code`` repeats ``code`` for the metrics middleware."""
    body = {
        "type": problem_type(code),
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": instance,
        "code": code,
        "request_id": current_request_id(),
        **extensions,
    }
    return ProblemResponse(body, status_code=status, headers={**(headers or {}), "X-Problem-Code": code})


class ServiceError(ApiwrapError):
    """An error the service answers with ``status`` and a machine-readable ``code``."""

    status = 400
    code = "bad_request"

    def headers(self) -> dict[str, str]:
        return {}

    def extensions(self) -> dict[str, Any]:
        return {}


class Unauthorized(ServiceError):
    status = 401
    code = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class BudgetRanOut(ServiceError):
    """A one-image job that stopped short of its result: names the job and what it bought."""

    status = 402
    code = "budget_ran_out"

    def __init__(self, message: str, *, job: dict[str, Any], result: dict[str, Any]) -> None:
        super().__init__(message)
        self.job = job
        self.result = result

    def headers(self) -> dict[str, str]:
        return {"Location": f"/v1/jobs/{self.job['id']}"}

    def extensions(self) -> dict[str, Any]:
        return {"job": self.job, "result": self.result}


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class RequestTimeout(ServiceError):
    status = 408
    code = "request_timeout"

    def headers(self) -> dict[str, str]:
        return {"Connection": "close"}


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


class IdempotencyKeyReused(InvalidRequest):
    code = "idempotency_key_reused"


class JobFailed(ServiceError):
    status = 500
    code = "job_failed"


class VendorFailed(ServiceError):
    status = 502
    code = "vendor_failed"


class Busy(ServiceError):
    """503 with Retry-After; ``code`` says why: ``server_busy``, ``tenant_busy`` or ``shutting_down``."""

    status = 503

    def __init__(self, message: str, retry_after: float, code: str = "server_busy") -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.code = code

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    return problem(
        exc.status,
        exc.code,
        str(exc),
        instance=request.url.path,
        headers=exc.headers(),
        **exc.extensions(),
    )


async def _budget_exceeded(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BudgetExceeded)
    extensions: dict[str, Any] = {}
    if exc.cap is not None:
        # The cap's figures in the cap's unit, so a client needs no parsing of the message.
        unit = (lambda value: money(value).model_dump()) if exc.cap == "usd" else (lambda value: value)
        extensions = {
            "cap": exc.cap,
            "limit": unit(exc.limit),
            "spent": unit(exc.spent),
            "reserved": unit(exc.reserved),
            "requested": unit(exc.requested),
        }
    return problem(402, "budget_exceeded", str(exc), instance=request.url.path, **extensions)


async def _throttled(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Throttled)
    retry_after = str(max(1, math.ceil(exc.retry_after or 1)))
    return problem(
        503, "throttled", str(exc), instance=request.url.path, headers={"Retry-After": retry_after}
    )


async def _image_error(request: Request, exc: Exception) -> Response:
    return problem(422, "invalid_image", str(exc), instance=request.url.path)


async def _rejected(request: Request, exc: Exception) -> Response:
    detail = f"the vendor would refuse this image: {exc}"
    return problem(422, "rejected_by_vendor", detail, instance=request.url.path)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError | ValidationError)
    # pydantic's own error dicts may hold the raw input (bytes, exceptions): keep only what is JSON.
    errors = [
        {
            "loc": [str(part) for part in error.get("loc", ())],
            "msg": str(error.get("msg", "")),
            "type": str(error.get("type", "")),
        }
        for error in exc.errors()
    ]
    detail = "; ".join(f"{'.'.join(error['loc'])}: {error['msg']}" for error in errors)
    return problem(422, "invalid_request", detail, instance=request.url.path, errors=errors)


async def _settings_error(request: Request, exc: Exception) -> Response:
    """Options that are each valid but cannot make a job together (or name what is not offered)."""
    assert isinstance(exc, SettingsError)
    errors = [{"loc": ["query", name], "msg": why, "type": "settings"} for name, why in exc.problems]
    return problem(422, "invalid_request", str(exc), instance=request.url.path, errors=errors)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code in {204, 304}:
        return Response(status_code=exc.status_code, headers=exc.headers)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return problem(exc.status_code, code, str(exc.detail), instance=request.url.path, headers=exc.headers)


def internal_error(instance: str) -> ProblemResponse:
    """The answer to an error no handler expected, given by
    :class:`~apiwrap.service._http.RequestContext`, which logs it (the details stay in the log)."""
    return problem(500, "internal_error", "the server failed to handle this request", instance=instance)


#: The one table: exception type -> handler (found through the exception's MRO).
EXCEPTION_HANDLERS: dict[int | type[Exception], Callable[[Request, Any], Coroutine[Any, Any, Response]]] = {
    ServiceError: _service_error,
    BudgetExceeded: _budget_exceeded,
    Throttled: _throttled,
    ImageError: _image_error,
    SettingsError: _settings_error,
    Rejected: _rejected,
    RequestValidationError: _validation_error,
    ValidationError: _validation_error,
    HTTPException: _http_exception,
}
