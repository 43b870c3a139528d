"""The /google door: google-cloud-vision's REST client, as an application uses it, against the proxy."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from google.api_core import exceptions
from google.api_core.client_options import ClientOptions
from google.cloud import vision

from apiwrap.adapters.emulators import Emulator
from tests.proxy_kit import API_KEYS, GREEN, RED, TIED, proxy_config, proxy_server, vendor_emulator


@pytest.fixture
def vendor() -> Iterator[Emulator]:
    with vendor_emulator("google") as running:
        yield running


@pytest.fixture
def proxy(tmp_path: Path, vendor: Emulator) -> Iterator[str]:
    with proxy_server(proxy_config(tmp_path, "google", vendor.endpoint)) as base:
        yield base


def annotator(base: str, key: str = API_KEYS["alice"]) -> vision.ImageAnnotatorClient:
    return vision.ImageAnnotatorClient(
        transport="rest", client_options=ClientOptions(api_endpoint=f"{base}/google", api_key=key)
    )


def _request(image: bytes) -> dict[str, object]:
    return {"image": {"content": base64.b64encode(image).decode()}, "features": [{"type": "LABEL_DETECTION"}]}


def test_label_detection_answers_the_certified_label(proxy: str, vendor: Emulator) -> None:
    response = annotator(proxy).label_detection(image=vision.Image(content=RED), timeout=60)
    calls = vendor.calls
    # The same request by hand, to read the headers the SDK does not show: from the cache.
    raw = httpx.post(
        f"{proxy}/google/v1/images:annotate",
        params={"key": API_KEYS["alice"]},
        json={"requests": [_request(RED)]},
        timeout=60,
    )

    (label,) = response.label_annotations
    assert label.description == "Goldfish"
    assert raw.status_code == 200, raw.text
    assert raw.json()["responses"][0]["labelAnnotations"][0]["score"] == pytest.approx(label.score)
    assert raw.headers["x-apiwrap-status"] == "certified"
    assert raw.headers["x-apiwrap-cache"] == "hit"
    assert float(raw.headers["x-apiwrap-p-lower"]) == pytest.approx(label.score)
    assert float(raw.headers["x-apiwrap-radius"]) >= 0.25
    assert vendor.calls == calls  # the cache answered


def test_a_batch_certifies_each_image_and_abstains_where_it_must(proxy: str) -> None:
    requests = [
        vision.AnnotateImageRequest(
            image=vision.Image(content=image),
            features=[vision.Feature(type_=vision.Feature.Type.LABEL_DETECTION)],
        )
        for image in (GREEN, TIED)
    ]
    sdk = annotator(proxy, API_KEYS["bob"]).batch_annotate_images(requests=requests, timeout=60)
    raw = httpx.post(
        f"{proxy}/google/v1/images:annotate",
        headers={"x-goog-api-key": API_KEYS["bob"]},
        json={"requests": [_request(GREEN), _request(TIED)]},
        timeout=60,
    )

    green, tied = sdk.responses
    assert [label.description for label in green.label_annotations] == ["Tree frog"]
    assert list(tied.label_annotations) == [] and not tied.error.message  # abstained: no label
    assert raw.headers["x-apiwrap-status"] == "certified, abstained"
    assert raw.headers["x-apiwrap-radius"].endswith(", -")
    assert raw.headers["x-apiwrap-cache"] == "hit, hit"  # both certificates are served again


def test_bad_keys_are_refused_as_google_refuses_them(proxy: str, vendor: Emulator) -> None:
    with pytest.raises(exceptions.BadRequest) as wrong_key:
        annotator(proxy, "not-a-key").label_detection(image=vision.Image(content=RED), timeout=60)
    bearer = httpx.post(
        f"{proxy}/google/v1/images:annotate",
        headers={"Authorization": "Bearer not-a-token"},
        json={"requests": [_request(RED)]},
    )
    missing = httpx.post(f"{proxy}/google/v1/images:annotate", json={"requests": [_request(RED)]})
    assert "API key not valid" in str(wrong_key.value)
    assert bearer.status_code == 401 and bearer.json()["error"]["status"] == "UNAUTHENTICATED"
    assert missing.status_code == 403 and missing.json()["error"]["status"] == "PERMISSION_DENIED"
    assert vendor.calls == 0


def test_an_unsupported_feature_gets_googles_error(proxy: str, vendor: Emulator) -> None:
    with pytest.raises(exceptions.BadRequest) as faces:
        annotator(proxy).face_detection(image=vision.Image(content=RED), timeout=60)
    assert "LABEL_DETECTION only" in str(faces.value)
    assert vendor.calls == 0


def test_a_bad_image_fails_in_its_slot_and_the_rest_is_answered(proxy: str, vendor: Emulator) -> None:
    raw = httpx.post(
        f"{proxy}/google/v1/images:annotate",
        params={"key": API_KEYS["alice"]},
        json={"requests": [_request(b"not an image"), _request(RED)]},
        timeout=60,
    )
    bad, red = raw.json()["responses"]
    assert bad["error"]["code"] == 3 and "not a PNG" in bad["error"]["message"]
    assert red["labelAnnotations"][0]["description"] == "Goldfish"


def test_an_exhausted_budget_is_googles_quota_error(tmp_path: Path, vendor: Emulator) -> None:
    config = proxy_config(tmp_path, "google", vendor.endpoint, caps={"alice": {"max_queries": 3}})
    with proxy_server(config) as base, pytest.raises(exceptions.TooManyRequests) as quota:
        annotator(base).label_detection(image=vision.Image(content=RED), timeout=60)
    assert "ran out" in str(quota.value)
    assert vendor.billable == 3
