"""Google Cloud Vision label detection on the async gRPC client.

Up to 16 images go in one ``batch_annotate_images`` call (and at most 10 MB of image
bytes, the size of Google's JSON request limit), always with ``retry=None`` (google-api-core
would retry UNAVAILABLE on its own) and an explicit ``timeout`` (its default is no deadline).
One image can fail inside a successful batch: its error lands in its own slot.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence

import google.auth.exceptions
import grpc
from google.api_core import exceptions as api_exceptions
from google.api_core.client_options import ClientOptions
from google.cloud import vision_v1
from google.cloud.vision_v1.services.image_annotator.transports import ImageAnnotatorGrpcAsyncIOTransport
from google.protobuf import json_format
from google.rpc import error_details_pb2

from apiwrap.adapters._google_status import GoogleStatus, code_for_http_status
from apiwrap.adapters._grpc_target import grpc_target
from apiwrap.adapters._preflight import check_image
from apiwrap.adapters.base import Adapter, ImageLimits, Label, VendorAnswer, canonical_label
from apiwrap.adapters.errors import (
    AuthError,
    Fatal,
    MalformedAnswer,
    Rejected,
    VendorError,
)

__all__ = ["LIMITS", "MAX_PIXELS", "GoogleVisionAdapter", "create"]

#: 20 MB per image file; JPEG, PNG, GIF, BMP, WEBP, ICO, TIFF (RAW and PDF are not images here).
LIMITS = ImageLimits(
    max_bytes=20 * 1024 * 1024,
    formats=frozenset({"JPEG", "PNG", "GIF", "BMP", "WEBP", "ICO", "TIFF"}),
)
MAX_PIXELS = 75_000_000
_MAX_IMAGES = 16
_MAX_REQUEST_BYTES = 10 * 1024 * 1024
_MAX_MESSAGE_BYTES = 128 * 1024 * 1024
_AUTH_HINT = "check the Google API key or credentials"


def _vendor_error(exc: Exception) -> VendorError:
    """Map any google-api-core / google-auth failure onto the vendor error tree."""
    if isinstance(exc, google.auth.exceptions.GoogleAuthError):
        return AuthError(f"Google credentials unusable: {type(exc).__name__} (set GOOGLE_API_KEY or ADC)")
    if not isinstance(exc, api_exceptions.GoogleAPICallError):
        return Fatal(f"Google Vision call failed: {type(exc).__name__}: {exc}")
    if isinstance(exc, api_exceptions.InternalServerError) and "deserializ" in str(exc.message):
        # grpc reports an unparseable answer as INTERNAL
        return MalformedAnswer(f"Google Vision {type(exc).__name__}: {exc.message}")
    reasons = frozenset({exc.reason} if exc.reason else ())
    if exc.grpc_status_code is not None:
        code = exc.grpc_status_code.value[0]
    else:  # an HTTP-only exception class (REST transport)
        code = code_for_http_status(exc.code or 0)
    status = GoogleStatus(code, str(exc.message), reasons, _retry_after(exc))
    return status.error("Google Vision", _AUTH_HINT)


def _retry_after(exc: api_exceptions.GoogleAPICallError) -> float | None:
    """Seconds from a ``google.rpc.RetryInfo`` detail, when Google sends one."""
    for detail in exc.details or ():
        if isinstance(detail, error_details_pb2.RetryInfo):
            return detail.retry_delay.ToTimedelta().total_seconds()
    return None


def _answer(item: vision_v1.AnnotateImageResponse) -> VendorAnswer | VendorError:
    if item.error.code:
        return GoogleStatus(item.error.code, item.error.message).error("Google Vision", _AUTH_HINT)
    # Scores travel as float32; rounding to 6 decimals gives back the exact value a vendor
    # (or the emulator) meant, so the same image scores the same across vendors.
    labels = tuple(
        Label(canonical_label(annotation.description), min(1.0, max(0.0, round(annotation.score, 6))))
        for annotation in item.label_annotations
    )
    raw = json_format.MessageToJson(vision_v1.AnnotateImageResponse.pb(item), indent=None)
    return VendorAnswer(labels, None, raw)  # Google reports no model version


def _requests(images: Sequence[bytes]) -> list[list[int]]:
    """Indices of ``images`` grouped into requests of at most 16 images and 10 MB."""
    groups: list[list[int]] = []
    size = 0
    for index, image in enumerate(images):
        if not groups or len(groups[-1]) == _MAX_IMAGES or size + len(image) > _MAX_REQUEST_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(index)
        size += len(image)
    return groups


class GoogleVisionAdapter(Adapter):
    """Label detection, up to 16 images per request."""

    name = "google"
    max_batch = _MAX_IMAGES

    def __init__(
        self,
        endpoint: str | None,
        *,
        api_key: str | None = None,
        limits: ImageLimits = LIMITS,
        max_results: int = 10,
        timeout: float = 30.0,
    ) -> None:
        self._endpoint = endpoint
        self._api_key = api_key
        self.limits = limits
        self._max_results = max_results
        self.model_options = {"max_results": max_results}
        self._timeout = timeout
        self._client: vision_v1.ImageAnnotatorAsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._metadata: tuple[tuple[str, str], ...] = ()

    def _client_for_this_loop(self) -> vision_v1.ImageAnnotatorAsyncClient:
        # grpc.aio channels belong to the event loop they were made in: build on first use.
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client, self._metadata = self._build_client()
            self._loop = loop
        return self._client

    def _build_client(self) -> tuple[vision_v1.ImageAnnotatorAsyncClient, tuple[tuple[str, str], ...]]:
        target, secure = grpc_target(self._endpoint or "vision.googleapis.com:443")
        if not secure:
            channel = grpc.aio.insecure_channel(
                target,
                options=[
                    ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
                    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
                ],
            )
            transport = ImageAnnotatorGrpcAsyncIOTransport(channel=channel)
            # A transport with its own channel sends no credentials: pass the key ourselves.
            metadata = (("x-goog-api-key", self._api_key),) if self._api_key else ()
            return vision_v1.ImageAnnotatorAsyncClient(transport=transport), metadata
        options = ClientOptions(api_endpoint=target, api_key=self._api_key)
        return vision_v1.ImageAnnotatorAsyncClient(client_options=options), ()

    async def label_batch(self, images: Sequence[bytes]) -> list[VendorAnswer | VendorError]:
        results: list[VendorAnswer | VendorError | None] = [None] * len(images)
        to_send: list[int] = []
        for index, image in enumerate(images):
            try:
                check_image(image, self.limits, MAX_PIXELS)
                to_send.append(index)
            except Rejected as exc:
                results[index] = exc
        groups = [[to_send[i] for i in group] for group in _requests([images[i] for i in to_send])]
        outcomes = await asyncio.gather(
            *(self._annotate([images[i] for i in group]) for group in groups), return_exceptions=True
        )
        for group, outcome in zip(groups, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if len(groups) == 1 or not isinstance(outcome, VendorError):
                    raise outcome  # the whole batch was this one request
                outcome = [outcome] * len(group)  # one of several requests: its images failed
            for index, answer in zip(group, outcome, strict=True):
                results[index] = answer
        return [result for result in results if result is not None]

    async def _annotate(self, images: Sequence[bytes]) -> list[VendorAnswer | VendorError]:
        feature = vision_v1.Feature(
            type_=vision_v1.Feature.Type.LABEL_DETECTION, max_results=self._max_results
        )
        requests = [
            vision_v1.AnnotateImageRequest(image=vision_v1.Image(content=image), features=[feature])
            for image in images
        ]
        try:
            client = self._client_for_this_loop()
            response = await client.batch_annotate_images(
                requests=requests, retry=None, timeout=self._timeout, metadata=self._metadata
            )
        except Exception as exc:
            raise _vendor_error(exc) from exc
        if response is None:  # grpc.aio yields None when the answer does not deserialise
            raise MalformedAnswer("Google Vision answer could not be deserialised")
        if len(response.responses) != len(images):
            raise MalformedAnswer(f"Google Vision answered {len(response.responses)} of {len(images)} images")
        return [_answer(item) for item in response.responses]

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.transport.close()
            self._client = None

    def __repr__(self) -> str:
        return f"<GoogleVisionAdapter endpoint={self._endpoint or 'vision.googleapis.com'}>"


def create(
    *,
    endpoint: str | None = None,
    api_key: str | None = None,
    limits: ImageLimits = LIMITS,
    max_results: int = 10,
    timeout: float = 30.0,
) -> GoogleVisionAdapter:
    """A Google Vision adapter.

    Credentials: ``api_key`` or ``GOOGLE_API_KEY``, else Application Default Credentials
    (``GOOGLE_APPLICATION_CREDENTIALS``). ``endpoint`` overrides the gRPC endpoint;
    ``http://host:port`` means a plaintext channel (an emulator), where no credentials
    are needed.
    """
    return GoogleVisionAdapter(
        endpoint,
        api_key=api_key or os.environ.get("GOOGLE_API_KEY"),
        limits=limits,
        max_results=max_results,
        timeout=timeout,
    )
