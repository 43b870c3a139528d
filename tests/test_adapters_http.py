"""The generic JSON-over-HTTP adapter, here pointed at the Google REST emulator."""

from __future__ import annotations

import pytest

from apiwrap.adapters import AuthError, MalformedAnswer, Rejected, Throttled, Transient, create_adapter
from apiwrap.adapters.emulators.fakes import solid_png
from apiwrap.adapters.http import _vendor_error

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
    import httpx

    request = httpx.Request("POST", "http://vendor.example/label")
    response = httpx.Response(status, headers=headers, request=request, text="no")
    error = _vendor_error(httpx.HTTPStatusError("x", request=request, response=response))
    assert type(error) is expected
    assert getattr(error, "retry_after", None) == retry_after


async def test_score_scale_and_model_version_path() -> None:
    import httpx

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
