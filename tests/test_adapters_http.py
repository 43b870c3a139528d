"""The generic JSON-over-HTTP adapter, here pointed at the Google REST emulator."""

from __future__ import annotations

import json

import httpx
import pytest

from apiwrap.adapters import AuthError, MalformedAnswer, Rejected, Throttled, Transient, create_adapter
from apiwrap.adapters.base import ImageLimits
from apiwrap.adapters.emulators.fakes import solid_png
from apiwrap.adapters.google import _answer as google_answer
from apiwrap.adapters.google import _vendor_error as google_vendor_error
from apiwrap.adapters.http import _vendor_error
from tests.fixtures import vendors as published

KEY = "AIzaHttpAdapterKey0001"
GOOGLE_REST = {
    "body_template": {
        "requests": [
            {
                "image": {"content": "{image_base64}"},
                "features": [{"type": "LABEL_DETECTION", "maxResults": 5}],
            }
        ]
    },
    "labels_path": "responses.0.labelAnnotations",
    "name_key": "description",
    "score_key": "score",
}


def _google_rest(emulator, **options):
    return create_adapter(
        "http", endpoint=f"{emulator.rest_endpoint}/v1/images:annotate", **GOOGLE_REST, **options
    )


async def test_labels_through_a_template_with_a_key_from_the_environment(
    vendor_emulator, monkeypatch
) -> None:
    monkeypatch.setenv("MY_VISION_KEY", KEY)
    emulator = vendor_emulator("google", api_key=KEY)
    adapter = _google_rest(emulator, headers={"x-goog-api-key": "${MY_VISION_KEY}"})
    [answer] = await adapter.label_batch([solid_png((20, 20, 200))])
    assert answer.top1 == "jellyfish" and len(answer.labels) == 3
    assert KEY not in repr(adapter)
    await adapter.aclose()


@pytest.mark.parametrize(
    ("fault", "error"),
    [("throttle", Throttled), ("error", Transient), ("reset", Transient), ("malformed", MalformedAnswer)],
)
async def test_faults_map_to_the_error_tree(vendor_emulator, fault, error) -> None:
    emulator = vendor_emulator("google")
    adapter = _google_rest(emulator)
    emulator.inject(fault)
    with pytest.raises(error):
        await adapter.label_batch([solid_png()])
    assert emulator.calls == 1
    await adapter.aclose()


async def test_an_omitted_empty_label_list_is_no_label(vendor_emulator) -> None:
    emulator = vendor_emulator("google")
    adapter = _google_rest(emulator)
    emulator.inject("empty")  # proto3 JSON leaves the empty list out: {"responses": [{}]}
    [answer] = await adapter.label_batch([solid_png()])
    assert answer.top1 == "<no label>"
    await adapter.aclose()


async def test_a_wrong_path_is_a_malformed_answer(vendor_emulator) -> None:
    emulator = vendor_emulator("google")
    adapter = create_adapter(
        "http",
        endpoint=f"{emulator.rest_endpoint}/v1/images:annotate",
        **{**GOOGLE_REST, "labels_path": "x.0.y"},
    )
    with pytest.raises(MalformedAnswer, match="'x'"):
        await adapter.label_batch([solid_png()])
    await adapter.aclose()


async def test_oversize_input_is_refused_before_sending(vendor_emulator) -> None:
    emulator = vendor_emulator("google")
    adapter = _google_rest(emulator)
    [result] = await adapter.label_batch([b"\x89PNG" + bytes(11 * 1024 * 1024)])
    assert isinstance(result, Rejected) and emulator.calls == 0
    await adapter.aclose()


@pytest.mark.parametrize(
    ("status", "headers", "expected", "retry_after"),
    [
        (429, {"Retry-After": "2"}, Throttled, 2.0),
        (401, {}, AuthError, None),
        (413, {}, Rejected, None),
        (502, {}, Transient, None),
    ],
)
def test_statuses_map_onto_the_tree(status, headers, expected, retry_after) -> None:
    request = httpx.Request("POST", "http://vendor.example/label")
    response = httpx.Response(status, headers=headers, request=request, text="no")
    error = _vendor_error(httpx.HTTPStatusError("x", request=request, response=response))
    assert type(error) is expected
    assert getattr(error, "retry_after", None) == retry_after


