"""The Clarifai adapter driving clarifai-grpc's V2Stub against the PostModelOutputs emulator."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal

import grpc
import pytest
from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2, status_pb2
from google.protobuf import json_format

import apiwrap
from apiwrap.adapters import AuthError, MalformedAnswer, Rejected, Throttled, Transient, create_adapter
from apiwrap.adapters.base import ImageLimits
from apiwrap.adapters.clarifai import ClarifaiAdapter, _vendor_error
from apiwrap.adapters.emulators._grpc import GrpcServer
from apiwrap.adapters.emulators.fakes import solid_png
from apiwrap.adapters.emulators.model import ImageModel
from apiwrap.budgets import Price, PriceTable
from tests.fixtures import vendors as published

RIGHT_PAT = "pat-right-0123456789"
WRONG_PAT = "pat-wrong-9876543210"


async def test_labels_top1_and_model_version(vendor_emulator, monkeypatch) -> None:
    monkeypatch.delenv("CLARIFAI_PAT", raising=False)
    emulator = vendor_emulator("clarifai", model_version="v-test-1")
    adapter = create_adapter("clarifai", endpoint=emulator.endpoint)
    [answer] = await adapter.label_batch([solid_png((20, 200, 20))])
    assert answer.top1 == "tree frog"
    assert answer.model_version == "v-test-1"
    await adapter.aclose()


async def test_a_batch_is_one_request_and_failed_inputs_are_not_billed(vendor_emulator) -> None:
    big = solid_png(size=(300, 300))
    emulator = vendor_emulator("clarifai", limits=ImageLimits(max_bytes=len(big) - 1))
    adapter = create_adapter("clarifai", endpoint=emulator.endpoint)
    images = [solid_png()] * 127 + [big]
    answers = await adapter.label_batch(images)
    assert all(a.top1 == "goldfish" for a in answers[:127])
    assert isinstance(answers[127], Rejected)  # MIXED_STATUS, the input's own 30xxx status
    assert emulator.calls == 1 and emulator.billable == 127
    await adapter.aclose()


async def test_throttle_and_the_channel_does_not_retry(vendor_emulator) -> None:
    emulator = vendor_emulator("clarifai")
    adapter = create_adapter("clarifai", endpoint=emulator.endpoint)
    emulator.inject("throttle")
    with pytest.raises(Throttled, match="CONN_THROTTLED"):
        await adapter.label_batch([solid_png()])
    assert emulator.calls == 1
    await adapter.aclose()


@pytest.mark.parametrize(
    ("fault", "error"),
    [("error", Transient), ("reset", Transient), ("hang", Transient), ("malformed", MalformedAnswer)],
)
async def test_faults_map_to_the_error_tree_with_one_call(vendor_emulator, fault, error) -> None:
    emulator = vendor_emulator("clarifai", hang_s=5.0)
    adapter = create_adapter("clarifai", endpoint=emulator.endpoint, timeout=0.5)
    emulator.inject(fault)
    with pytest.raises(error):
        await adapter.label_batch([solid_png()])
    assert emulator.calls == 1  # Clarifai's own channels retry UNAVAILABLE five times
    await adapter.aclose()


async def test_empty_concepts_are_no_label(vendor_emulator) -> None:
    emulator = vendor_emulator("clarifai")
    adapter = create_adapter("clarifai", endpoint=emulator.endpoint)
    emulator.inject("empty")
    [answer] = await adapter.label_batch([solid_png()])
    assert answer.top1 == "<no label>"
    await adapter.aclose()


async def test_input_over_the_limits_is_refused_before_sending(vendor_emulator) -> None:
    emulator = vendor_emulator("clarifai")
    adapter = create_adapter("clarifai", endpoint=emulator.endpoint)
    [result, answer] = await adapter.label_batch([b"\x89PNG" + bytes(20 * 1024 * 1024), solid_png()])
    assert isinstance(result, Rejected) and answer.top1 == "goldfish"
    assert emulator.calls == 1 and emulator.billable == 1  # only the valid image was sent
    await adapter.aclose()


async def test_wrong_pat_is_a_clear_auth_error_without_the_pat(vendor_emulator) -> None:
    emulator = vendor_emulator("clarifai", api_key=RIGHT_PAT)
    adapter = create_adapter("clarifai", endpoint=emulator.endpoint, pat=WRONG_PAT)
    with pytest.raises(AuthError, match="CLARIFAI_PAT") as caught:
        await adapter.label_batch([solid_png()])
    text = str(caught.value) + repr(caught.value) + repr(adapter)
    assert WRONG_PAT not in text and RIGHT_PAT not in text
    await adapter.aclose()


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (status_code_pb2.INTERNAL_SERVER_ISSUE, Transient),
        (status_code_pb2.MODEL_BUSY_PLEASE_RETRY, Transient),
        (status_code_pb2.RPC_REQUEST_QUEUE_FULL, Transient),
        (status_code_pb2.INPUT_UNSUPPORTED_FORMAT, Rejected),
        (status_code_pb2.CONN_EXCEED_HOURLY_LIMIT, Throttled),
        (status_code_pb2.CONN_TOKEN_INVALID, AuthError),
    ],
)
def test_status_codes_map_onto_the_tree(code, expected) -> None:
    assert type(_vendor_error(status_pb2.Status(code=code, description="d"))) is expected


async def test_real_model_answers_like_the_shared_image_model(vendor_emulator) -> None:
    emulator = vendor_emulator("clarifai", real_model=True)
    adapter = create_adapter("clarifai", endpoint=emulator.endpoint)
    image = solid_png((240, 240, 240))
    [answer] = await adapter.label_batch([image])
    expected = ImageModel().classify([image])[0]
    assert answer.top1 == expected[0][0].casefold()
    assert answer.labels[0].score == expected[0][1]
    await adapter.aclose()


@pytest.fixture
def canned_clarifai() -> Iterator[Callable[[service_pb2.MultiOutputResponse], tuple[str, list[bytes]]]]:
    """A PostModelOutputs server that answers every call with one given response."""
    servers: list[GrpcServer] = []

    def serve(response: service_pb2.MultiOutputResponse) -> tuple[str, list[bytes]]:
        received: list[bytes] = []

        def answer(body: bytes, context: grpc.ServicerContext) -> bytes:
            received.append(body)
            return response.SerializeToString()

        servers.append(GrpcServer("clarifai.api.V2", {"PostModelOutputs": answer}))
        return servers[-1].url, received

    yield serve
    for server in servers:
        server.close()


def _published_status(fixture: str) -> status_pb2.Status:
    return json_format.ParseDict(
        published.load(fixture)["status"], status_pb2.Status(), ignore_unknown_fields=True
    )


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("clarifai/rpc_server_unavailable.json", Transient),
        ("clarifai/rpc_request_timeout.json", Transient),
        ("clarifai/conn_invalid_request.json", AuthError),
    ],
)
async def test_published_statuses_map_onto_the_tree(canned_clarifai, fixture, expected) -> None:
    endpoint, received = canned_clarifai(service_pb2.MultiOutputResponse(status=_published_status(fixture)))
    adapter = create_adapter("clarifai", endpoint=endpoint, pat=RIGHT_PAT)
    with pytest.raises(expected):
        await adapter.label_batch([solid_png()])
    assert len(received) == 1
    await adapter.aclose()


@pytest.mark.parametrize("where", ["option", "environment"])
def test_an_empty_pat_is_refused_before_any_query(vendor_emulator, monkeypatch, where) -> None:
    emulator = vendor_emulator("clarifai")
    options = {"pat": ""} if where == "option" else {}
    monkeypatch.setenv("CLARIFAI_PAT", "" if where == "environment" else RIGHT_PAT)
    with pytest.raises(AuthError, match="empty"):
        create_adapter("clarifai", endpoint=emulator.endpoint, **options)
    assert emulator.calls == 0


async def test_an_empty_key_on_the_wire_is_an_auth_error(vendor_emulator) -> None:
    emulator = vendor_emulator("clarifai")
    target = emulator.endpoint.removeprefix("http://")
    adapter = ClarifaiAdapter(target, False, "")  # what an unchecked empty CLARIFAI_PAT would send
    with pytest.raises(AuthError, match="CONN_INVALID_REQUEST"):
        await adapter.label_batch([solid_png()])
    await adapter.aclose()


async def test_outputs_that_do_not_pair_name_the_ids_sent_and_answered(canned_clarifai) -> None:
    success = status_pb2.Status(code=status_code_pb2.SUCCESS, description="Ok")
    output = resources_pb2.Output(status=success, input=resources_pb2.Input(id="7"))
    endpoint, _ = canned_clarifai(service_pb2.MultiOutputResponse(status=success, outputs=[output]))
    adapter = create_adapter("clarifai", endpoint=endpoint, pat=RIGHT_PAT)
    with pytest.raises(MalformedAnswer) as caught:
        await adapter.label_batch([solid_png()])
    assert "['0'] were sent" in str(caught.value) and "name ['7']" in str(caught.value)
    await adapter.aclose()


def test_a_key_clarifai_cannot_read_stops_the_job_instead_of_failing_each_query(
    canned_clarifai, tmp_path
) -> None:
    status = _published_status("clarifai/conn_invalid_request.json")
    endpoint, received = canned_clarifai(service_pb2.MultiOutputResponse(status=status))
    job = apiwrap.certify(
        [solid_png(), solid_png((20, 200, 20))],
        vendor="clarifai",
        vendor_options={"endpoint": endpoint, "pat": RIGHT_PAT},
        prices=PriceTable({"clarifai": Price(Decimal("1.20"))}),
        runs_dir=tmp_path,
        n0=3,
        n=12,
    )
    assert [result.status for result in job.results] == ["failed", "failed"]
    assert all("CONN_INVALID_REQUEST" in (result.error or "") for result in job.results)
    assert len(received) == job.requests == 1 and job.billable_queries == 0
