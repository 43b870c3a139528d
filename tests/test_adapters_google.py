"""The Google adapter driving the real async gRPC client against the Vision emulator."""

from __future__ import annotations

import pytest
from google.api_core import exceptions as api_exceptions
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2

from apiwrap.adapters import AuthError, MalformedAnswer, Rejected, Throttled, Transient, create_adapter
from apiwrap.adapters.base import ImageLimits
from apiwrap.adapters.emulators.fakes import solid_png
from apiwrap.adapters.emulators.model import ImageModel
from apiwrap.adapters.google import _vendor_error

RIGHT_KEY = "AIzaEmulatorRightKey000"
WRONG_KEY = "AIzaEmulatorWrongKey999"


async def test_labels_top1_and_no_model_version(vendor_emulator) -> None:
    emulator = vendor_emulator("google")
    adapter = create_adapter("google", endpoint=emulator.endpoint)
    [answer] = await adapter.label_batch([solid_png((20, 200, 20))])
    assert answer.top1 == "tree frog"
    assert answer.model_version is None  # Google reports none
    await adapter.aclose()


async def test_sixteen_images_are_one_request(vendor_emulator) -> None:
    emulator = vendor_emulator("google")
    adapter = create_adapter("google", endpoint=emulator.endpoint)
    colours = [(200, 20, 20), (20, 200, 20), (20, 20, 200)]
    images = [solid_png(colours[i % 3], size=(32 + i, 32)) for i in range(16)]
    answers = await adapter.label_batch(images)
    assert [a.top1 for a in answers] == [("goldfish", "tree frog", "jellyfish")[i % 3] for i in range(16)]
    assert emulator.calls == 1 and emulator.billable == 16
    assert adapter.max_batch == 16
    await adapter.aclose()


async def test_one_image_can_fail_inside_a_batch(vendor_emulator) -> None:
    big = solid_png(size=(400, 400))
    emulator = vendor_emulator("google", limits=ImageLimits(max_bytes=len(big) - 1))
    adapter = create_adapter("google", endpoint=emulator.endpoint)
    first, second, third = await adapter.label_batch([solid_png(), big, solid_png()])
    assert first.top1 == third.top1 == "goldfish"
    assert isinstance(second, Rejected)
    assert emulator.calls == 1 and emulator.billable == 2  # the failed image is not billed
    await adapter.aclose()


async def test_throttle_and_the_sdk_does_not_retry(vendor_emulator) -> None:
    emulator = vendor_emulator("google")
    adapter = create_adapter("google", endpoint=emulator.endpoint)
    emulator.inject("throttle")
    with pytest.raises(Throttled, match="Quota exceeded") as caught:
        await adapter.label_batch([solid_png()])
    assert caught.value.retry_after is None  # Google sends no hint
    assert emulator.calls == 1
    await adapter.aclose()


@pytest.mark.parametrize(
    ("fault", "error"),
    [("error", Transient), ("reset", Transient), ("hang", Transient), ("malformed", MalformedAnswer)],
)
async def test_faults_map_to_the_error_tree_with_one_call(vendor_emulator, fault, error) -> None:
    emulator = vendor_emulator("google", hang_s=5.0)
    adapter = create_adapter("google", endpoint=emulator.endpoint, timeout=0.5)
    emulator.inject(fault)
    with pytest.raises(error):
        await adapter.label_batch([solid_png()])
    assert emulator.calls == 1  # api-core would retry UNAVAILABLE without retry=None
    await adapter.aclose()


async def test_empty_labels_are_no_label(vendor_emulator) -> None:
    emulator = vendor_emulator("google")
    adapter = create_adapter("google", endpoint=emulator.endpoint)
    emulator.inject("empty")
    answers = await adapter.label_batch([solid_png(), solid_png()])
    assert [a.top1 for a in answers] == ["<no label>", "<no label>"]
    await adapter.aclose()


async def test_input_over_the_limits_is_refused_before_sending(vendor_emulator) -> None:
    emulator = vendor_emulator("google")
    adapter = create_adapter("google", endpoint=emulator.endpoint)
    [result] = await adapter.label_batch([b"\x89PNG" + bytes(20 * 1024 * 1024)])
    assert isinstance(result, Rejected)
    assert emulator.calls == 0
    await adapter.aclose()


@pytest.mark.parametrize("key", [WRONG_KEY, None], ids=["wrong-key", "no-key"])
async def test_bad_key_is_a_clear_auth_error_without_the_key(vendor_emulator, monkeypatch, key) -> None:
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    emulator = vendor_emulator("google", api_key=RIGHT_KEY)
    adapter = create_adapter("google", endpoint=emulator.endpoint, api_key=key)
    with pytest.raises(AuthError, match="API key") as caught:
        await adapter.label_batch([solid_png()])
    text = str(caught.value) + repr(caught.value) + repr(adapter)
    assert WRONG_KEY not in text and RIGHT_KEY not in text
    await adapter.aclose()


async def test_right_key_from_the_environment(vendor_emulator, monkeypatch) -> None:
    monkeypatch.setenv("GOOGLE_API_KEY", RIGHT_KEY)
    emulator = vendor_emulator("google", api_key=RIGHT_KEY)
    adapter = create_adapter("google", endpoint=emulator.endpoint)
    [answer] = await adapter.label_batch([solid_png()])
    assert answer.top1 == "goldfish"
    await adapter.aclose()


def test_retry_info_becomes_the_hint() -> None:
    info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=7))
    error = _vendor_error(api_exceptions.ResourceExhausted("quota", details=[info]))
    assert isinstance(error, Throttled) and error.retry_after == 7.0


async def test_real_model_answers_like_the_shared_image_model(vendor_emulator) -> None:
    emulator = vendor_emulator("google", real_model=True)
    adapter = create_adapter("google", endpoint=emulator.endpoint)
    image = solid_png((90, 40, 140))
    [answer] = await adapter.label_batch([image])
    expected = ImageModel().classify([image])[0]
    assert answer.top1 == expected[0][0].casefold()
    assert answer.labels[0].score == expected[0][1]  # float32 on the wire, exact after rounding
    await adapter.aclose()


async def test_more_than_sixteen_images_are_split_into_requests(vendor_emulator) -> None:
    emulator = vendor_emulator("google")
    adapter = create_adapter("google", endpoint=emulator.endpoint)
    answers = await adapter.label_batch([solid_png()] * 17)
    assert [a.top1 for a in answers] == ["goldfish"] * 17
    assert emulator.calls == 2
    await adapter.aclose()