async def test_score_scale_and_model_version_path() -> None:
    def vendor(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"result": {"tags": [{"t": "Cat", "c": 87.5}], "model": "m-7"}})

    adapter = create_adapter(
        "http",
        endpoint="http://vendor.example/label",
        labels_path="result.tags",
        name_key="t",
        score_key="c",
        score_scale=100.0,
        model_version_path="result.model",
    )
    adapter._client._transport = httpx.MockTransport(vendor)  # no network in tests
    [answer] = await adapter.label_batch([solid_png()])
    assert answer.top1 == "cat" and answer.labels[0].score == 0.875 and answer.model_version == "m-7"
    await adapter.aclose()


def _canned(status: int, body: bytes, **options) -> object:
    """The http adapter against a vendor that answers every request with ``body``."""

    def vendor(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body, headers={"Content-Type": "application/json"})

    adapter = create_adapter(
        "http", endpoint="https://vision.example/v1/images:annotate", **GOOGLE_REST, **options
    )
    adapter._client._transport = httpx.MockTransport(vendor)  # no network in tests
    return adapter


@pytest.mark.parametrize(
    "fixture", ["google/image_error_bad_image_data.json", "google/image_error_opening_file.json"]
)
async def test_googles_per_image_error_fails_the_query_as_the_google_adapter_does(fixture) -> None:
    from google.cloud import vision_v1

    adapter = _canned(200, published.raw(fixture))
    item = vision_v1.AnnotateImageResponse.from_json(json.dumps(published.load(fixture)["responses"][0]))
    expected = google_answer(item)  # the same body through the Google SDK and its adapter
    with pytest.raises(type(expected)) as caught:
        await adapter.label_batch([solid_png()])
    assert published.load(fixture)["responses"][0]["error"]["message"] in str(caught.value)
    await adapter.aclose()


async def test_googles_rest_image_error_through_the_emulator(vendor_emulator) -> None:
    big = solid_png(size=(400, 400))
    emulator = vendor_emulator("google", limits=ImageLimits(max_bytes=len(big) - 1))
    adapter = _google_rest(emulator)
    with pytest.raises(Rejected):  # an image the vendor refuses is no "<no label>" vote
        await adapter.label_batch([big])
    await adapter.aclose()


async def test_googles_api_key_invalid_is_an_auth_error_as_in_the_google_adapter() -> None:
    from google.api_core import exceptions as api_exceptions

    adapter = _canned(400, published.raw("google/api_key_invalid.json"))
    with pytest.raises(AuthError, match="API key not valid"):
        await adapter.label_batch([solid_png()])
    await adapter.aclose()
    request = httpx.Request("POST", "https://vision.example/v1/images:annotate")
    response = httpx.Response(400, content=published.raw("google/api_key_invalid.json"), request=request)
    sdk_error = api_exceptions.from_http_response(response)  # google-api-core reads the same body
    assert type(google_vendor_error(sdk_error)) is AuthError


async def test_a_wrong_key_through_the_emulator_is_an_auth_error(vendor_emulator) -> None:
    emulator = vendor_emulator("google", api_key=KEY)
    adapter = _google_rest(emulator, headers={"x-goog-api-key": "AIzaWrongKey0000000000"})
    with pytest.raises(AuthError, match="API key"):
        await adapter.label_batch([solid_png()])
    await adapter.aclose()


def test_googles_retry_info_is_the_throttle_hint() -> None:
    body = {
        "error": {
            "code": 429,
            "message": "Quota exceeded",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "41s"}],
        }
    }
    request = httpx.Request("POST", "https://vision.example/v1/images:annotate")
    response = httpx.Response(429, json=body, request=request)
    error = _vendor_error(httpx.HTTPStatusError("x", request=request, response=response))
    assert isinstance(error, Throttled) and error.retry_after == 41.0
