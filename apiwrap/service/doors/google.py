"""The ``/google`` door: Vision ``v1/images:annotate`` with ``LABEL_DETECTION`` over REST JSON.

google-cloud-vision reaches it with the REST transport and ``api_endpoint="http://HOST:PORT/google"``.
The tenant's API key goes in ``key=``, ``x-goog-api-key`` or ``Authorization: Bearer``. A batch
holds 1 to 16 requests; each image is its own certification (run side by side), and an image
that cannot be certified gets an ``error`` in its slot, as Vision answers a bad image. Errors of
the whole request are Google's ``{"error": {"code", "message", "status"}}`` bodies.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from typing import Any

from fastapi import FastAPI, Request, Response

from apiwrap.service._config import ServiceConfig, TenantConfig
from apiwrap.service.doors._certify import (
    Certificate,
    Doors,
    Refusal,
    batch_headers,
    refusal_of,
    tenant_by_key,
)

__all__ = ["include"]

_log = logging.getLogger("apiwrap.service.doors")

_MAX_IMAGES = 16
_LABEL_DETECTION = (4, "LABEL_DETECTION")  # the SDK sends the enum's number, hand-written clients its name
_INVALID_ARGUMENT = 3  # google.rpc.Code, in a slot's error
#: Refusals of a whole request: (HTTP status, google.rpc status name).
_REFUSALS = {
    "invalid_parameter": (400, "INVALID_ARGUMENT"),
    "budget": (429, "RESOURCE_EXHAUSTED"),  # quota: the SDK raises TooManyRequests and does not retry
    "busy": (503, "UNAVAILABLE"),  # the SDK's default retry covers UNAVAILABLE
    "pending": (503, "UNAVAILABLE"),
    "vendor_failed": (500, "INTERNAL"),
    "internal": (500, "INTERNAL"),
}


class _GoogleError(Exception):
    def __init__(self, status: int, status_name: str, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.status, self.status_name, self.message, self.reason = status, status_name, message, reason


def _error(exc: _GoogleError, headers: dict[str, str] | None = None) -> Response:
    error: dict[str, Any] = {"code": exc.status, "message": exc.message, "status": exc.status_name}
    if exc.reason is not None:
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": exc.reason,
                "domain": "googleapis.com",
            }
        ]
    return Response(
        json.dumps({"error": error}), status_code=exc.status, media_type="application/json", headers=headers
    )


def _authenticate(request: Request, config: ServiceConfig) -> TenantConfig:
    bearer = request.headers.get("authorization", "")
    key = request.query_params.get("key") or request.headers.get("x-goog-api-key")
    if key:
        tenant = tenant_by_key(config, key)
        if tenant is None:
            raise _GoogleError(
                400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", "API_KEY_INVALID"
            )
        return tenant
    if bearer.startswith("Bearer "):
        tenant = tenant_by_key(config, bearer.removeprefix("Bearer ").strip())
        if tenant is None:
            raise _GoogleError(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
                "or other valid authentication credential.",
                "ACCESS_TOKEN_TYPE_UNSUPPORTED",
            )
        return tenant
    raise _GoogleError(403, "PERMISSION_DENIED", "The request is missing a valid API key.")


def _parse(body: bytes) -> list[tuple[bytes, int]]:
    """(image bytes, maxResults) of each request of the batch."""
    try:
        document = json.loads(body)
        items = document["requests"]
        if not isinstance(items, list):
            raise TypeError("requests")
    except (ValueError, KeyError, TypeError) as exc:
        raise _GoogleError(400, "INVALID_ARGUMENT", f"Invalid JSON payload received. {exc}") from None
    if not 1 <= len(items) <= _MAX_IMAGES:
        raise _GoogleError(400, "INVALID_ARGUMENT", f"A batch must hold 1 to {_MAX_IMAGES} images.")
    parsed = []
    for position, item in enumerate(items):
        features = item.get("features") if isinstance(item, dict) else None
        if not features or any(f.get("type") not in _LABEL_DETECTION for f in features):
            raise _GoogleError(
                400,
                "INVALID_ARGUMENT",
                f"requests[{position}].features: this endpoint certifies LABEL_DETECTION only",
            )
        image = item.get("image") or {}
        if "content" not in image:
            raise _GoogleError(
                400, "INVALID_ARGUMENT", f"requests[{position}].image: send the image as content (no source)"
            )
        try:
            content = base64.b64decode(image["content"], validate=True)
            max_results = int(features[0].get("maxResults") or 10)
        except (TypeError, ValueError, binascii.Error):
            raise _GoogleError(
                400, "INVALID_ARGUMENT", f"Invalid JSON payload received: requests[{position}]"
            ) from None
        parsed.append((content, max_results))
    return parsed


def _slot(outcome: Certificate | Refusal, max_results: int) -> dict[str, Any]:
    if isinstance(outcome, Refusal):
        return {"error": {"code": _INVALID_ARGUMENT, "message": outcome.message}}
    if not outcome.certified or max_results < 1:
        return {}  # proto3 JSON leaves out an empty list: no label
    label = outcome.label[:1].upper() + outcome.label[1:]
    return {
        "labelAnnotations": [
            {"description": label, "score": outcome.confidence, "topicality": outcome.confidence}
        ]
    }


async def _annotate(request: Request) -> Response:
    config: ServiceConfig = request.app.state.config
    doors: Doors = request.app.state.doors
    try:
        tenant = _authenticate(request, config)
        images = _parse(await request.body())
        settings = doors.settings("google", tenant, request.headers, request.app.state.denoisers)
        done = await asyncio.gather(
            *(doors.certify(tenant, settings, image) for image, _ in images), return_exceptions=True
        )
        outcomes: list[Certificate | Refusal] = []
        for item in done:
            if isinstance(item, Certificate):
                outcomes.append(item)
                continue
            refusal = refusal_of(item) if isinstance(item, Exception) else None
            if refusal is None:
                raise item
            if refusal.kind != "invalid_image":  # budget, throttling...: the whole request's answer
                raise refusal
            outcomes.append(refusal)
    except _GoogleError as exc:
        return _error(exc)
    except Exception as exc:
        refusal = refusal_of(exc)
        if refusal is None:
            _log.error("the /google door failed", exc_info=exc)
            refusal = Refusal("internal", "the proxy failed to handle this request")
        status, name = _REFUSALS.get(refusal.kind, (400, "INVALID_ARGUMENT"))
        headers = {"Retry-After": str(refusal.retry_after_s)} if refusal.kind in ("busy", "pending") else None
        return _error(_GoogleError(status, name, refusal.message), headers)
    answer = {
        "responses": [
            _slot(outcome, max_results) for outcome, (_, max_results) in zip(outcomes, images, strict=True)
        ]
    }
    headers = batch_headers([o if isinstance(o, Certificate) else None for o in outcomes])
    return Response(json.dumps(answer), media_type="application/json", headers=headers)


async def _not_found(request: Request) -> Response:
    return _error(
        _GoogleError(
            404,
            "NOT_FOUND",
            f"{request.method} {request.url.path}: this door serves POST /v1/images:annotate",
        )
    )


def include(app: FastAPI) -> None:
    app.add_api_route("/google/v1/images:annotate", _annotate, methods=["POST"], include_in_schema=False)
    app.add_api_route(
        "/google/{rest:path}",
        _not_found,
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        include_in_schema=False,
    )
