"""The ``/aws`` door: Rekognition ``DetectLabels`` over AWS JSON 1.1, signed with SigV4.

boto3 reaches it with ``endpoint_url="http://HOST:PORT/aws"`` and the tenant's AWS-style key
pair. The signature is recomputed with botocore's own signer from the headers the client
signed; a missing, malformed, unknown, wrong or stale (over 5 minutes off) signature is
refused with Rekognition's own error, as is every other operation. Errors are JSON bodies whose
``__type`` botocore turns into the exception it raises.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hmac
import json
import logging
import re
import string
import uuid
from typing import Any

from fastapi import FastAPI, Request, Response

from apiwrap.errors import MissingExtra
from apiwrap.service._config import ServiceConfig, TenantConfig
from apiwrap.service.doors._certify import Certificate, Doors, Refusal, certificate_headers, refusal_of

__all__ = ["include"]

_log = logging.getLogger("apiwrap.service.doors")

_TARGET = "RekognitionService.DetectLabels"
_MEDIA_TYPE = "application/x-amz-json-1.1"
_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/,\s]+)/(?P<date>\d{8})/(?P<region>[^/,\s]+)/"
    r"(?P<service>[^/,\s]+)/aws4_request,\s*SignedHeaders=(?P<signed>[a-z0-9;-]+),\s*"
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)
_TIMESTAMP = "%Y%m%dT%H%M%SZ"
#: How far a request's X-Amz-Date may be from the server's clock, as AWS allows.
_CLOCK_SKEW = datetime.timedelta(minutes=5)
_DEFAULT_MIN_CONFIDENCE = 55.0  # Rekognition's documented default
_REFUSALS = {
    "invalid_parameter": (400, "InvalidParameterException"),
    "invalid_image": (400, "InvalidImageFormatException"),
    "budget": (400, "LimitExceededException"),
    "busy": (400, "ThrottlingException"),
    "pending": (400, "ThrottlingException"),
    "vendor_failed": (500, "InternalServerError"),
    "internal": (500, "InternalServerError"),
}


class _AwsError(Exception):
    def __init__(self, status: int, error_type: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.error_type, self.message = status, error_type, message
        self.headers = headers or {}


def _error(exc: _AwsError) -> Response:
    headers = {"x-amzn-RequestId": str(uuid.uuid4()), "x-amzn-ErrorType": exc.error_type, **exc.headers}
    body = json.dumps({"__type": exc.error_type, "message": exc.message})
    return Response(body, status_code=exc.status, media_type=_MEDIA_TYPE, headers=headers)


def _from_refusal(refusal: Refusal) -> _AwsError:
    status, error_type = _REFUSALS[refusal.kind]
    headers = {}
    if refusal.kind in ("busy", "pending"):
        headers["x-amz-retry-after"] = str(refusal.retry_after_s * 1000)  # botocore reads milliseconds
    message = refusal.message
    if refusal.kind == "budget":
        message = f"An Amazon Rekognition service limit was exceeded: {message}"
    return _AwsError(status, error_type, message, headers)


def _signature(
    request: Request, body: bytes, signed: list[str], secret: str, scope: re.Match[str], when: str
) -> str:
    """The signature botocore's SigV4 signer computes for this request and secret."""
    try:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials
    except ImportError:
        raise MissingExtra(
            "the /aws door verifies SigV4 with botocore: pip install 'apiwrap-certify[aws]'"
        ) from None
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string", b"")
    url = f"{request.url.scheme}://{request.headers.get('host', '')}{raw_path.decode('latin-1')}"
    if query:
        url += "?" + query.decode("latin-1")
    headers = {name: ",".join(request.headers.getlist(name)) for name in signed}
    aws_request = AWSRequest(method=request.method, url=url, headers=headers, data=body)
    aws_request.context["timestamp"] = when
    signer = SigV4Auth(Credentials(scope["key"], secret), scope["service"], scope["region"])
    canonical = signer.canonical_request(aws_request)
    return str(signer.signature(signer.string_to_sign(aws_request, canonical), aws_request))


