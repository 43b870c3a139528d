"""Clarifai emulator: gRPC ``clarifai.api.V2/PostModelOutputs``.

Authenticated by metadata ``authorization: Key <PAT>``. Like the real API, failures are
application statuses inside a gRPC OK (``status.code`` 11005 CONN_THROTTLED, 11008
CONN_KEY_INVALID, per-input 30xxx codes under 10010 MIXED_STATUS), except the network
faults: a 5xx, reset or hang shows as gRPC UNAVAILABLE, the code that Clarifai's own
channels retry five times (so a test can prove the adapter's channel does not).
"""

from __future__ import annotations

import time
import uuid
import zlib

import grpc
from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2, status_pb2
from google.protobuf import message as protobuf_message

from apiwrap.adapters._preflight import probe_image
from apiwrap.adapters.base import ImageLimits
from apiwrap.adapters.emulators._grpc import GrpcServer
from apiwrap.adapters.emulators.core import Emulator, EmulatorConfig
from apiwrap.adapters.errors import Rejected

__all__ = ["ClarifaiEmulator", "start"]

_SERVICE = "clarifai.api.V2"
_MAX_INPUTS = 128
_MAX_PIXELS = 85_000_000
_DEFAULT_MAX_CONCEPTS = 20  # the API's default
StatusCode = status_code_pb2.StatusCode


