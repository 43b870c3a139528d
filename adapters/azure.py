"""Azure Computer Vision v3.2 tags on the official SDK (msrest, blocking, run in threads).

msrest's retries are off (``retry_policy.retries = 0``) and every attempt gets a fresh
stream: a consumed stream sent again would upload an empty body.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Sequence
from typing import Any

import msrest.exceptions
from azure.cognitiveservices.vision.computervision import ComputerVisionClient
from azure.cognitiveservices.vision.computervision.models import ComputerVisionErrorResponseException
from msrest.authentication import CognitiveServicesCredentials

from apiwrap.adapters._preflight import label_one_at_a_time
from apiwrap.adapters._threads import BlockingRunner
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

__all__ = ["LIMITS", "AzureAdapter", "create"]

#: Under 4 MB, 50 to 16,000 px a side, JPEG, PNG, GIF or BMP.
LIMITS = ImageLimits(
    max_bytes=4 * 1024 * 1024 - 1,
    min_side=50,
    max_side=16_000,
    formats=frozenset({"JPEG", "PNG", "GIF", "BMP"}),
)

# (endpoint, key) environment variables, in order: this project's, then Azure's samples'.
_ENV_NAMES = (
    ("AZURE_COMPUTER_VISION_ENDPOINT", "AZURE_COMPUTER_VISION_KEY"),
    ("VISION_ENDPOINT", "VISION_KEY"),
    ("COMPUTER_VISION_ENDPOINT", "COMPUTER_VISION_SUBSCRIPTION_KEY"),
)
_RETRY_AFTER = re.compile(r"retry after (\d+(?:\.\d+)?) (second|minute|hour|day)", re.IGNORECASE)
#: "Quota will be replenished in 22.14:18:12": a .NET TimeSpan, [days.]hours:minutes:seconds.
_REPLENISHED = re.compile(r"replenished in (?:(\d+)\.)?(\d+):(\d{2}):(\d{2}(?:\.\d+)?)", re.IGNORECASE)
#: Azure's 403 for a resource out of its call quota: a quota, not a credential problem.
_OUT_OF_QUOTA = re.compile(r"out of call volume quota", re.IGNORECASE)
_UNIT_SECONDS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}


def _vendor_error(exc: Exception) -> VendorError:
    """Map any msrest / Computer Vision failure onto the vendor error tree."""
    if isinstance(exc, ComputerVisionErrorResponseException):
        status = exc.response.status_code if exc.response is not None else 0
        code, inner, message = _error_fields(exc)
        detail = inner or code
        label = str(status) if detail in ("", str(status)) else f"{status} {detail}"
        text = f"Azure Computer Vision {label}: {message}".rstrip(": ")
        if status == 429 or (status == 403 and _OUT_OF_QUOTA.search(message)):
            return Throttled(text, retry_after=_retry_after(exc.response.headers, message))
        if status in (401, 403):
            return AuthError(f"{text} (check the Azure key and endpoint)")
        if status in (408,) or status >= 500:
            return Transient(text)
        if 400 <= status < 500:
            return Rejected(text)
        return Fatal(text)
    if isinstance(exc, msrest.exceptions.ClientRequestError):
        return Transient(f"Azure Computer Vision connection failed: {type(exc.inner_exception).__name__}")
    if isinstance(exc, msrest.exceptions.DeserializationError):
        return MalformedAnswer("Azure Computer Vision answer could not be deserialised")
    if isinstance(exc, msrest.exceptions.AuthenticationError | msrest.exceptions.TokenExpiredError):
        return AuthError("Azure Computer Vision refused the credentials")
    if isinstance(exc, msrest.exceptions.ValidationError):
        return Rejected(f"request refused by the Azure SDK: {exc}")
    return Fatal(f"Azure Computer Vision call failed: {type(exc).__name__}: {exc}")


def _error_fields(exc: ComputerVisionErrorResponseException) -> tuple[str, str | None, str]:
    """(code, inner code, message) from the error body; the raw text if it is not JSON.

    Computer Vision answers ``{"error": {"code", "message", "innererror"}}``; the API gateway in
    front of it (quota, key) may answer ``{"statusCode": 403, "message": ...}`` instead.
    """
    try:
        document = exc.response.json()
        if "error" not in document:
            return str(document["statusCode"]), None, str(document["message"])
        error = document["error"]
        inner = error.get("innererror") or {}
        return str(error.get("code", "")), inner.get("code"), str(error.get("message", ""))
    except (ValueError, KeyError, TypeError, AttributeError):
        return "", None, (exc.response.text[:200] if exc.response is not None else str(exc))


def _retry_after(headers: Any, message: str) -> float | None:
    """Seconds from the ``Retry-After`` header, else from the message: "Please retry after N
    second(s)" (or minutes, hours, days), or "Quota will be replenished in [d.]hh:mm:ss"."""
    value = headers.get("Retry-After") if headers is not None else None
    if value is not None:
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
    match = _RETRY_AFTER.search(message)
    if match:
        return float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
    match = _REPLENISHED.search(message)
    if match:
        days, hours, minutes, seconds = match.groups()
        return int(days or 0) * 86400.0 + int(hours) * 3600.0 + int(minutes) * 60.0 + float(seconds)
    return None


