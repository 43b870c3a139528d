"""Google Cloud Vision emulator: gRPC ``ImageAnnotator/BatchAnnotateImages`` and REST
``POST /v1/images:annotate`` on two ports, sharing one call policy and counters.

Labels are the model's classes with the first letter capitalised, scored 0..1. Up to 16
images per request; one image can fail inside a successful answer (``error`` in its
slot). Throttling is gRPC RESOURCE_EXHAUSTED / HTTP 429, with no retry hint, as Google
sends none. A wrong API key is INVALID_ARGUMENT "API key not valid" with ErrorInfo
reason ``API_KEY_INVALID``, as on the real service.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from dataclasses import dataclass
from typing import Any

import grpc
from google.cloud.vision_v1 import types
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from apiwrap.adapters._preflight import probe_image
from apiwrap.adapters.base import ImageLimits
from apiwrap.adapters.emulators._grpc import GrpcServer
from apiwrap.adapters.emulators._http import ConnectionReset, HttpReply, HttpRequest, HttpServer, json_reply
from apiwrap.adapters.emulators.core import Action, Emulator, EmulatorConfig
from apiwrap.adapters.errors import Rejected

__all__ = ["GoogleEmulator", "start"]

_SERVICE = "google.cloud.vision.v1.ImageAnnotator"
_REST_PATH = "/v1/images:annotate"
_LABEL_DETECTION = types.Feature.Type.LABEL_DETECTION
_MAX_IMAGES = 16
_MAX_REQUEST_BYTES = 10 * 1024 * 1024
_MAX_PIXELS = 75_000_000
_QUOTA_MESSAGE = (
    "Quota exceeded for quota metric 'Requests' and limit 'Requests per minute' of service "
    "'vision.googleapis.com' for consumer 'project_number:0'."
)
_HTTP_STATUS = {
    code_pb2.INVALID_ARGUMENT: (400, "INVALID_ARGUMENT"),
    code_pb2.UNAUTHENTICATED: (401, "UNAUTHENTICATED"),
    code_pb2.PERMISSION_DENIED: (403, "PERMISSION_DENIED"),
    code_pb2.RESOURCE_EXHAUSTED: (429, "RESOURCE_EXHAUSTED"),
    code_pb2.UNAVAILABLE: (503, "UNAVAILABLE"),
}


class _Failure(Exception):
    """A whole-request failure, rendered as a gRPC status or an HTTP error body."""

    def __init__(self, code: int, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.reason = code, message, reason


@dataclass(frozen=True)
class _ImageRequest:
    content: bytes
    max_results: int | None  # None: no LABEL_DETECTION feature asked


class GoogleEmulator(Emulator):
    vendor = "google"
    default_limits = ImageLimits(
        max_bytes=20 * 1024 * 1024,
        formats=frozenset({"JPEG", "PNG", "GIF", "BMP", "WEBP", "ICO", "TIFF"}),
    )

    @property
    def rest_endpoint(self) -> str:
        """Base URL of the REST API (``{rest_endpoint}/v1/images:annotate``)."""
        self.endpoint  # noqa: B018  (raises if not running)
        return self._rest.url

    def _start_servers(self) -> str:
        self._grpc = GrpcServer(
            _SERVICE,
            {"BatchAnnotateImages": self.policy.serving(self._grpc_call)},
            self.config.host,
            self.config.port,
        )
        self._rest = HttpServer(self.policy.serving(self._rest_call), self.config.host, 0)
        return self._grpc.url

    def _stop_servers(self) -> None:
        self._grpc.close()
        self._rest.close()

    # -- one protocol-independent call ------------------------------------------------
    def _annotate(self, credentials: tuple[str | None, str | None], parse: Any) -> tuple[Action, list[Any]]:
        """Run one call: auth, policy, then per image a label list or a (code, message) error."""
        self.policy.open_call()
        api_key, bearer = credentials
        if self.config.api_key is not None and self.config.api_key not in (api_key, bearer):
            self.policy.refuse("auth")
            if api_key is None and bearer is None:
                raise _Failure(code_pb2.PERMISSION_DENIED, "The request is missing a valid API key.")
            raise _Failure(
                code_pb2.INVALID_ARGUMENT,
                "API key not valid. Please pass a valid API key.",
                "API_KEY_INVALID",
            )
        action = self.policy.decide()
        if action.kind == "throttle":
            raise _Failure(code_pb2.RESOURCE_EXHAUSTED, _QUOTA_MESSAGE)
        if action.kind == "error":
            raise _Failure(code_pb2.UNAVAILABLE, "The service is currently unavailable.")
        if action.kind == "hang":
            self.policy.hang()
        if action.kind in ("hang", "reset"):
            return action, []
        images: list[_ImageRequest] = parse()
        if not images or len(images) > _MAX_IMAGES:
            self.policy.refuse("rejected")
            raise _Failure(code_pb2.INVALID_ARGUMENT, f"A batch must hold 1 to {_MAX_IMAGES} images.")
        if sum(len(image.content) for image in images) > _MAX_REQUEST_BYTES:
            self.policy.refuse("rejected")
            raise _Failure(
                code_pb2.INVALID_ARGUMENT,
                f"Request payload size exceeds the limit: {_MAX_REQUEST_BYTES} bytes.",
            )
        slots: list[Any] = [self._image_error(image.content) for image in images]
        valid = [i for i, slot in enumerate(slots) if slot is None]
        if action.kind == "empty":
            answers: list[list[tuple[str, float]]] = [[] for _ in valid]
        else:
            answers = self.classify([images[i].content for i in valid]) if valid else []
        for i, labels in zip(valid, answers, strict=True):
            limit = images[i].max_results
            slots[i] = [] if limit is None else labels[:limit]
        self.policy.bill(len(valid))
        return action, slots

    def _image_error(self, content: bytes) -> tuple[int, str] | None:
        if len(content) > self.limits.max_bytes:
            return code_pb2.INVALID_ARGUMENT, "Image size exceeds the limit."
        try:
            width, height, image_format = probe_image(content)
        except Rejected:
            return code_pb2.INVALID_ARGUMENT, "Bad image data."
        if image_format not in self.limits.formats:
            return code_pb2.INVALID_ARGUMENT, "Bad image data."
        if width * height > _MAX_PIXELS or max(width, height) > self.limits.max_side:
            return code_pb2.INVALID_ARGUMENT, "Image dimensions exceed the limit."
        if min(width, height) < self.limits.min_side:
            return code_pb2.INVALID_ARGUMENT, "Image is too small."
        return None

    # -- gRPC -------------------------------------------------------------------------
    def _grpc_call(self, body: bytes, context: grpc.ServicerContext) -> bytes:
        metadata = dict(context.invocation_metadata())
        bearer = str(metadata.get("authorization", "")).removeprefix("Bearer ") or None
        api_key = metadata.get("x-goog-api-key")
        try:
            action, slots = self._annotate(
                (str(api_key) if api_key else None, bearer), lambda: _grpc_images(body)
            )
        except _Failure as failure:
            context.abort_with_status(rpc_status.to_status(_status(failure)))
        if action.kind in ("hang", "reset"):
            context.abort(grpc.StatusCode.UNAVAILABLE, "Connection reset by peer")
        if action.kind == "malformed":
            return b"\x0a\xff\xff\xff\xff"  # a length-delimited field longer than the message
        response = types.BatchAnnotateImagesResponse(responses=[_grpc_slot(slot) for slot in slots])
        return types.BatchAnnotateImagesResponse.serialize(response)

    # -- REST -------------------------------------------------------------------------
    def _rest_call(self, request: HttpRequest) -> HttpReply:
        if request.method != "POST" or request.path != _REST_PATH:
            self.policy.open_call()
            return json_reply(404, {"error": {"code": 404, "message": "Not Found", "status": "NOT_FOUND"}})
        query_keys = request.query.get("key")
        api_key = request.headers.get("x-goog-api-key") or (query_keys[0] if query_keys else None)
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ") or None
        try:
            action, slots = self._annotate((api_key, bearer), lambda: _rest_images(request.body))
        except _Failure as failure:
            return _rest_error(failure)
        if action.kind in ("hang", "reset"):
            raise ConnectionReset
        reply = json_reply(200, {"responses": [_rest_slot(slot) for slot in slots]})
        if action.kind == "malformed":
            return HttpReply(200, reply.body[: len(reply.body) // 2])
        return reply


def _mid(name: str) -> str:
    return f"/m/{zlib.crc32(name.encode()):08x}"


def _description(name: str) -> str:
    return name[:1].upper() + name[1:]


def _grpc_images(body: bytes) -> list[_ImageRequest]:
    try:
        request = types.BatchAnnotateImagesRequest.deserialize(body)
    except Exception as exc:  # protobuf raises DecodeError, proto-plus may wrap it
        raise _Failure(code_pb2.INVALID_ARGUMENT, "Invalid request body.") from exc
    images = []
    for item in request.requests:
        limits = [f.max_results for f in item.features if f.type_ == _LABEL_DETECTION]
        images.append(_ImageRequest(item.image.content, (limits[0] or 10) if limits else None))
    return images


def _grpc_slot(slot: list[tuple[str, float]] | tuple[int, str]) -> types.AnnotateImageResponse:
    if isinstance(slot, tuple):
        return types.AnnotateImageResponse(error=status_pb2.Status(code=slot[0], message=slot[1]))
    return types.AnnotateImageResponse(
        label_annotations=[
            types.EntityAnnotation(
                mid=_mid(name), description=_description(name), score=score, topicality=score
            )
            for name, score in slot
        ]
    )


def _rest_images(body: bytes) -> list[_ImageRequest]:
    try:
        document = json.loads(body)
        images = []
        for item in document["requests"]:
            # The SDK sends the enum as its number (4), hand-written clients as its name.
            wanted = (int(_LABEL_DETECTION), "LABEL_DETECTION")
            labels = [f for f in item.get("features", []) if f.get("type") in wanted]
            content = base64.b64decode(item["image"]["content"], validate=True)
            images.append(_ImageRequest(content, int(labels[0].get("maxResults") or 10) if labels else None))
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise _Failure(
            code_pb2.INVALID_ARGUMENT, f"Invalid JSON payload received. {type(exc).__name__}"
        ) from exc
    return images


def _rest_slot(slot: list[tuple[str, float]] | tuple[int, str]) -> dict[str, Any]:
    if isinstance(slot, tuple):
        return {"error": {"code": slot[0], "message": slot[1]}}
    if not slot:
        return {}  # proto3 JSON leaves out an empty list
    return {
        "labelAnnotations": [
            {"mid": _mid(name), "description": _description(name), "score": score, "topicality": score}
            for name, score in slot
        ]
    }


def _status(failure: _Failure) -> status_pb2.Status:
    status = status_pb2.Status(code=failure.code, message=failure.message)
    if failure.reason is not None:
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.ErrorInfo(reason=failure.reason, domain="googleapis.com"))
        status.details.append(detail)
    return status


def _rest_error(failure: _Failure) -> HttpReply:
    http_status, status_name = _HTTP_STATUS.get(failure.code, (500, "INTERNAL"))
    error: dict[str, Any] = {"code": http_status, "message": failure.message, "status": status_name}
    if failure.reason is not None:
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": failure.reason,
                "domain": "googleapis.com",
            }
        ]
    return json_reply(http_status, {"error": error})


def start(config: EmulatorConfig | None = None) -> GoogleEmulator:
    """Start a Google Vision emulator: ``endpoint`` is gRPC, ``rest_endpoint`` is REST."""
    emulator = GoogleEmulator(config)
    emulator.start()
    return emulator
