"""AWS Rekognition DetectLabels emulator: the JSON 1.1 protocol botocore speaks.

``POST /`` with ``X-Amz-Target: RekognitionService.DetectLabels``; errors are JSON bodies
whose ``__type`` names the exception (botocore reads it, not the status). Labels are the
model's classes in Title Case with Confidence on 0-100. A throttle answer carries
``x-amz-retry-after`` (milliseconds), which botocore surfaces in the error's headers.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import string
import uuid
from typing import Any

from apiwrap.adapters._preflight import probe_image
from apiwrap.adapters.base import ImageLimits
from apiwrap.adapters.emulators._http import ConnectionReset, HttpReply, HttpRequest, HttpServer, json_reply
from apiwrap.adapters.emulators.core import Emulator, EmulatorConfig
from apiwrap.adapters.errors import Rejected

__all__ = ["AwsEmulator", "start"]

_TARGET = "RekognitionService.DetectLabels"
_ACCESS_KEY = re.compile(r"Credential=([^/,\s]+)/")
_DEFAULT_MIN_CONFIDENCE = 55.0  # the service's documented default


class AwsEmulator(Emulator):
    vendor = "aws"
    default_limits = ImageLimits(max_bytes=5 * 1024 * 1024, min_side=80, max_side=10_000)
    default_model_version = "3.0"

    def _start_servers(self) -> str:
        self._server = HttpServer(self.policy.serving(self._handle), self.config.host, self.config.port)
        return self._server.url

    def _stop_servers(self) -> None:
        self._server.close()

    def _handle(self, request: HttpRequest) -> HttpReply:
        self.policy.open_call()
        if request.method != "POST" or request.headers.get("X-Amz-Target") != _TARGET:
            return _error(400, "UnknownOperationException", "Unknown operation")
        match = _ACCESS_KEY.search(request.headers.get("Authorization", ""))
        if match is None:
            self.policy.refuse("auth")
            return _error(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
        if self.config.api_key is not None and match.group(1) != self.config.api_key:
            self.policy.refuse("auth")
            return _error(
                400, "UnrecognizedClientException", "The security token included in the request is invalid."
            )
        action = self.policy.decide()
        if action.kind == "throttle":
            headers = {}
            if action.retry_after is not None:
                headers["x-amz-retry-after"] = str(max(1, round(action.retry_after * 1000)))
            return _error(400, "ThrottlingException", "Rate exceeded", headers)
        if action.kind == "error":
            return _error(500, "InternalServerError", "Internal server error")
        if action.kind == "hang":
            self.policy.hang()
            raise ConnectionReset
        if action.kind == "reset":
            raise ConnectionReset
        try:
            document = _parse(request.body)
            image = _decode_image(document)
            self._check_limits(image)
        except Rejected as exc:
            self.policy.refuse("rejected")
            return _error(400, *exc.args)
        labels = [] if action.kind == "empty" else self.classify([image])[0]
        reply = json_reply(200, self._answer(labels, document))
        self.policy.bill(1)
        if action.kind == "malformed":
            return HttpReply(200, reply.body[: len(reply.body) // 2])
        return reply

    def _check_limits(self, image: bytes) -> None:
        if len(image) > self.limits.max_bytes:
            raise Rejected("ImageTooLargeException", "Image size is too large.")
        try:
            width, height, image_format = probe_image(image)
        except Rejected:
            raise Rejected("InvalidImageFormatException", "Request has invalid image format") from None
        if image_format not in self.limits.formats:
            raise Rejected("InvalidImageFormatException", "Request has invalid image format")
        if max(width, height) > self.limits.max_side:
            raise Rejected("ImageTooLargeException", "Image dimensions are too large.")
        if min(width, height) < self.limits.min_side:
            raise Rejected("InvalidParameterException", "Request has invalid parameters")

    def _answer(self, labels: list[tuple[str, float]], document: dict[str, Any]) -> dict[str, Any]:
        min_confidence = float(document.get("MinConfidence", _DEFAULT_MIN_CONFIDENCE))
        max_labels = int(document.get("MaxLabels", len(labels)))
        chosen = [(name, score * 100.0) for name, score in labels if score * 100.0 >= min_confidence]
        return {
            "Labels": [
                {
                    "Name": string.capwords(name),
                    "Confidence": confidence,
                    "Instances": [],
                    "Parents": [],
                    "Aliases": [],
                    "Categories": [],
                }
                for name, confidence in chosen[:max_labels]
            ],
            "LabelModelVersion": self.model_version,
        }


def _parse(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise Rejected("SerializationException", "Start of structure or map found where not expected.")
    return document


def _decode_image(document: dict[str, Any]) -> bytes:
    try:
        return base64.b64decode(document["Image"]["Bytes"], validate=True)
    except (KeyError, TypeError, binascii.Error):
        raise Rejected("InvalidParameterException", "Request has invalid parameters") from None


def _error(status: int, error_type: str, message: str, headers: dict[str, str] | None = None) -> HttpReply:
    return json_reply(
        status,
        {"__type": error_type, "message": message},
        {"x-amzn-RequestId": str(uuid.uuid4()), "x-amzn-ErrorType": error_type, **(headers or {})},
    )


def start(config: EmulatorConfig | None = None) -> AwsEmulator:
    """Start an AWS Rekognition emulator; its ``endpoint`` is the boto3 ``endpoint_url``."""
    emulator = AwsEmulator(config)
    emulator.start()
    return emulator