def _authenticate(request: Request, body: bytes, config: ServiceConfig) -> TenantConfig:
    authorization = request.headers.get("authorization")
    if not authorization:
        raise _AwsError(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
    scope = _AUTHORIZATION.match(authorization)
    when = request.headers.get("x-amz-date", "")
    if scope is None or not when:
        raise _AwsError(
            400,
            "IncompleteSignatureException",
            "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature', and X-Amz-Date.",
        )
    tenant = next(
        (
            t
            for t in config.tenants.values()
            if t.aws_access_key_id == scope["key"] and t.aws_secret_access_key
        ),
        None,
    )
    if tenant is None:
        raise _AwsError(
            400, "UnrecognizedClientException", "The security token included in the request is invalid."
        )
    try:
        signed_at = datetime.datetime.strptime(when, _TIMESTAMP).replace(tzinfo=datetime.UTC)
    except ValueError:
        raise _AwsError(400, "IncompleteSignatureException", f"X-Amz-Date {when!r} is not a date") from None
    now = datetime.datetime.now(datetime.UTC)
    if signed_at < now - _CLOCK_SKEW:
        earliest = (now - _CLOCK_SKEW).strftime(_TIMESTAMP)
        raise _AwsError(
            400,
            "InvalidSignatureException",
            f"Signature expired: {when} is now earlier than {earliest} ({now.strftime(_TIMESTAMP)} - 5 min.)",
        )
    if signed_at > now + _CLOCK_SKEW:
        latest = (now + _CLOCK_SKEW).strftime(_TIMESTAMP)
        raise _AwsError(
            400,
            "InvalidSignatureException",
            f"Signature not yet current: {when} is still later than {latest} "
            f"({now.strftime(_TIMESTAMP)} + 5 min.)",
        )
    signed = scope["signed"].split(";")
    if "host" not in signed or scope["date"] != when[:8]:
        raise _AwsError(
            400, "IncompleteSignatureException", "The signature must cover the host and its date."
        )
    assert tenant.aws_secret_access_key is not None
    expected = _signature(request, body, signed, tenant.aws_secret_access_key, scope, when)
    if not hmac.compare_digest(expected, scope["signature"]):
        raise _AwsError(
            400,
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. Check your AWS "
            "Secret Access Key and signing method. Consult the service documentation for details.",
        )
    return tenant


def _parse(body: bytes) -> tuple[bytes, int | None, float]:
    """(image bytes, MaxLabels, MinConfidence) of a DetectLabels request."""
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise _AwsError(400, "SerializationException", "Start of structure or map found where not expected.")
    image = document.get("Image")
    if not isinstance(image, dict) or "Bytes" not in image:
        detail = (
            "S3Object images are not supported here: send Image.Bytes" if isinstance(image, dict) else "Image"
        )
        raise _AwsError(400, "InvalidParameterException", f"Request has invalid parameters: {detail}")
    try:
        data = base64.b64decode(image["Bytes"], validate=True)
    except (TypeError, binascii.Error):
        raise _AwsError(
            400, "InvalidParameterException", "Request has invalid parameters: Image.Bytes"
        ) from None
    features = document.get("Features", ["GENERAL_LABELS"])
    if features != ["GENERAL_LABELS"]:
        raise _AwsError(
            400, "InvalidParameterException", "Only the GENERAL_LABELS feature is certified: Features"
        )
    max_labels, min_confidence = (
        document.get("MaxLabels"),
        document.get("MinConfidence", _DEFAULT_MIN_CONFIDENCE),
    )
    if max_labels is not None and (not isinstance(max_labels, int) or max_labels < 0):
        raise _AwsError(400, "InvalidParameterException", "Request has invalid parameters: MaxLabels")
    if not isinstance(min_confidence, int | float) or not 0 <= min_confidence <= 100:
        raise _AwsError(400, "InvalidParameterException", "Request has invalid parameters: MinConfidence")
    return data, max_labels, float(min_confidence)


def _answer(certificate: Certificate, max_labels: int | None, min_confidence: float) -> dict[str, Any]:
    labels = []
    if certificate.certified and max_labels != 0 and 100 * certificate.confidence >= min_confidence:
        labels.append(
            {
                "Name": string.capwords(certificate.label),
                "Confidence": 100 * certificate.confidence,
                "Instances": [],
                "Parents": [],
                "Aliases": [],
                "Categories": [],
            }
        )
    answer: dict[str, Any] = {"Labels": labels}
    versions = certificate.result.get("model_versions") or []
    if len(versions) == 1:
        answer["LabelModelVersion"] = versions[0]
    return answer


async def _detect_labels(request: Request) -> Response:
    config: ServiceConfig = request.app.state.config
    doors: Doors = request.app.state.doors
    body = await request.body()
    try:
        tenant = _authenticate(request, body, config)
        target = request.headers.get("x-amz-target", "")
        if target != _TARGET:
            raise _AwsError(
                400,
                "UnknownOperationException",
                f"Unknown operation {target or '(none)'}; this door serves {_TARGET}",
            )
        image, max_labels, min_confidence = _parse(body)
        settings = doors.settings("aws", tenant, request.headers, request.app.state.denoisers)
        certificate = await doors.certify(tenant, settings, image)
    except _AwsError as exc:
        return _error(exc)
    except Exception as exc:
        refusal = refusal_of(exc)
        if refusal is None:
            _log.error("the /aws door failed", exc_info=exc)
            refusal = Refusal("internal", "the proxy failed to handle this request")
        return _error(_from_refusal(refusal))
    headers = {"x-amzn-RequestId": str(uuid.uuid4()), **certificate_headers(certificate)}
    body_out = json.dumps(_answer(certificate, max_labels, min_confidence))
    return Response(body_out, media_type=_MEDIA_TYPE, headers=headers)


def include(app: FastAPI) -> None:
    for path in ("/aws", "/aws/"):
        app.add_api_route(path, _detect_labels, methods=["POST"], include_in_schema=False)
