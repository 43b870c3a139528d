"""AWS Rekognition DetectLabels on boto3.

boto3 blocks, so each call runs in the adapter's own thread pool. botocore's retries are
off (one attempt): the engine retries, and a retry inside the SDK would be a second paid
call the engine never sees. Confidence (0-100) becomes a 0..1 score; a label's ``Parents`` and
``Aliases`` become its ``subsumes``, which decide a tie (AWS scores them alike).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import botocore.parsers
from botocore.config import Config

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

__all__ = ["LIMITS", "RekognitionAdapter", "create"]

#: 5 MB of raw bytes inline, 80 to 10,000 px a side, JPEG or PNG (botocore checks none).
LIMITS = ImageLimits(max_bytes=5 * 1024 * 1024, min_side=80, max_side=10_000)

_THROTTLE_CODES = frozenset(
    {
        "ThrottlingException",
        "ProvisionedThroughputExceededException",
        "LimitExceededException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
    }
)
_REJECT_CODES = frozenset(
    {
        "ImageTooLargeException",
        "InvalidImageFormatException",
        "InvalidParameterException",
        "InvalidS3ObjectException",
        "ValidationException",
        "SerializationException",
    }
)
_AUTH_CODES = frozenset(
    {
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "MissingAuthenticationTokenException",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
    }
)
_TRANSIENT_CODES = frozenset({"InternalServerError", "ServiceUnavailableException", "ServiceUnavailable"})


def _vendor_error(exc: Exception) -> VendorError:
    """Map any boto3/botocore failure onto the vendor error tree (the one place that does)."""
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = f"Rekognition {code}: {error.get('Message', '')}".rstrip(": ")
        metadata = exc.response.get("ResponseMetadata", {})
        status = int(metadata.get("HTTPStatusCode", 0))
        if code in _THROTTLE_CODES or status == 429:
            return Throttled(message, retry_after=_retry_after(metadata.get("HTTPHeaders", {})))
        if code in _AUTH_CODES or status in (401, 403):
            return AuthError(f"{message} (check the AWS credentials and their IAM permissions)")
        if code in _REJECT_CODES:
            return Rejected(message)
        if code in _TRANSIENT_CODES or status >= 500:
            return Transient(message)
        return Fatal(message)
    if isinstance(exc, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError):
        return AuthError("no AWS credentials found (set AWS_ACCESS_KEY_ID and its secret, or a profile)")
    if isinstance(exc, botocore.exceptions.NoRegionError):
        return Fatal("no AWS region configured (set AWS_REGION or pass region)")
    if isinstance(exc, botocore.parsers.ResponseParserError) or _raised_while_parsing(exc):
        return MalformedAnswer(
            f"Rekognition answer could not be parsed: {type(exc).__name__}: {str(exc)[:200]}"
        )
    if isinstance(exc, botocore.exceptions.ParamValidationError):
        return Rejected(f"request refused by botocore: {exc}")
    if isinstance(
        exc,
        botocore.exceptions.ConnectionError
        | botocore.exceptions.HTTPClientError
        | botocore.exceptions.ReadTimeoutError,
    ):
        return Transient(f"Rekognition connection failed: {type(exc).__name__}")
    return Fatal(f"Rekognition call failed: {type(exc).__name__}: {exc}")


def _raised_while_parsing(exc: BaseException) -> bool:
    """Whether ``exc`` came out of botocore's response parsers.

    They raise their own ``ResponseParserError`` for some bodies only: a body of the wrong shape
    (``{"Labels": {}}``, a list) or not UTF-8 escapes them as AttributeError, TypeError or
    UnicodeDecodeError, which says nothing of the vendor but that its answer was unreadable.
    """
    frame = exc.__traceback__
    while frame is not None:
        if frame.tb_frame.f_globals.get("__name__") == botocore.parsers.__name__:
            return True
        frame = frame.tb_next
    return False


def _retry_after(headers: dict[str, str]) -> float | None:
    """Seconds from ``x-amz-retry-after`` (milliseconds) or ``Retry-After`` (seconds)."""
    lowered = {name.lower(): value for name, value in headers.items()}
    try:
        if "x-amz-retry-after" in lowered:
            return max(0.0, float(lowered["x-amz-retry-after"]) / 1000.0)
        if "retry-after" in lowered:
            return max(0.0, float(lowered["retry-after"]))
    except ValueError:
        return None
    return None


def _parse(response: dict[str, Any]) -> VendorAnswer:
    body = {key: value for key, value in response.items() if key != "ResponseMetadata"}
    labels = body.get("Labels")
    if not isinstance(labels, list):
        raise MalformedAnswer("Rekognition answer has no Labels list")
    try:
        parsed = tuple(
            Label(
                canonical_label(label["Name"]),
                min(1.0, max(0.0, float(label["Confidence"]) / 100.0)),
                frozenset(
                    canonical_label(related["Name"])
                    for related in (label.get("Parents") or []) + (label.get("Aliases") or [])
                ),
            )
            for label in labels
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedAnswer(f"Rekognition label without Name/Confidence: {exc!r}") from exc
    version = body.get("LabelModelVersion")
    return VendorAnswer(parsed, str(version) if version else None, json.dumps(body, default=str))


class RekognitionAdapter(Adapter):
    """One image per DetectLabels call; ``label_batch`` takes one image at a time."""

    name = "aws"
    max_batch = 1

    def __init__(
        self,
        client: Any,
        *,
        limits: ImageLimits = LIMITS,
        max_labels: int = 10,
        min_confidence: float = 0.0,
        max_concurrency: int = 16,
    ) -> None:
        self._client = client
        self.limits = limits
        self._max_labels = max_labels
        self._min_confidence = min_confidence
        self.model_options = {"max_labels": max_labels, "min_confidence": min_confidence}
        self._runner = BlockingRunner(max_concurrency, "rekognition")

    async def label_batch(self, images: Sequence[bytes]) -> list[VendorAnswer | VendorError]:
        async def label(data: bytes) -> VendorAnswer:
            return _parse(await self._detect(data))

        return await label_one_at_a_time("Rekognition", images, self.limits, label)

    async def _detect(self, image: bytes) -> dict[str, Any]:
        try:
            return await self._runner.run(
                self._client.detect_labels,
                Image={"Bytes": image},
                MaxLabels=self._max_labels,
                MinConfidence=self._min_confidence,
            )
        except Exception as exc:
            raise _vendor_error(exc) from exc

    async def aclose(self) -> None:
        self._runner.close()
        self._client.close()

    def __repr__(self) -> str:
        return f"<RekognitionAdapter endpoint={self._client.meta.endpoint_url}>"


def _has_configured_credentials(profile: str | None) -> bool:
    """Whether the environment names credentials, without probing the network (IMDS)."""
    if profile or os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_PROFILE"):
        return True
    shared = os.environ.get("AWS_SHARED_CREDENTIALS_FILE", str(Path.home() / ".aws" / "credentials"))
    return Path(shared).is_file()


def create(
    *,
    endpoint: str | None = None,
    region: str | None = None,
    aws_access_key_id: str | None = None,
    aws_secret_access_key: str | None = None,
    aws_session_token: str | None = None,
    profile: str | None = None,
    limits: ImageLimits = LIMITS,
    max_labels: int = 10,
    min_confidence: float = 0.0,
    timeout: float = 30.0,
    max_concurrency: int = 16,
) -> RekognitionAdapter:
    """A Rekognition adapter; credentials and region follow boto3's usual chain.

    ``endpoint`` overrides the service URL (also read by botocore from
    ``AWS_ENDPOINT_URL_REKOGNITION``). With an endpoint and no configured credentials,
    dummy keys are used so an emulator works with no setup. ``min_confidence`` is 0 by
    default: a label the vendor saw is a vote, and a threshold only turns votes into
    "no label".
    """
    session = boto3.Session(profile_name=profile)
    if endpoint and not aws_access_key_id and not _has_configured_credentials(profile):
        aws_access_key_id, aws_secret_access_key = "apiwrap-emulator", "apiwrap-emulator"
    config = Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=timeout,
        read_timeout=timeout,
        max_pool_connections=max_concurrency,
        user_agent_extra="apiwrap",
    )
    client = session.client(
        "rekognition",
        endpoint_url=endpoint,
        region_name=region or session.region_name or "us-east-1",
        aws_access_key_id=aws_access_key_id,
        aws_secret_access_key=aws_secret_access_key,
        aws_session_token=aws_session_token,
        config=config,
    )
    return RekognitionAdapter(
        client,
        limits=limits,
        max_labels=max_labels,
        min_confidence=min_confidence,
        max_concurrency=max_concurrency,
    )