class ClarifaiEmulator(Emulator):
    vendor = "clarifai"
    default_limits = ImageLimits(
        max_bytes=20 * 1024 * 1024 - 1,
        formats=frozenset({"JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP"}),
    )
    #: The version id of Clarifai's general-image-recognition model.
    default_model_version = "aa7f35c01e0642fda5cf400f543e7c40"

    def _start_servers(self) -> str:
        self._server = GrpcServer(
            _SERVICE,
            {"PostModelOutputs": self.policy.serving(self._post_model_outputs)},
            self.config.host,
            self.config.port,
        )
        return self._server.url

    def _stop_servers(self) -> None:
        self._server.close()

    def _post_model_outputs(self, body: bytes, context: grpc.ServicerContext) -> bytes:
        self.policy.open_call()
        authorization = str(dict(context.invocation_metadata()).get("authorization", ""))
        pat = authorization.removeprefix("Key ").strip() if authorization.startswith("Key ") else None
        if not pat:
            self.policy.refuse("auth")
            return _failure(
                StatusCode.CONN_INVALID_REQUEST,
                "Invalid request",
                "Empty or malformed authorization header. Please provide an API key or session token.",
            )
        if self.config.api_key is not None and pat != self.config.api_key:
            self.policy.refuse("auth")
            return _failure(StatusCode.CONN_KEY_INVALID, "API key not found", "Invalid API key or PAT")
        action = self.policy.decide()
        if action.kind == "throttle":
            return _failure(
                StatusCode.CONN_THROTTLED,
                "Making too many requests",
                "exceeded limit of 15 requests per second",
            )
        if action.kind == "hang":
            self.policy.hang()
        if action.kind in ("error", "reset", "hang"):
            message = "Service unavailable" if action.kind == "error" else "Connection reset by peer"
            context.abort(grpc.StatusCode.UNAVAILABLE, message)
        if action.kind == "malformed":
            return b"\x0a\xff\xff\xff\xff"  # a length-delimited field longer than the message
        try:
            request = service_pb2.PostModelOutputsRequest.FromString(body)
        except protobuf_message.DecodeError:
            self.policy.refuse("rejected")
            return _failure(
                StatusCode.CONN_BAD_REQUEST_FORMAT, "Bad request format", "could not parse request"
            )
        if not request.inputs or len(request.inputs) > _MAX_INPUTS:
            self.policy.refuse("rejected")
            return _failure(
                StatusCode.INPUT_OVER_LIMIT, "Too many inputs", f"1 to {_MAX_INPUTS} inputs per call"
            )
        return self._answer(request, empty=action.kind == "empty").SerializeToString()

    def _answer(
        self, request: service_pb2.PostModelOutputsRequest, empty: bool
    ) -> service_pb2.MultiOutputResponse:
        config = request.model.output_info.output_config
        max_concepts = config.max_concepts or _DEFAULT_MAX_CONCEPTS
        statuses = [self._input_status(item.data.image.base64) for item in request.inputs]
        valid = [i for i, status in enumerate(statuses) if status is None]
        if empty:
            answers: list[list[tuple[str, float]]] = [[] for _ in valid]
        else:
            answers = self.classify([request.inputs[i].data.image.base64 for i in valid]) if valid else []
        concepts: dict[int, list[tuple[str, float]]] = dict(zip(valid, answers, strict=True))
        model = resources_pb2.Model(
            id=request.model_id or "general-image-recognition",
            model_version=resources_pb2.ModelVersion(id=request.version_id or self.model_version or ""),
        )
        outputs = []
        for index, item in enumerate(request.inputs):
            output = resources_pb2.Output(
                id=uuid.uuid4().hex, model=model, input=resources_pb2.Input(id=item.id)
            )
            output.created_at.FromNanoseconds(time.time_ns())
            status = statuses[index]
            if status is not None:
                output.status.CopyFrom(status)
            else:
                output.status.CopyFrom(status_pb2.Status(code=StatusCode.SUCCESS, description="Ok"))
                chosen = [(n, v) for n, v in concepts[index] if v >= config.min_value][:max_concepts]
                output.data.concepts.extend(
                    resources_pb2.Concept(id=_concept_id(name), name=name.lower(), value=value, app_id="main")
                    for name, value in chosen
                )
            outputs.append(output)
        self.policy.bill(len(valid))
        if len(valid) == len(outputs):
            top = status_pb2.Status(code=StatusCode.SUCCESS, description="Ok")
        elif valid:
            top = status_pb2.Status(code=StatusCode.MIXED_STATUS, description="Mixed Success")
        else:
            top = status_pb2.Status(code=StatusCode.FAILURE, description="Failure")
        return service_pb2.MultiOutputResponse(status=top, outputs=outputs)

    def _input_status(self, image: bytes) -> status_pb2.Status | None:
        def failed(code: int, details: str) -> status_pb2.Status:
            return status_pb2.Status(code=code, description="Input failed", details=details)

        if len(image) > self.limits.max_bytes:
            return failed(StatusCode.INPUT_INVALID_ARGUMENT, "image is larger than 20 MB")
        try:
            width, height, image_format = probe_image(image)
        except Rejected:
            return failed(StatusCode.INPUT_UNSUPPORTED_FORMAT, "input is not a supported image")
        if image_format not in self.limits.formats:
            return failed(StatusCode.INPUT_UNSUPPORTED_FORMAT, f"{image_format} images are not supported")
        if width * height > _MAX_PIXELS or max(width, height) > self.limits.max_side:
            return failed(StatusCode.INPUT_INVALID_ARGUMENT, "image has more than 85 megapixels")
        if min(width, height) < self.limits.min_side:
            return failed(StatusCode.INPUT_INVALID_ARGUMENT, "image is too small")
        return None


def _concept_id(name: str) -> str:
    return f"ai_{zlib.crc32(name.encode()):08x}"


def _failure(code: int, description: str, details: str) -> bytes:
    status = status_pb2.Status(code=code, description=description, details=details, req_id=uuid.uuid4().hex)
    return service_pb2.MultiOutputResponse(status=status).SerializeToString()


def start(config: EmulatorConfig | None = None) -> ClarifaiEmulator:
    """Start a Clarifai emulator; its ``endpoint`` (``http://127.0.0.1:PORT``) is plaintext gRPC."""
    emulator = ClarifaiEmulator(config)
    emulator.start()
    return emulator
