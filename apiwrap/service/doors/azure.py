"""The ``/azure`` door: Computer Vision ``vision/v3.2/analyze?visualFeatures=Tags``, ``vision/v3.2/tag``
and ``vision/v2.1/analyze``, with the image as an octet stream.

The SDK reaches it with ``ComputerVisionClient(endpoint="http://HOST:PORT/azure", ...)`` and the
tenant's API key as the subscription key (``Ocp-Apim-Subscription-Key``). Errors are Azure's
``{"error": {"code", "message", "innererror"}}`` bodies, which the SDK raises as
``ComputerVisionErrorResponseException``.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request, Response

from apiwrap.errors import ImageError
from apiwrap.imaging import read_header
from apiwrap.service._config import ServiceConfig, TenantConfig
from apiwrap.service.doors._certify import (
    Certificate,
    Doors,
    Refusal,
    certificate_headers,
    refusal_of,
    tenant_by_key,
)

__all__ = ["include"]

_log = logging.getLogger("apiwrap.service.doors")

_AUTH_MESSAGE = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid "
    "key for an active subscription and use a correct regional API endpoint for your resource."
)
_FORMAT_NAMES = {"JPEG": "Jpeg", "PNG": "Png", "GIF": "Gif", "BMP": "Bmp", "WEBP": "Webp"}


class _AzureError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        inner: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.inner = status, code, message, inner
        self.headers = headers or {}


def _error(exc: _AzureError) -> Response:
    error: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.inner is not None:
        error["innererror"] = {"code": exc.inner, "message": exc.message}
    headers = {"apim-request-id": str(uuid.uuid4()), **exc.headers}
    return Response(json.dumps({"error": error}), exc.status, media_type="application/json", headers=headers)


def _from_refusal(refusal: Refusal) -> _AzureError:
    kind, message = refusal.kind, refusal.message
    if kind == "invalid_parameter":
        return _AzureError(400, "InvalidRequest", message, "InvalidParameter")
    if kind == "invalid_image":
        return _AzureError(400, "InvalidRequest", message, "InvalidImageFormat")
    if kind == "budget":
        return _AzureError(403, "403", f"Out of call volume quota: {message}")
    if kind in ("busy", "pending"):
        seconds = refusal.retry_after_s
        return _AzureError(
            429,
            "429",
            f"{message}. Please retry after {seconds} second{'s' if seconds != 1 else ''}.",
            headers={"Retry-After": str(seconds)},
        )
    return _AzureError(500, "InternalServerError", message)


def _authenticate(request: Request, config: ServiceConfig) -> TenantConfig:
    key = request.headers.get("ocp-apim-subscription-key")
    tenant = tenant_by_key(config, key) if key else None
    if tenant is None:
        raise _AzureError(401, "401", _AUTH_MESSAGE)
    return tenant


def _check_features(request: Request) -> None:
    features = [f.strip() for f in request.query_params.get("visualFeatures", "").split(",") if f.strip()]
    if [f.lower() for f in features] != ["tags"]:
        raise _AzureError(
            400,
            "InvalidRequest",
            f"visualFeatures={','.join(features) or '(none)'}: this endpoint certifies Tags only",
            "NotSupportedVisualFeature",
        )
    if request.query_params.get("details"):
        raise _AzureError(400, "InvalidRequest", "details: not supported here", "NotSupportedVisualFeature")


def _metadata(image: bytes) -> dict[str, Any]:
    header = read_header(image, name="image")
    image_format = _FORMAT_NAMES.get(header.format, header.format.title())
    return {"width": header.width, "height": header.height, "format": image_format}


def _answer(certificate: Certificate, image: bytes, *, versioned: bool) -> dict[str, Any]:
    tags = (
        [{"name": certificate.label, "confidence": certificate.confidence}] if certificate.certified else []
    )
    answer: dict[str, Any] = {"tags": tags, "requestId": str(uuid.uuid4()), "metadata": _metadata(image)}
    versions = certificate.result.get("model_versions") or []
    if versioned and len(versions) == 1:
        answer["modelVersion"] = versions[0]
    return answer


async def _serve(request: Request, *, analyze: bool, versioned: bool) -> Response:
    config: ServiceConfig = request.app.state.config
    doors: Doors = request.app.state.doors
    try:
        tenant = _authenticate(request, config)
        if analyze:
            _check_features(request)
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type == "application/json":
            raise _AzureError(
                400,
                "InvalidRequest",
                "send the image itself (application/octet-stream), not a URL",
                "InvalidImageUrl",
            )
        image = await request.body()
        settings = doors.settings("azure", tenant, request.headers, request.app.state.denoisers)
        certificate = await doors.certify(tenant, settings, image)
        answer = _answer(certificate, image, versioned=versioned)
    except _AzureError as exc:
        return _error(exc)
    except Exception as exc:
        refusal = refusal_of(exc)
        if refusal is None and isinstance(exc, ImageError):
            refusal = Refusal("invalid_image", str(exc))
        if refusal is None:
            _log.error("the /azure door failed", exc_info=exc)
            refusal = Refusal("internal", "the proxy failed to handle this request")
        return _error(_from_refusal(refusal))
    headers = {"apim-request-id": str(uuid.uuid4()), **certificate_headers(certificate)}
    return Response(json.dumps(answer), media_type="application/json", headers=headers)


async def _analyze(request: Request) -> Response:
    return await _serve(request, analyze=True, versioned=True)


async def _tag(request: Request) -> Response:
    return await _serve(request, analyze=False, versioned=True)


async def _analyze_v21(request: Request) -> Response:
    return await _serve(request, analyze=True, versioned=False)  # v2.1 answers name no model version


async def _not_found(request: Request) -> Response:
    return _error(_AzureError(404, "404", "Resource not found"))


def include(app: FastAPI) -> None:
    routes = {
        "/azure/vision/v3.2/analyze": _analyze,
        "/azure/vision/v3.2/tag": _tag,
        "/azure/vision/v2.1/analyze": _analyze_v21,
    }
    for path, endpoint in routes.items():
        app.add_api_route(path, endpoint, methods=["POST"], include_in_schema=False)
    app.add_api_route(
        "/azure/{rest:path}",
        _not_found,
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        include_in_schema=False,
    )
