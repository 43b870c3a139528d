"""The Clarifai adapter driving clarifai-grpc's V2Stub against the PostModelOutputs emulator."""

from __future__ import annotations

import pytest
from clarifai_grpc.grpc.api.status import status_code_pb2, status_pb2

from apiwrap.adapters import AuthError, MalformedAnswer, Rejected, Throttled, Transient, create_adapter
from apiwrap.adapters.base import ImageLimits
from apiwrap.adapters.clarifai import _vendor_error
from apiwrap.adapters.emulators.fakes import solid_png
from apiwrap.adapters.emulators.model import ImageModel

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
