"""The /clarifai door: clarifai-grpc's JSON channel, as an application uses it, against the proxy."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from clarifai_grpc.channel.clarifai_channel import ClarifaiChannel
from clarifai_grpc.grpc.api import resources_pb2, service_pb2, service_pb2_grpc
from clarifai_grpc.grpc.api.status import status_code_pb2

from apiwrap.adapters.emulators import Emulator
from tests.proxy_kit import API_KEYS, GREEN, RED, TIED, proxy_config, proxy_server, vendor_emulator

StatusCode = status_code_pb2.StatusCode


@pytest.fixture
def vendor() -> Iterator[Emulator]:
    with vendor_emulator("clarifai") as running:
        yield running


@pytest.fixture
def proxy(tmp_path: Path, vendor: Emulator) -> Iterator[str]:
    with proxy_server(proxy_config(tmp_path, "clarifai", vendor.endpoint)) as base:
        yield base


def stub(base: str) -> service_pb2_grpc.V2Stub:
    return service_pb2_grpc.V2Stub(ClarifaiChannel.get_json_channel(base_url=f"{base}/clarifai"))


def _metadata(key: str = API_KEYS["alice"]) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Key {key}"),)


def _request(
    *images: bytes, model_id: str = "general-image-recognition"
) -> service_pb2.PostModelOutputsRequest:
    return service_pb2.PostModelOutputsRequest(
        user_app_id=resources_pb2.UserAppIDSet(user_id="clarifai", app_id="main"),
        model_id=model_id,
        inputs=[
            resources_pb2.Input(data=resources_pb2.Data(image=resources_pb2.Image(base64=image)))
            for image in images
        ],
    )


def test_post_model_outputs_answers_the_certified_concept(proxy: str, vendor: Emulator) -> None:
    response = stub(proxy).PostModelOutputs(_request(RED, GREEN), metadata=_metadata())
    calls = vendor.calls
    again = stub(proxy).PostModelOutputs(_request(RED), metadata=_metadata())

    assert response.status.code == StatusCode.SUCCESS
    assert [[c.name for c in o.data.concepts] for o in response.outputs] == [["goldfish"], ["tree frog"]]
    assert 0 < response.outputs[0].data.concepts[0].value <= 1
    assert response.outputs[0].model.model_version.id == "aa7f35c01e0642fda5cf400f543e7c40"  # the upstream's
    assert [c.name for c in again.outputs[0].data.concepts] == ["goldfish"]
    assert vendor.calls == calls  # the second came from the cache


def test_the_certificate_headers_and_an_abstention(proxy: str) -> None:
    # The JSON channel hides HTTP headers: the same call by hand shows them.
    answer = httpx.post(
        f"{proxy}/clarifai/v2/users/clarifai/apps/main/models/general-image-recognition/outputs",
        headers={"Authorization": f"Key {API_KEYS['alice']}", "X-Apiwrap-Max-Queries": "12"},
        json={"inputs": [{"data": {"image": {"base64": base64.b64encode(TIED).decode()}}}]},
        timeout=60,
    )
    (output,) = answer.json()["outputs"]
    assert answer.json()["status"]["code"] == StatusCode.SUCCESS
    assert output["data"]["concepts"] == []
    assert answer.headers["x-apiwrap-status"] == "abstained"
    assert answer.headers["x-apiwrap-cache"] == "miss"


def test_a_bad_key_an_unknown_model_and_another_call_get_clarifais_statuses(
    proxy: str, vendor: Emulator
) -> None:
    bad_key = stub(proxy).PostModelOutputs(_request(RED), metadata=_metadata("not-a-key"))
    other_model = stub(proxy).PostModelOutputs(_request(RED, model_id="face-detection"), metadata=_metadata())
    other_call = stub(proxy).ListModels(service_pb2.ListModelsRequest(), metadata=_metadata())
    assert bad_key.status.code == StatusCode.CONN_KEY_INVALID
    assert other_model.status.code == StatusCode.MODEL_DOES_NOT_EXIST
    assert other_call.status.code == StatusCode.NOT_IMPLEMENTED
    assert vendor.calls == 0


def test_a_bad_input_fails_alone(proxy: str) -> None:
    response = stub(proxy).PostModelOutputs(_request(b"not an image", RED), metadata=_metadata())
    bad, red = response.outputs
    assert response.status.code == StatusCode.MIXED_STATUS
    assert bad.status.code == StatusCode.INPUT_INVALID_ARGUMENT
    assert [c.name for c in red.data.concepts] == ["goldfish"]


def test_an_exhausted_budget_is_clarifais_usage_limit(tmp_path: Path, vendor: Emulator) -> None:
    config = proxy_config(tmp_path, "clarifai", vendor.endpoint, caps={"alice": {"max_queries": 3}})
    with proxy_server(config) as base:
        response = stub(base).PostModelOutputs(_request(RED), metadata=_metadata())
    assert response.status.code == StatusCode.CONN_EXCEED_MONTHLY_LIMIT
    assert "ran out" in response.status.details
    assert vendor.billable == 3
