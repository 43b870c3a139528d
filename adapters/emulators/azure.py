"""Azure Computer Vision emulator: v3.2 ``/vision/v3.2/tag`` and ``/analyze?visualFeatures=Tags``,
and the older ``/vision/v2.1/analyze`` (same tags; v2.1 answers carry no ``modelVersion``).

The SDK uploads the image as a chunked octet stream and authenticates with
``Ocp-Apim-Subscription-Key``. Tags are lowercase class names with a 0..1 confidence.
Errors are ``{"error": {"code", "message", "innererror"}}``; a throttled call is a 429
whose message says "Please retry after N second(s)", with a ``Retry-After`` header.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

from apiwrap.adapters._preflight import probe_image
from apiwrap.adapters.base import ImageLimits
from apiwrap.adapters.emulators._http import ConnectionReset, HttpReply, HttpRequest, HttpServer, json_reply
from apiwrap.adapters.emulators.core import Emulator, EmulatorConfig
from apiwrap.adapters.errors import Rejected

__all__ = ["AzureEmulator", "start"]

_TAG_PATH = "/vision/v3.2/tag"
_ANALYZE_PATH = "/vision/v3.2/analyze"
_V21_ANALYZE_PATH = "/vision/v2.1/analyze"
_AUTH_MESSAGE = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid "
    "key for an active subscription and use a correct regional API endpoint for your resource."
)
_FORMAT_NAMES = {"JPEG": "Jpeg", "PNG": "Png", "GIF": "Gif", "BMP": "Bmp"}


class AzureEmulator(Emulator):
    vendor = "azure"
    default_limits = ImageLimits(
        max_bytes=4 * 1024 * 1024 - 1,
        min_side=50,
        max_side=16_000,
        formats=frozenset({"JPEG", "PNG", "GIF", "BMP"}),
    )
    default_model_version = "2021-04-01"

    def _start_servers(self) -> str:
        self._server = HttpServer(self.policy.serving(self._handle), self.config.host, self.config.port)
        return self._server.url

    def _stop_servers(self) -> None:
        self._server.close()

    def _handle(self, request: HttpRequest) -> HttpReply:
        self.policy.open_call()
        if request.method != "POST" or request.path not in (_TAG_PATH, _ANALYZE_PATH, _V21_ANALYZE_PATH):
            return _error(404, "404", "Resource not found")
        key = request.headers.get("Ocp-Apim-Subscription-Key")
        if key is None or (self.config.api_key is not None and key != self.config.api_key):
            self.policy.refuse("auth")
            return _error(401, "401", _AUTH_MESSAGE)
        action = self.policy.decide()
        if action.kind == "throttle":
            seconds = max(1, math.ceil(action.retry_after or 1.0))
            unit = "second" if seconds == 1 else "seconds"
            message = (
                "Requests to the Tag Operation under Computer Vision API (v3.2) have exceeded rate limit of "
                f"your current ComputerVision S1 pricing tier. Please retry after {seconds} {unit}."
            )
            return _error(429, "429", message, {"Retry-After": str(seconds)})
        if action.kind == "error":
            return _error(500, "InternalServerError", "An internal server error occurred.")
        if action.kind == "hang":
            self.policy.hang()
            raise ConnectionReset
        if action.kind == "reset":
            raise ConnectionReset
        try:
            width, height, image_format = self._check_limits(request.body)
        except Rejected as exc:
            self.policy.refuse("rejected")
            inner, message = exc.args
            return _error(400, "InvalidRequest", message, inner=inner)
        labels = [] if action.kind == "empty" else self.classify([request.body])[0]
        answer = self._answer(labels, width, height, image_format)
        if request.path == _V21_ANALYZE_PATH:
            del answer["modelVersion"]  # v2.1 predates model versions in answers
        reply = json_reply(200, answer)
        self.policy.bill(1)
        if action.kind == "malformed":
            return HttpReply(200, reply.body[: len(reply.body) // 2])
        return reply

    def _check_limits(self, image: bytes) -> tuple[int, int, str]:
        if len(image) > self.limits.max_bytes:
            raise Rejected("InvalidImageSize", "The input image is too large. Size should be less than 4MB.")
        try:
            width, height, image_format = probe_image(image)
        except Rejected:
            raise Rejected("InvalidImageFormat", "Input data is not a valid image.") from None
        if image_format not in self.limits.formats:
            raise Rejected("InvalidImageFormat", "Input data is not a valid image.")
        if min(width, height) < self.limits.min_side:
            raise Rejected("InvalidImageSize", "Image must be at least 50 pixels in width and height.")
        if max(width, height) > self.limits.max_side:
            raise Rejected("InvalidImageSize", "Image must be less than 16000 pixels in width and height.")
        return width, height, image_format

    def _answer(self, labels: list[tuple[str, float]], width: int, height: int, fmt: str) -> dict[str, Any]:
        return {
            "tags": [{"name": name.lower(), "confidence": score} for name, score in labels],
            "requestId": str(uuid.uuid4()),
            "metadata": {"width": width, "height": height, "format": _FORMAT_NAMES.get(fmt, fmt.title())},
            "modelVersion": self.model_version,
        }


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, inner: str | None = None
) -> HttpReply:
    error: dict[str, Any] = {"code": code, "message": message}
    if inner is not None:
        error["innererror"] = {"code": inner, "message": message}
    return json_reply(status, {"error": error}, {"apim-request-id": str(uuid.uuid4()), **(headers or {})})


def start(config: EmulatorConfig | None = None) -> AzureEmulator:
    """Start an Azure Computer Vision emulator; its ``endpoint`` is the SDK's endpoint."""
    emulator = AzureEmulator(config)
    emulator.start()
    return emulator
