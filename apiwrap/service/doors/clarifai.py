"""The ``/clarifai`` door: ``PostModelOutputs`` over Clarifai's HTTP JSON API.

clarifai-grpc's JSON channel reaches it with ``ClarifaiChannel.get_json_channel(base_url=
"http://HOST:PORT/clarifai")`` and the tenant's API key as ``Authorization: Key KEY``. As on
Clarifai, every answer is a ``MultiOutputResponse`` whose ``status.code`` says what happened
(the SDK never raises on it): 10000 SUCCESS, 10010 MIXED_STATUS when some inputs failed (their
own ``status`` says why), 11008 CONN_KEY_INVALID, 11004 CONN_EXCEED_MONTHLY_LIMIT (the tenant's
budget), 11005 CONN_THROTTLED, 11102 CONN_INVALID_REQUEST, 21200 MODEL_DOES_NOT_EXIST (a model
other than the general one), 10040 NOT_IMPLEMENTED (any other call), 98004 INTERNAL_SERVER_ISSUE.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import uuid
import zlib
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

_GENERAL_MODEL = "general-image-recognition"
_MAX_INPUTS = 128
_DEFAULT_MAX_CONCEPTS = 20  # the API's default
_SUCCESS, _MIXED, _FAILURE = 10000, 10010, 10020
_INPUT_INVALID_ARGUMENT = 30104
#: Refusals of a whole request: (HTTP status, status code, description).
_REFUSALS = {
    "invalid_parameter": (400, 11102, "Invalid request"),
    "budget": (402, 11004, "Usage limit exceeded"),
    "busy": (429, 11005, "Making too many requests"),
    "pending": (429, 11005, "Making too many requests"),
    "vendor_failed": (500, 98004, "Internal server issue"),
    "internal": (500, 98004, "Internal server issue"),
}


class _ClarifaiError(Exception):
    def __init__(self, http_status: int, code: int, description: str, details: str) -> None:
        super().__init__(details)
        self.http_status, self.code, self.description, self.details = http_status, code, description, details


def _status(code: int, description: str, details: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"code": code, "description": description, "req_id": uuid.uuid4().hex}
    if details:
        status["details"] = details
    return status


def _error(exc: _ClarifaiError) -> Response:
    body = {"status": _status(exc.code, exc.description, exc.details), "outputs": []}
    return Response(json.dumps(body), exc.http_status, media_type="application/json")


def _authenticate(request: Request, config: ServiceConfig) -> TenantConfig:
    authorization = request.headers.get("authorization", "")
    key = authorization.removeprefix("Key ").strip() if authorization.startswith("Key ") else ""
    tenant = tenant_by_key(config, key) if key else None
    if tenant is None:
        raise _ClarifaiError(401, 11008, "API key not found", "Invalid API key or PAT")
    return tenant


def _inputs(body: bytes) -> tuple[list[tuple[str, bytes | None]], dict[str, Any]]:
    """(input id, image bytes or None for an input without bytes) of each input, and the output config."""
    try:
        document = json.loads(body)
        inputs = document.get("inputs", [])
        config = ((document.get("model") or {}).get("output_info") or {}).get("output_config") or {}
        if not isinstance(inputs, list) or not isinstance(config, dict):
            raise TypeError("inputs")
    except (ValueError, TypeError, AttributeError) as exc:
        raise _ClarifaiError(400, 11100, "Bad request format", f"could not parse request: {exc}") from None
    if not 1 <= len(inputs) <= _MAX_INPUTS:
        raise _ClarifaiError(400, 30105, "Too many inputs", f"1 to {_MAX_INPUTS} inputs per call")
    parsed: list[tuple[str, bytes | None]] = []
    for item in inputs:
        encoded = (((item or {}).get("data") or {}).get("image") or {}).get("base64")
        try:
            image = base64.b64decode(encoded, validate=True) if isinstance(encoded, str) else None
        except binascii.Error:
            image = None
        parsed.append((str((item or {}).get("id") or uuid.uuid4().hex), image))
    return parsed, config


def _output(
    input_id: str, model_id: str, outcome: Certificate | Refusal, config: dict[str, Any]
) -> dict[str, Any]:
    output: dict[str, Any] = {"id": uuid.uuid4().hex, "input": {"id": input_id}}
    if isinstance(outcome, Refusal):
        output["status"] = _status(_INPUT_INVALID_ARGUMENT, "Input failed", outcome.message)
        output["model"] = {"id": model_id}
        return output
    versions = outcome.result.get("model_versions") or []
    output["model"] = {"id": model_id, "model_version": {"id": versions[0] if len(versions) == 1 else ""}}
    output["status"] = _status(_SUCCESS, "Ok")
    max_concepts = int(config.get("max_concepts") or _DEFAULT_MAX_CONCEPTS)
    min_value = float(config.get("min_value") or 0.0)
    concepts = []
    if outcome.certified and max_concepts > 0 and outcome.confidence >= min_value:
        label = outcome.label
        concepts.append(
            {
                "id": f"ai_{zlib.crc32(label.encode()):08x}",
                "name": label,
                "value": outcome.confidence,
                "app_id": "main",
            }
        )
    output["data"] = {"concepts": concepts}
    return output


async def _post_model_outputs(request: Request) -> Response:
    config: ServiceConfig = request.app.state.config
    doors: Doors = request.app.state.doors
    model_id = request.path_params["model_id"]
    try:
        tenant = _authenticate(request, config)
        if model_id != _GENERAL_MODEL:
            raise _ClarifaiError(
                404, 21200, "Model does not exist", f"this door certifies the labels of {_GENERAL_MODEL} only"
            )
        inputs, output_config = _inputs(await request.body())
        settings = doors.settings("clarifai", tenant, request.headers, request.app.state.denoisers)
        missing = Refusal("invalid_image", "send the image as data.image.base64")

        async def certify(image: bytes | None) -> Certificate:
            if image is None:
                raise missing
            return await doors.certify(tenant, settings, image)

        done = await asyncio.gather(*(certify(image) for _, image in inputs), return_exceptions=True)
        outcomes: list[Certificate | Refusal] = []
        for item in done:
            if isinstance(item, Certificate):
                outcomes.append(item)
                continue
            refusal = refusal_of(item) if isinstance(item, Exception) else None
            if refusal is None:
                raise item
            if refusal.kind != "invalid_image":  # the whole request's answer
                raise refusal
            outcomes.append(refusal)
    except _ClarifaiError as exc:
        return _error(exc)
    except Exception as exc:
        refusal = refusal_of(exc)
        if refusal is None:
            _log.error("the /clarifai door failed", exc_info=exc)
            refusal = Refusal("internal", "the proxy failed to handle this request")
        http_status, code, description = _REFUSALS.get(refusal.kind, (400, 11102, "Invalid request"))
        return _error(_ClarifaiError(http_status, code, description, refusal.message))
    outputs = [
        _output(input_id, model_id, outcome, output_config)
        for (input_id, _), outcome in zip(inputs, outcomes, strict=True)
    ]
    failed = sum(isinstance(outcome, Refusal) for outcome in outcomes)
    if not failed:
        status = _status(_SUCCESS, "Ok")
    elif failed < len(outcomes):
        status = _status(_MIXED, "Mixed Success")
    else:
        status = _status(_FAILURE, "Failure")
    headers = batch_headers([o if isinstance(o, Certificate) else None for o in outcomes])
    return Response(
        json.dumps({"status": status, "outputs": outputs}), media_type="application/json", headers=headers
    )


async def _not_implemented(request: Request) -> Response:
    details = f"{request.method} {request.url.path}: this door serves PostModelOutputs only"
    return _error(_ClarifaiError(404, 10040, "Not implemented", details))


def include(app: FastAPI) -> None:
    # The four routes the JSON channel picks from for PostModelOutputs (with or without the app
    # and the model version in the path).
    for path in (
        "/clarifai/v2/users/{user_id}/apps/{app_id}/models/{model_id}/versions/{version_id}/outputs",
        "/clarifai/v2/users/{user_id}/apps/{app_id}/models/{model_id}/outputs",
        "/clarifai/v2/models/{model_id}/versions/{version_id}/outputs",
        "/clarifai/v2/models/{model_id}/outputs",
    ):
        app.add_api_route(path, _post_model_outputs, methods=["POST"], include_in_schema=False)
    app.add_api_route(
        "/clarifai/{rest:path}",
        _not_implemented,
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        include_in_schema=False,
    )
