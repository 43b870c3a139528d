"""The Azure adapter driving the real msrest SDK against the Computer Vision emulator."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest

from apiwrap.adapters import AuthError, MalformedAnswer, Rejected, Throttled, Transient, create_adapter
from apiwrap.adapters.base import ImageLimits
from apiwrap.adapters.emulators._http import HttpReply, HttpServer
from apiwrap.adapters.emulators.fakes import solid_png
from apiwrap.adapters.emulators.model import ImageModel
from apiwrap.budgets import Budget, Price
from apiwrap.engine.journal import Journal
from apiwrap.engine.scheduler import QueryScheduler, RetryPolicy
from apiwrap.errors import JobAborted
from tests.fixtures import vendors as published

RIGHT_KEY = "0123456789abcdef-right"
WRONG_KEY = "fedcba9876543210-wrong"


async def test_labels_top1_and_model_version(vendor_emulator) -> None:
    emulator = vendor_emulator("azure", model_version="2023-02-01")
    adapter = create_adapter("azure", endpoint=emulator.endpoint, key=RIGHT_KEY)
    [answer] = await adapter.label_batch([solid_png((20, 20, 200))])  # a chunked upload
    assert answer.top1 == "jellyfish"
    assert answer.model_version == "2023-02-01"
    assert '"modelVersion"' in answer.raw and RIGHT_KEY not in answer.raw
    assert emulator.calls == emulator.billable == 1
    await adapter.aclose()


async def test_throttle_carries_the_hint_and_the_sdk_does_not_retry(vendor_emulator) -> None:
    emulator = vendor_emulator("azure", tps=0.25)  # one call per 4 s
    adapter = create_adapter("azure", endpoint=emulator.endpoint)
    await adapter.label_batch([solid_png()])
    with pytest.raises(Throttled, match="retry after") as caught:
        await adapter.label_batch([solid_png()])
    assert caught.value.retry_after == 4.0  # Retry-After header (and "retry after 4 seconds")
    assert emulator.calls == 2
    await adapter.aclose()


@pytest.mark.parametrize(
    ("fault", "error"),
    [("error", Transient), ("reset", Transient), ("hang", Transient), ("malformed", MalformedAnswer)],
)
async def test_faults_map_to_the_error_tree_with_one_call(vendor_emulator, fault, error) -> None:
    emulator = vendor_emulator("azure", hang_s=5.0)
    adapter = create_adapter("azure", endpoint=emulator.endpoint, timeout=0.5)
    emulator.inject(fault)
    with pytest.raises(error):
        await adapter.label_batch([solid_png()])
    assert emulator.calls == 1  # msrest retries 5xx three times unless told not to
    await adapter.aclose()


async def test_empty_tags_are_no_label(vendor_emulator) -> None:
    emulator = vendor_emulator("azure")
    adapter = create_adapter("azure", endpoint=emulator.endpoint)
    emulator.inject("empty")
    [answer] = await adapter.label_batch([solid_png()])
    assert answer.top1 == "<no label>"
    await adapter.aclose()


@pytest.mark.parametrize(
    "image",
    [b"\x89PNG" + bytes(4 * 1024 * 1024), solid_png(size=(49, 100))],
    ids=["4MB", "side-under-50px"],
)
async def test_input_over_the_limits_is_refused_before_sending(vendor_emulator, image) -> None:
    emulator = vendor_emulator("azure")
    adapter = create_adapter("azure", endpoint=emulator.endpoint)
    [result] = await adapter.label_batch([image])
    assert isinstance(result, Rejected)
    assert emulator.calls == 0
    await adapter.aclose()


async def test_vendor_side_limit_errors_are_rejected(vendor_emulator) -> None:
    emulator = vendor_emulator("azure", limits=ImageLimits(max_bytes=100))
    adapter = create_adapter("azure", endpoint=emulator.endpoint)
    with pytest.raises(Rejected, match="InvalidImageSize"):
        await adapter.label_batch([solid_png()])
    await adapter.aclose()


async def test_wrong_key_is_a_clear_auth_error_without_the_key(vendor_emulator) -> None:
    emulator = vendor_emulator("azure", api_key=RIGHT_KEY)
    adapter = create_adapter("azure", endpoint=emulator.endpoint, key=WRONG_KEY)
    with pytest.raises(AuthError, match="invalid subscription key") as caught:
        await adapter.label_batch([solid_png()])
    text = str(caught.value) + repr(caught.value) + repr(adapter)
    assert WRONG_KEY not in text and RIGHT_KEY not in text
    await adapter.aclose()


def test_missing_configuration_is_an_auth_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AZURE_COMPUTER_VISION_ENDPOINT", "VISION_ENDPOINT", "COMPUTER_VISION_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(AuthError, match="AZURE_COMPUTER_VISION_ENDPOINT"):
        create_adapter("azure")


async def test_endpoint_and_key_from_the_environment(vendor_emulator, monkeypatch) -> None:
    emulator = vendor_emulator("azure", api_key=RIGHT_KEY)
    monkeypatch.setenv("AZURE_COMPUTER_VISION_ENDPOINT", emulator.endpoint)
    monkeypatch.setenv("AZURE_COMPUTER_VISION_KEY", RIGHT_KEY)
    adapter = create_adapter("azure")
    [answer] = await adapter.label_batch([solid_png()])
    assert answer.top1 == "goldfish"
    await adapter.aclose()


async def test_real_model_answers_like_the_shared_image_model(vendor_emulator) -> None:
    emulator = vendor_emulator("azure", real_model=True)
    adapter = create_adapter("azure", endpoint=emulator.endpoint)
    image = solid_png((200, 180, 40))
    [answer] = await adapter.label_batch([image])
    expected = ImageModel().classify([image])[0]
    assert answer.top1 == expected[0][0].casefold()
    assert answer.labels[0].score == pytest.approx(expected[0][1], abs=1e-9)
    await adapter.aclose()


@pytest.fixture
def canned_azure() -> Iterator[Callable[[HttpReply], str]]:
    """Serves one reply to every request; gives the server's endpoint."""
    servers: list[HttpServer] = []

    def serve(reply: HttpReply) -> str:
        servers.append(HttpServer(lambda request: reply))
        return servers[-1].url

    yield serve
    for server in servers:
        server.close()


