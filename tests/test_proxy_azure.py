"""The /azure door: Azure's ComputerVisionClient, as an application uses it, against the proxy."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from azure.cognitiveservices.vision.computervision import ComputerVisionClient
from azure.cognitiveservices.vision.computervision.models import (
    ComputerVisionErrorResponseException,
    VisualFeatureTypes,
)
from msrest.authentication import CognitiveServicesCredentials

from apiwrap.adapters.emulators import Emulator
from tests.proxy_kit import API_KEYS, GREEN, RED, TIED, proxy_config, proxy_server, vendor_emulator


@pytest.fixture
def vendor() -> Iterator[Emulator]:
    with vendor_emulator("azure") as running:
        yield running


@pytest.fixture
def proxy(tmp_path: Path, vendor: Emulator) -> Iterator[str]:
    with proxy_server(proxy_config(tmp_path, "azure", vendor.endpoint)) as base:
        yield base


def computer_vision(base: str, key: str = API_KEYS["alice"]) -> ComputerVisionClient:
    client = ComputerVisionClient(f"{base}/azure", CognitiveServicesCredentials(key))
    client.config.retry_policy.retries = 0
    return client


def _code(exc: pytest.ExceptionInfo[ComputerVisionErrorResponseException]) -> tuple[int, str]:
    return exc.value.response.status_code, exc.value.error.error.code


def test_analyze_and_tag_answer_the_certified_tag_with_its_certificate(proxy: str, vendor: Emulator) -> None:
    client = computer_vision(proxy)
    analyzed = client.analyze_image_in_stream(
        io.BytesIO(RED), visual_features=[VisualFeatureTypes.tags], raw=True
    )
    calls = vendor.calls
    tagged = client.tag_image_in_stream(io.BytesIO(RED), raw=True)
    headers = analyzed.response.headers

    (tag,) = analyzed.output.tags
    assert tag.name == "goldfish"
    assert tag.confidence == pytest.approx(float(headers["X-Apiwrap-P-Lower"]))
    assert analyzed.output.model_version == "2021-04-01"  # the upstream's
    assert analyzed.output.metadata.width == 96 and analyzed.output.metadata.format == "Png"
    assert headers["X-Apiwrap-Status"] == "certified" and headers["X-Apiwrap-Cache"] == "miss"
    assert float(headers["X-Apiwrap-Radius"]) >= 0.25
    # tag and analyze certify alike: the second is the same certificate, from the cache.
    assert [t.name for t in tagged.output.tags] == ["goldfish"]
    assert tagged.response.headers["X-Apiwrap-Cache"] == "hit"
    assert vendor.calls == calls


def test_an_abstention_answers_no_tag_and_the_v21_route_answers_too(proxy: str) -> None:
    client = computer_vision(proxy)
    client.config.headers["X-Apiwrap-Max-Queries"] = "12"
    abstained = client.tag_image_in_stream(io.BytesIO(TIED), raw=True)
    v21 = httpx.post(
        f"{proxy}/azure/vision/v2.1/analyze",
        params={"visualFeatures": "Tags"},
        headers={"Ocp-Apim-Subscription-Key": API_KEYS["alice"], "Content-Type": "application/octet-stream"},
        content=GREEN,
        timeout=60,
    )

    assert abstained.output.tags == []
    assert abstained.response.headers["X-Apiwrap-Status"] == "abstained"
    assert v21.status_code == 200, v21.text
    assert [t["name"] for t in v21.json()["tags"]] == ["tree frog"] and "modelVersion" not in v21.json()


def test_a_bad_key_is_refused_as_azure_refuses_it(proxy: str, vendor: Emulator) -> None:
    with pytest.raises(ComputerVisionErrorResponseException) as refused:
        computer_vision(proxy, "not-a-key").tag_image_in_stream(io.BytesIO(RED))
    assert _code(refused) == (401, "401")
    assert vendor.calls == 0


def test_an_unsupported_feature_gets_azures_error(proxy: str, vendor: Emulator) -> None:
    client = computer_vision(proxy)
    with pytest.raises(ComputerVisionErrorResponseException) as faces:
        client.analyze_image_in_stream(io.BytesIO(RED), visual_features=[VisualFeatureTypes.faces])
    with pytest.raises(ComputerVisionErrorResponseException) as describe:
        client.describe_image_in_stream(io.BytesIO(RED))
    assert _code(faces) == (400, "InvalidRequest") and "Tags only" in faces.value.error.error.message
    assert _code(describe) == (404, "404")
    assert vendor.calls == 0


def test_an_exhausted_budget_is_azures_quota_error(tmp_path: Path, vendor: Emulator) -> None:
    config = proxy_config(tmp_path, "azure", vendor.endpoint, caps={"alice": {"max_queries": 3}})
    with proxy_server(config) as base, pytest.raises(ComputerVisionErrorResponseException) as quota:
        computer_vision(base).tag_image_in_stream(io.BytesIO(RED))
    assert _code(quota) == (403, "403") and "Out of call volume quota" in quota.value.error.error.message
    assert vendor.billable == 3