def _parse(response: Any) -> VendorAnswer:
    raw = response.response.text
    result = response.output
    tags = getattr(result, "tags", None)
    if result is None or tags is None:
        raise MalformedAnswer("Azure Computer Vision answer has no tags list")
    try:
        labels = tuple(
            Label(canonical_label(tag.name), min(1.0, max(0.0, float(tag.confidence)))) for tag in tags
        )
    except (TypeError, ValueError, AttributeError) as exc:
        raise MalformedAnswer(f"Azure Computer Vision tag without name/confidence: {exc!r}") from exc
    return VendorAnswer(labels, result.model_version, raw)


class AzureAdapter(Adapter):
    """One image per Tag call; ``label_batch`` takes one image at a time."""

    name = "azure"
    max_batch = 1

    def __init__(
        self,
        client: ComputerVisionClient,
        *,
        limits: ImageLimits = LIMITS,
        model_version: str = "latest",
        language: str = "en",
        timeout: float = 30.0,
        max_concurrency: int = 16,
    ) -> None:
        self._client = client
        self.limits = limits
        self._model_version = model_version
        self._language = language
        self.model_options = {"model_version": model_version, "language": language}
        self._timeout = timeout
        self._runner = BlockingRunner(max_concurrency, "azure-cv")

    async def label_batch(self, images: Sequence[bytes]) -> list[VendorAnswer | VendorError]:
        async def label(data: bytes) -> VendorAnswer:
            return _parse(await self._tag(data))

        return await label_one_at_a_time("Azure", images, self.limits, label)

    async def _tag(self, image: bytes) -> Any:
        try:
            return await self._runner.run(
                self._client.tag_image_in_stream,
                io.BytesIO(image),  # a fresh stream per attempt: the engine retries with new ones
                language=self._language,
                model_version=self._model_version,
                raw=True,
                timeout=self._timeout,
            )
        except Exception as exc:
            raise _vendor_error(exc) from exc

    async def aclose(self) -> None:
        self._runner.close()
        self._client.close()

    def __repr__(self) -> str:
        return f"<AzureAdapter endpoint={self._client.config.endpoint}>"


def create(
    *,
    endpoint: str | None = None,
    key: str | None = None,
    limits: ImageLimits = LIMITS,
    model_version: str = "latest",
    language: str = "en",
    timeout: float = 30.0,
    max_concurrency: int = 16,
) -> AzureAdapter:
    """An Azure Computer Vision adapter.

    Endpoint and key come from the options, else from ``AZURE_COMPUTER_VISION_ENDPOINT`` /
    ``AZURE_COMPUTER_VISION_KEY`` (or Azure's sample names ``VISION_ENDPOINT``/``VISION_KEY``
    and ``COMPUTER_VISION_ENDPOINT``/``COMPUTER_VISION_SUBSCRIPTION_KEY``). With an
    explicit endpoint and no key anywhere, a dummy key is sent (for emulators).
    """
    explicit_endpoint = endpoint is not None
    for endpoint_name, key_name in _ENV_NAMES:
        endpoint = endpoint or os.environ.get(endpoint_name)
        key = key or os.environ.get(key_name)
    if endpoint is None:
        raise AuthError("no Azure Computer Vision endpoint: set AZURE_COMPUTER_VISION_ENDPOINT")
    if key is None:
        if not explicit_endpoint:
            raise AuthError("no Azure Computer Vision key: set AZURE_COMPUTER_VISION_KEY or pass key")
        key = "apiwrap-emulator"
    client = ComputerVisionClient(endpoint.rstrip("/"), CognitiveServicesCredentials(key))
    client.config.retry_policy.retries = 0  # the engine retries; msrest would pay twice
    return AzureAdapter(
        client,
        limits=limits,
        model_version=model_version,
        language=language,
        timeout=timeout,
        max_concurrency=max_concurrency,
    )