# 22 days, 14 hours, 18 minutes and 12 seconds: the wait the published body names.
QUOTA_WAIT_S = 22 * 86400 + 14 * 3600 + 18 * 60 + 12


@pytest.mark.parametrize(("headers", "retry_after"), [({}, QUOTA_WAIT_S), ({"Retry-After": "3600"}, 3600.0)])
async def test_out_of_call_volume_quota_is_throttled_with_its_wait(
    canned_azure, headers, retry_after
) -> None:
    body = published.raw("azure/out_of_call_volume_quota.json")
    endpoint = canned_azure(HttpReply(403, body, {"Content-Type": "application/json", **headers}))
    adapter = create_adapter("azure", endpoint=endpoint, key=RIGHT_KEY)
    with pytest.raises(Throttled, match="Out of call volume quota") as caught:
        await adapter.label_batch([solid_png()])
    assert caught.value.retry_after == retry_after
    await adapter.aclose()


async def test_a_quota_that_refills_past_the_retry_deadline_stops_the_job_at_once(
    canned_azure, tmp_path
) -> None:
    received: list[object] = []
    body = published.raw("azure/out_of_call_volume_quota.json")

    def answer(request: object) -> HttpReply:
        received.append(request)
        return HttpReply(403, body, {"Content-Type": "application/json"})

    server = HttpServer(answer)
    adapter = create_adapter("azure", endpoint=server.url, key=RIGHT_KEY)
    journal = Journal(tmp_path / "job.sqlite")
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    scheduler = QueryScheduler(
        adapter,
        journal,
        Budget(),
        price=Price(Decimal("1.00")),
        retry=RetryPolicy(deadline_s=120),
        sleep=sleep,
    )
    try:
        with pytest.raises(JobAborted, match="Out of call volume quota"):
            await scheduler.query(journal.image_id("image"), 0, solid_png(), "digest")
        assert len(received) == 1 and waits == []  # not 22 days of waiting for one retry
    finally:
        await scheduler.aclose()
        journal.close()
        await adapter.aclose()
        server.close()
