"""Clarifai PostModelOutputs on clarifai-grpc, up to 128 images per call.

The adapter owns its gRPC channel, built with ``grpc.enable_retries = 0``: Clarifai's
channels carry a service config that retries UNAVAILABLE five times, each a paid attempt
the engine would not see. Clarifai reports most failures as an application status inside
a gRPC OK, so ``status.code`` is checked on the answer and on every output.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any

import grpc
from clarifai_grpc.channel.clarifai_channel import ClarifaiChannel
from clarifai_grpc.grpc.api import resources_pb2, service_pb2, service_pb2_grpc
from clarifai_grpc.grpc.api.status import status_code_pb2, status_pb2
from google.protobuf import json_format

from apiwrap.adapters._grpc_target import grpc_target
from apiwrap.adapters._preflight import check_image
from apiwrap.adapters.base import Adapter, ImageLimits, Label, VendorAnswer, canonical_label
from apiwrap.adapters.errors import (
    AuthError,
    Fatal,
    MalformedAnswer,
    Rejected,
    Throttled,
    Transient,
    VendorError,
)

__all__ = ["LIMITS", "MAX_PIXELS", "ClarifaiAdapter", "create"]

#: Under 20 MB and 85 megapixels; JPEG, PNG, GIF, BMP, TIFF, WEBP.
LIMITS = ImageLimits(
    max_bytes=20 * 1024 * 1024 - 1,
    formats=frozenset({"JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP"}),
)
MAX_PIXELS = 85_000_000
_MAX_INPUTS = 128
_MAX_MESSAGE_BYTES = 1024 * 1024 * 1024  # what Clarifai's own channels allow

_S = status_code_pb2.StatusCode
_THROTTLE = frozenset({_S.CONN_THROTTLED, _S.CONN_EXCEED_HOURLY_LIMIT})
_AUTH = frozenset(
    {
        _S.CONN_ACCOUNT_ISSUES,
        _S.CONN_TOKEN_INVALID,
        _S.CONN_CREDENTIALS_INVALID,
        _S.CONN_INSUFFICIENT_SCOPES,
        _S.CONN_KEY_INVALID,
        _S.CONN_KEY_NOT_FOUND,
        _S.CONN_INVALID_REQUEST,  # 11102: Clarifai's answer to an empty or malformed authorization header
    }
)
_TRANSIENT = frozenset(
    {
        _S.TRY_AGAIN,
        _S.FAILURE,
        _S.MODEL_BUSY_PLEASE_RETRY,
        _S.MODEL_LOADING,
        _S.MODEL_DEPLOYING,
        _S.MODEL_QUEUED_FOR_DEPLOYMENT,
        _S.RPC_REQUEST_QUEUE_FULL,
        _S.RPC_SERVER_UNAVAILABLE,
        _S.RPC_REQUEST_TIMEOUT,
    }
)
_GRPC_TRANSIENT = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
    }
)


def _vendor_error(failure: grpc.aio.AioRpcError | status_pb2.Status) -> VendorError:
    """Map a gRPC error or a Clarifai status (of the call or one output) onto the error tree."""
    if isinstance(failure, grpc.aio.AioRpcError):
        code, details = failure.code(), failure.details() or ""
        message = f"Clarifai gRPC {code.name}: {details}"
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return Throttled(message)
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            return AuthError(f"{message} (check CLARIFAI_PAT)")
        if code == grpc.StatusCode.INTERNAL and "deserializ" in details:
            return MalformedAnswer(message)
        if code in _GRPC_TRANSIENT or code == grpc.StatusCode.INTERNAL:
            return Transient(message)
        if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE):
            return Rejected(message)
        return Fatal(message)
    code = failure.code
    name = _S.Name(code) if code in _S.values() else str(code)
    message = f"Clarifai {name} ({code}): {failure.description}"
    if failure.details:
        message += f": {failure.details}"
    if code in _THROTTLE:
        return Throttled(message)
    if code in _AUTH:
        return AuthError(f"{message} (check CLARIFAI_PAT and its scopes)")
    if code in _TRANSIENT or 98000 <= code < 99000:  # 98xxx: INTERNAL_* server issues
        return Transient(message)
    if 30000 <= code < 31000 or code == _S.CONN_BAD_REQUEST_FORMAT:  # 30xxx: INPUT_* problems
        return Rejected(message)
    return Fatal(message)


def _answer(output: resources_pb2.Output) -> VendorAnswer | VendorError:
    if output.status.code != _S.SUCCESS:
        return _vendor_error(output.status)
    # Values travel as float32; 6 decimals give back the exact value meant (see google.py).
    labels = tuple(
        Label(canonical_label(concept.name), min(1.0, max(0.0, round(concept.value, 6))))
        for concept in output.data.concepts
    )
    version = output.model.model_version.id or None
    return VendorAnswer(labels, version, json_format.MessageToJson(output, indent=None))


def _unpaired(sent: Sequence[str], answered: Sequence[str]) -> str:
    """Why the outputs cannot be paired with the inputs, by the input ids the adapter set."""
    missing = [input_id for input_id in sent if input_id not in answered]
    unexpected = sorted({input_id for input_id in answered if input_id not in sent})
    repeated = sorted({input_id for input_id in answered if answered.count(input_id) > 1})
    problems = [
        f"{label} {ids}"
        for label, ids in (
            ("no output for", missing),
            ("unknown", unexpected),
            ("more than one output for", repeated),
        )
        if ids
    ]
    return (
        f"Clarifai's outputs do not pair with the inputs sent: input ids {list(sent)} were sent, "
        f"the outputs name {list(answered)} ({'; '.join(problems)})"
    )


class ClarifaiAdapter(Adapter):
    """Concepts from one Clarifai model, up to 128 images per request."""

    name = "clarifai"
    max_batch = _MAX_INPUTS

    def __init__(
        self,
        target: str,
        secure: bool,
        pat: str,
        *,
        user_id: str = "clarifai",
        app_id: str = "main",
        model_id: str = "general-image-recognition",
        version_id: str | None = None,
        limits: ImageLimits = LIMITS,
        max_concepts: int = 10,
        timeout: float = 30.0,
    ) -> None:
        self._target, self._secure = target, secure
        self._metadata = (("authorization", f"Key {pat}"),)
        self._user_app_id = resources_pb2.UserAppIDSet(user_id=user_id, app_id=app_id)
        self._model_id, self._version_id = model_id, version_id or ""
        self.limits = limits
        self._max_concepts = max_concepts
        self.model_options = {
            "user_id": user_id,
            "app_id": app_id,
            "model_id": model_id,
            "version_id": version_id,
            "max_concepts": max_concepts,
        }
        self._timeout = timeout
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _stub_for_this_loop(self) -> Any:
        # grpc.aio channels belong to the event loop they were made in: build on first use.
        loop = asyncio.get_running_loop()
        if self._stub is None or self._loop is not loop:
            options = [
                ("grpc.enable_retries", 0),
                ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            ]
            if self._secure:
                credentials = grpc.ssl_channel_credentials()
                self._channel = grpc.aio.secure_channel(self._target, credentials, options=options)
            else:
                self._channel = grpc.aio.insecure_channel(self._target, options=options)
            # V2Stub reads a module global that only ClarifaiChannel.get_* sets: call one
            # (its channel is never used) so the stub deserialises gRPC answers.
            ClarifaiChannel.get_insecure_grpc_channel(base="127.0.0.1", port=1).close()
            self._stub = service_pb2_grpc.V2Stub(self._channel)
            self._loop = loop
        return self._stub

    async def label_batch(self, images: Sequence[bytes]) -> list[VendorAnswer | VendorError]:
        if len(images) > self.max_batch:
            raise ValueError(f"Clarifai takes at most {self.max_batch} images per call, got {len(images)}")
        results: list[VendorAnswer | VendorError | None] = [None] * len(images)
        to_send: list[int] = []
        for index, image in enumerate(images):
            try:
                check_image(image, self.limits, MAX_PIXELS)
                to_send.append(index)
            except Rejected as exc:
                results[index] = exc
        if to_send:
            answers = await self._predict([images[i] for i in to_send])
            for index, answer in zip(to_send, answers, strict=True):
                results[index] = answer
        return [result for result in results if result is not None]

    async def _predict(self, images: Sequence[bytes]) -> list[VendorAnswer | VendorError]:
        request = service_pb2.PostModelOutputsRequest(
            user_app_id=self._user_app_id,
            model_id=self._model_id,
            version_id=self._version_id,
            inputs=[
                resources_pb2.Input(
                    id=str(i), data=resources_pb2.Data(image=resources_pb2.Image(base64=image))
                )
                for i, image in enumerate(images)
            ],
            model=resources_pb2.Model(
                output_info=resources_pb2.OutputInfo(
                    output_config=resources_pb2.OutputConfig(max_concepts=self._max_concepts)
                )
            ),
        )
        try:
            stub = self._stub_for_this_loop()
            response = await stub.PostModelOutputs(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise _vendor_error(exc) from exc
        if response is None:  # grpc.aio yields None when the answer does not deserialise
            raise MalformedAnswer("Clarifai answer could not be deserialised")
        if response.status.code not in (_S.SUCCESS, _S.MIXED_STATUS, _S.FAILURE) or not response.outputs:
            raise _vendor_error(response.status)
        sent = [str(i) for i in range(len(images))]
        answered = [output.input.id for output in response.outputs]
        if sorted(answered) != sorted(sent):
            raise MalformedAnswer(_unpaired(sent, answered))
        by_input = {output.input.id: output for output in response.outputs}
        return [_answer(by_input[input_id]) for input_id in sent]

    async def aclose(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = None

    def __repr__(self) -> str:
        return f"<ClarifaiAdapter endpoint={self._target} model={self._model_id}>"


def create(
    *,
    endpoint: str | None = None,
    pat: str | None = None,
    user_id: str | None = None,
    app_id: str | None = None,
    model_id: str = "general-image-recognition",
    version_id: str | None = None,
    limits: ImageLimits = LIMITS,
    max_concepts: int = 10,
    timeout: float = 30.0,
) -> ClarifaiAdapter:
    """A Clarifai adapter.

    The PAT comes from ``pat`` or ``CLARIFAI_PAT``; the endpoint from ``endpoint``, else
    ``CLARIFAI_GRPC_BASE``, else ``api.clarifai.com``; the model owner from
    ``CLARIFAI_USER_ID``/``CLARIFAI_APP_ID`` (default Clarifai's public ``clarifai/main``).
    With an explicit endpoint and no PAT, a dummy PAT is sent (for emulators). An empty PAT is
    refused before any query: Clarifai would answer each with 11102 CONN_INVALID_REQUEST.
    """
    if pat is None:
        pat = os.environ.get("CLARIFAI_PAT")
        origin = "CLARIFAI_PAT"
    else:
        origin = "the pat option"
    if pat is not None and not pat.strip():
        raise AuthError(f"the Clarifai personal access token in {origin} is empty: set it to your PAT")
    if pat is None:
        if endpoint is None:
            raise AuthError("no Clarifai personal access token: set CLARIFAI_PAT or pass pat")
        pat = "apiwrap-emulator"
    target, secure = grpc_target(endpoint or os.environ.get("CLARIFAI_GRPC_BASE", "api.clarifai.com"))
    return ClarifaiAdapter(
        target,
        secure,
        pat,
        user_id=user_id or os.environ.get("CLARIFAI_USER_ID", "clarifai"),
        app_id=app_id or os.environ.get("CLARIFAI_APP_ID", "main"),
        model_id=model_id,
        version_id=version_id,
        limits=limits,
        max_concepts=max_concepts,
        timeout=timeout,
    )
