"""The emulators as servers: protocol details, rate limits, latency, faults and counting."""

from __future__ import annotations

import base64
import time

import httpx
import pytest

from apiwrap.adapters.base import ImageLimits
from apiwrap.adapters.emulators import EmulatorConfig, emulator
from apiwrap.adapters.emulators.fakes import fake_classify, solid_png
from apiwrap.adapters.emulators.model import ImageModel


def _rest_body(feature_type: int | str) -> dict:
    content = base64.b64encode(solid_png((20, 200, 20))).decode()
    return {
        "requests": [{"image": {"content": content}, "features": [{"type": feature_type, "maxResults": 2}]}]
    }


@pytest.mark.parametrize("feature_type", [4, "LABEL_DETECTION"])
def test_google_rest_accepts_the_feature_as_number_or_name(vendor_emulator, feature_type) -> None:
    running = vendor_emulator("google", api_key="k-1")
    response = httpx.post(
        f"{running.rest_endpoint}/v1/images:annotate?key=k-1", json=_rest_body(feature_type)
    )
    assert response.status_code == 200
    labels = response.json()["responses"][0]["labelAnnotations"]
    assert [label["description"] for label in labels] == ["Tree frog", "Goldfish"]
    assert running.calls == running.billable == 1


def test_azure_decodes_a_chunked_body(vendor_emulator) -> None:
    running = vendor_emulator("azure")
    image = solid_png()

    def chunks():  # a generator body makes httpx send Transfer-Encoding: chunked
        yield image[:50]
        yield image[50:]

    response = httpx.post(
        f"{running.endpoint}/vision/v3.2/tag",
        content=chunks(),
        headers={"Ocp-Apim-Subscription-Key": "any", "Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 200
    assert response.json()["tags"][0]["name"] == "goldfish"
    assert response.json()["metadata"] == {"width": 96, "height": 96, "format": "Png"}


def test_tps_limit_throttles_with_the_vendor_answer_and_counts_every_call(vendor_emulator) -> None:
    running = vendor_emulator("azure", tps=2.0)
    url = f"{running.endpoint}/vision/v3.2/tag"
    with httpx.Client(headers={"Ocp-Apim-Subscription-Key": "k"}) as client:
        statuses = [client.post(url, content=solid_png()).status_code for _ in range(5)]
    assert statuses.count(200) == 2 and statuses.count(429) == 3
    assert running.calls == 5 and running.billable == 2
    assert running.outcomes["throttle"] == 3


def test_latency_is_added_to_every_answer(vendor_emulator) -> None:
    running = vendor_emulator("azure", latency_ms=150, jitter_ms=50)
    started = time.monotonic()
    httpx.post(
        f"{running.endpoint}/vision/v3.2/tag", content=solid_png(), headers={"Ocp-Apim-Subscription-Key": "k"}
    )
    assert 0.15 <= time.monotonic() - started < 2.0


def test_fault_rates_are_seeded_and_reproducible() -> None:
    def outcomes(seed: int) -> list[int]:
        config = EmulatorConfig(classify=fake_classify, fault_rates={"error": 0.5}, seed=seed)
        with emulator("azure", config) as endpoint, httpx.Client() as client:
            return [
                client.post(
                    f"{endpoint}/vision/v3.2/tag",
                    content=solid_png(),
                    headers={"Ocp-Apim-Subscription-Key": "k"},
                ).status_code
                for _ in range(8)
            ]

    first = outcomes(3)
    assert first == outcomes(3)
    assert set(first) == {200, 500}


def test_vendor_limits_answer_with_the_vendor_error_body(vendor_emulator) -> None:
    running = vendor_emulator("azure", limits=ImageLimits(max_bytes=10))
    response = httpx.post(
        f"{running.endpoint}/vision/v3.2/tag", content=solid_png(), headers={"Ocp-Apim-Subscription-Key": "k"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["innererror"]["code"] == "InvalidImageSize"
    assert running.calls == 1 and running.billable == 0


@pytest.mark.parametrize(
    "config",
    [{"fault_rates": {"explode": 0.1}}, {"fault_rates": {"error": 0.7, "reset": 0.7}}, {"tps": 0}],
)
def test_bad_configurations_are_refused(config) -> None:
    with pytest.raises(ValueError):
        EmulatorConfig(**config)


def test_unknown_vendor_is_refused() -> None:
    with pytest.raises(ValueError, match="aws, google, azure, clarifai"):
        emulator("bing")


def test_image_model_is_deterministic_and_rounded() -> None:
    model = ImageModel("efficientnet-lite2", top_k=5)
    image = solid_png((120, 80, 40), size=(64, 64))
    first, second = model.classify([image, image])
    assert first == second and len(first) == 5
    assert all(round(score, 6) == score for _, score in first)
    assert [score for _, score in first] == sorted((score for _, score in first), reverse=True)


def test_cli_fault_rates_are_parsed_and_checked() -> None:
    import typer

    from apiwrap.cli.emulate import parse_fault_rates

    assert parse_fault_rates(["error=0.05", "reset=0.01"]) == {"error": 0.05, "reset": 0.01}
    for bad in (["error"], ["boom=0.1"], ["error=lots"]):
        with pytest.raises(typer.BadParameter):
            parse_fault_rates(bad)


def test_an_emulator_restarts_and_keeps_counting(vendor_emulator) -> None:
    running = vendor_emulator("aws", latency_ms=100)
    headers = {"X-Amz-Target": "RekognitionService.DetectLabels", "Authorization": "Credential=AKID/x"}
    body = {"Image": {"Bytes": base64.b64encode(solid_png()).decode()}}
    assert httpx.post(running.endpoint, json=body, headers=headers).status_code == 200
    running.stop()
    running.start()
    started = time.monotonic()
    assert httpx.post(running.endpoint, json=body, headers=headers).status_code == 200
    assert time.monotonic() - started >= 0.1  # latency applies again after a restart
    assert running.calls == running.billable == 2
