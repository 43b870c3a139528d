"""A generic JSON-over-HTTP adapter (httpx) for labelling services without an SDK here.

Configured by where things are, not by code: the URL, headers (values may name
environment variables, ``${MY_API_KEY}``, so secrets stay out of config files), a JSON body
template in which the string ``{image_base64}`` becomes the image, the dotted path to the
label list in the answer (``responses.0.labelAnnotations``; integers index lists), the
keys of a label's name and score, and the score scale (100 for percentages).

Google's error model is understood wherever it shows (``adapters._google_status``): an error
body whose ``error.status`` names a ``google.rpc.Code`` is mapped by that code and its
ErrorInfo reasons (a 400 ``API_KEY_INVALID`` is an auth error), and an ``error`` object with a
non-zero integer ``code`` beside the labels (Google's ``responses[i].error``) fails the query.
"""

from __future__ import annotations

import base64
import email.utils
import json
import os
import string
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from apiwrap.adapters._google_status import GoogleStatus
from apiwrap.adapters._preflight import label_one_at_a_time
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

__all__ = ["IMAGE_PLACEHOLDER", "LIMITS", "HttpAdapter", "HttpSpec", "create"]

IMAGE_PLACEHOLDER = "{image_base64}"
#: Conservative defaults for an unknown service; override with ``limits=``.
LIMITS = ImageLimits(max_bytes=10 * 1024 * 1024, formats=frozenset({"JPEG", "PNG", "GIF", "BMP", "WEBP"}))


@dataclass(frozen=True)
class HttpSpec:
    """Where a service's request and answer keep their parts."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # may hold secrets
    body_template: Any = field(default_factory=lambda: {"image": IMAGE_PLACEHOLDER})
    labels_path: str = "labels"
    name_key: str = "name"
    score_key: str = "score"
    #: Scores are divided by this (100 for a 0-100 confidence).
    score_scale: float = 1.0
    model_version_path: str | None = None


_AUTH_HINT = "check the credentials in the configured headers"


def _vendor_error(exc: Exception) -> VendorError:
    """Map any httpx failure (or an HTTP error status) onto the vendor error tree."""
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        source = f"HTTP {status} from {exc.request.url.host}"
        retry_after = _retry_after(exc.response.headers.get("Retry-After"))
        google = GoogleStatus.from_error_body(_json_or_none(exc.response))
        if google is not None:  # Google's error model: its code and details decide, not the status
            error = google.error(source, _AUTH_HINT)
            if isinstance(error, Throttled) and error.retry_after is None:
                error.retry_after = retry_after
            return error
        message = f"{source}: {exc.response.text[:200]}"
        if status == 429:
            return Throttled(message, retry_after=retry_after)
        if status in (401, 403):
            return AuthError(f"{message} ({_AUTH_HINT})")
        if status == 408 or status >= 500:
            return Transient(message)
        if 400 <= status < 500:
            return Rejected(message)
        return Fatal(message)
    if isinstance(exc, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError):
        return Transient(f"HTTP connection failed: {type(exc).__name__}")
    return Fatal(f"HTTP call failed: {type(exc).__name__}")


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delay-seconds or an HTTP date."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _fill(template: Any, image_base64: str) -> Any:
    """The body template with every ``{image_base64}`` replaced by the image."""
    if isinstance(template, str):
        return template.replace(IMAGE_PLACEHOLDER, image_base64)
    if isinstance(template, Mapping):
        return {key: _fill(value, image_base64) for key, value in template.items()}
    if isinstance(template, list):
        return [_fill(value, image_base64) for value in template]
    return template


_MISSING = object()


def _lookup(document: Any, path: str) -> Any:
    """Follow a dotted path; :data:`_MISSING` if only its last key is absent."""
    parts = path.split(".") if path else []
    for depth, part in enumerate(parts):
        if isinstance(document, list) and part.isdigit() and int(part) < len(document):
            document = document[int(part)]
        elif isinstance(document, Mapping) and part in document:
            document = document[part]
        elif isinstance(document, Mapping) and depth == len(parts) - 1:
            return _MISSING  # JSON encoders of protobuf leave out empty lists
        else:
            raise MalformedAnswer(f"the answer has nothing at {'.'.join(parts[: depth + 1])!r}")
    return document


class HttpAdapter(Adapter):
    """One image per request to a configured JSON endpoint."""

    name = "http"
    max_batch = 1

    def __init__(self, spec: HttpSpec, *, limits: ImageLimits = LIMITS, timeout: float = 30.0) -> None:
        self.spec = spec
        # Where labels are read from decides the votes; the URL, headers and body may hold secrets.
        self.model_options = {
            "labels_path": spec.labels_path,
            "name_key": spec.name_key,
            "score_key": spec.score_key,
            "score_scale": spec.score_scale,
            "model_version_path": spec.model_version_path,
        }
        self.limits = limits
        headers = {
            name: string.Template(value).safe_substitute(os.environ) for name, value in spec.headers.items()
        }
        # httpx retries nothing by default (transport retries=0): the engine retries.
        self._client = httpx.AsyncClient(headers=headers, timeout=timeout)

    async def label_batch(self, images: Sequence[bytes]) -> list[VendorAnswer | VendorError]:
        async def label(data: bytes) -> VendorAnswer:
            return self._parse(await self._post(data))

        return await label_one_at_a_time("the http adapter", images, self.limits, label)

    async def _post(self, image: bytes) -> httpx.Response:
        body = _fill(self.spec.body_template, base64.b64encode(image).decode("ascii"))
        try:
            response = await self._client.post(self.spec.url, json=body)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            error = _vendor_error(exc)
            # The message quotes the answer; a service could echo a header back.
            error.args = (self._scrub(str(error)),)
            raise error from exc
        return response

    def _scrub(self, text: str) -> str:
        for value in self._client.headers.values():
            if len(value) >= 4:
                text = text.replace(value, "***")
        return text

    def _parse(self, response: httpx.Response) -> VendorAnswer:
        try:
            document = response.json()
        except ValueError as exc:
            raise MalformedAnswer(f"the answer is not JSON ({len(response.content)} bytes)") from exc
        holder_path, _, _ = self.spec.labels_path.rpartition(".")
        holder = _lookup(document, holder_path)
        failed = GoogleStatus.from_image_error(holder.get("error") if isinstance(holder, Mapping) else None)
        if failed is not None:  # Google's responses[i].error: this image's query failed
            where = f"{holder_path}.error" if holder_path else "error"
            error = failed.error(
                f"HTTP {response.status_code} from {response.request.url.host}, {where}", _AUTH_HINT
            )
            error.args = (self._scrub(str(error)),)
            raise error
        items = _lookup(document, self.spec.labels_path)
        if items is _MISSING:
            items = []
        if not isinstance(items, list):
            raise MalformedAnswer(f"{self.spec.labels_path!r} is not a list")
        try:
            labels = tuple(
                Label(
                    canonical_label(str(item[self.spec.name_key])),
                    min(1.0, max(0.0, float(item[self.spec.score_key]) / self.spec.score_scale)),
                )
                for item in items
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedAnswer(f"a label lacks {self.spec.name_key!r} or {self.spec.score_key!r}") from exc
        version = None
        if self.spec.model_version_path:
            found = _lookup(document, self.spec.model_version_path)
            version = None if found is _MISSING or found is None else str(found)
        return VendorAnswer(labels, version, response.text)

    async def aclose(self) -> None:
        await self._client.aclose()

    def __repr__(self) -> str:
        return f"<HttpAdapter url={self.spec.url}>"


def create(
    *,
    endpoint: str | None = None,
    headers: Mapping[str, str] | None = None,
    body_template: Any = None,
    labels_path: str = "labels",
    name_key: str = "name",
    score_key: str = "score",
    score_scale: float = 1.0,
    model_version_path: str | None = None,
    limits: ImageLimits = LIMITS,
    timeout: float = 30.0,
) -> HttpAdapter:
    """A generic JSON adapter; ``endpoint`` is the full URL the image is POSTed to."""
    if not endpoint:
        raise ValueError("the http adapter needs endpoint= (the URL to POST images to)")
    if isinstance(body_template, str):
        body_template = json.loads(body_template)  # given on a command line
    spec = HttpSpec(
        url=endpoint,
        headers=dict(headers or {}),
        body_template=body_template if body_template is not None else {"image": IMAGE_PLACEHOLDER},
        labels_path=labels_path,
        name_key=name_key,
        score_key=score_key,
        score_scale=score_scale,
        model_version_path=model_version_path,
    )
    return HttpAdapter(spec, limits=limits, timeout=timeout)
