"""The AWS adapter driving real boto3 against the Rekognition emulator."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

from apiwrap.adapters import AuthError, MalformedAnswer, Rejected, Throttled, Transient, create_adapter
from apiwrap.adapters.aws import _vendor_error
from apiwrap.adapters.base import VendorAnswer, top1
from apiwrap.adapters.emulators._http import HttpReply, HttpServer
from apiwrap.adapters.emulators.fakes import solid_png
from apiwrap.adapters.emulators.model import ImageModel
from tests.fixtures import vendors as published

RIGHT_KEY = "AKIAEMULATORRIGHT1"
WRONG_KEY = "AKIAEMULATORWRONG2"


@pytest.fixture
def no_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """No credentials anywhere: the adapter must still reach an emulator."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))


async def test_labels_top1_and_model_version(vendor_emulator, no_aws_env) -> None:
    emulator = vendor_emulator("aws", model_version="3.0-test")
    adapter = create_adapter("aws", endpoint=emulator.endpoint)
    [answer] = await adapter.label_batch([solid_png((20, 200, 20))])
    assert answer.top1 == "tree frog"  # Title Case on the wire, canonical here
    assert all(0.0 <= label.score <= 1.0 for label in answer.labels)  # Confidence / 100
    assert answer.model_version == "3.0-test"
    assert emulator.calls == emulator.billable == 1
    await adapter.aclose()


async def test_throttle_carries_the_hint_and_the_sdk_does_not_retry(vendor_emulator) -> None:
    emulator = vendor_emulator("aws", tps=0.5)  # one call per 2 s
    adapter = create_adapter("aws", endpoint=emulator.endpoint)
    await adapter.label_batch([solid_png()])
    with pytest.raises(Throttled) as caught:
        await adapter.label_batch([solid_png()])
    assert caught.value.retry_after is not None and 1.0 < caught.value.retry_after <= 2.0
    assert emulator.calls == 2  # botocore's standard mode would have made 3 attempts
    assert emulator.billable == 1
    await adapter.aclose()


@pytest.mark.parametrize(
    ("fault", "error"),
    [("error", Transient), ("reset", Transient), ("hang", Transient), ("malformed", MalformedAnswer)],
)
async def test_faults_map_to_the_error_tree_with_one_call(vendor_emulator, fault, error) -> None:
    emulator = vendor_emulator("aws", hang_s=5.0)
    adapter = create_adapter("aws", endpoint=emulator.endpoint, timeout=0.5)
    emulator.inject(fault)
    with pytest.raises(error):
        await adapter.label_batch([solid_png()])
    assert emulator.calls == 1
    await adapter.aclose()


async def test_empty_label_list_is_no_label(vendor_emulator) -> None:
    emulator = vendor_emulator("aws")
    adapter = create_adapter("aws", endpoint=emulator.endpoint)
    emulator.inject("empty")
    [answer] = await adapter.label_batch([solid_png()])
    assert answer.labels == () and answer.top1 == "<no label>"
    await adapter.aclose()


@pytest.mark.parametrize(
    "image",
    [b"\x89PNG" + bytes(5 * 1024 * 1024), solid_png(size=(60, 200))],
    ids=["over-5MB", "side-under-80px"],
)
async def test_input_over_the_limits_is_refused_before_sending(vendor_emulator, image) -> None:
    emulator = vendor_emulator("aws")
    adapter = create_adapter("aws", endpoint=emulator.endpoint)
    [result] = await adapter.label_batch([image])
    assert isinstance(result, Rejected)
    assert emulator.calls == 0
    await adapter.aclose()


async def test_vendor_side_limit_errors_are_rejected(vendor_emulator) -> None:
    from apiwrap.adapters.base import ImageLimits

    emulator = vendor_emulator("aws", limits=ImageLimits(max_bytes=100))
    adapter = create_adapter("aws", endpoint=emulator.endpoint)
    with pytest.raises(Rejected, match="ImageTooLargeException"):
        await adapter.label_batch([solid_png()])
    await adapter.aclose()


async def test_wrong_key_is_a_clear_auth_error_without_the_key(vendor_emulator) -> None:
    emulator = vendor_emulator("aws", api_key=RIGHT_KEY)
    adapter = create_adapter(
        "aws", endpoint=emulator.endpoint, aws_access_key_id=WRONG_KEY, aws_secret_access_key="s3cr3t-value"
    )
    with pytest.raises(AuthError) as caught:
        await adapter.label_batch([solid_png()])
    text = str(caught.value) + repr(caught.value) + repr(adapter)
    assert "security token" in text and "credentials" in text
    assert WRONG_KEY not in text and RIGHT_KEY not in text and "s3cr3t-value" not in text
    assert emulator.billable == 0
    await adapter.aclose()


@pytest.mark.parametrize(
    ("code", "status", "headers", "expected"),
    [
        ("ProvisionedThroughputExceededException", 400, {"Retry-After": "3"}, Throttled),
        ("AccessDeniedException", 400, {}, AuthError),
        ("InvalidImageFormatException", 400, {}, Rejected),
        ("ServiceUnavailableException", 503, {}, Transient),
    ],
)
def test_error_codes_map_onto_the_tree(code, status, headers, expected) -> None:
    import botocore.exceptions

    response = {
        "Error": {"Code": code, "Message": "m"},
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers},
    }
    error = _vendor_error(botocore.exceptions.ClientError(response, "DetectLabels"))
    assert type(error) is expected
    if headers:
        assert error.retry_after == 3.0


async def test_real_model_answers_like_the_shared_image_model(vendor_emulator) -> None:
    emulator = vendor_emulator("aws", real_model=True)
    adapter = create_adapter("aws", endpoint=emulator.endpoint)
    image = solid_png((30, 60, 200))
    [answer] = await adapter.label_batch([image])
    expected = ImageModel().classify([image])[0]
    assert answer.top1 == expected[0][0].casefold()
    assert answer.labels[0].score == pytest.approx(expected[0][1], abs=1e-9)
    await adapter.aclose()


@pytest.fixture
def canned_aws(no_aws_env) -> Iterator[Callable[[HttpReply], str]]:
    """Serves one reply to every request; gives the server's endpoint."""
    servers: list[HttpServer] = []

    def serve(reply: HttpReply) -> str:
        servers.append(HttpServer(lambda request: reply))
        return servers[-1].url

    yield serve
    for server in servers:
        server.close()


_STREET = published.load("aws/detect_labels_street.json")


@pytest.mark.parametrize(
    "body",
    [
        json.dumps(_STREET).encode("utf-16"),  # re-encoded on the way: not UTF-8
        json.dumps(_STREET["Labels"]).encode(),  # the label list without its answer object
        json.dumps({**_STREET, "Labels": {"Labels": _STREET["Labels"]}}).encode(),  # a map, not a list
    ],
    ids=["utf-16", "bare-list", "labels-map"],
)
async def test_any_body_botocore_cannot_parse_is_a_malformed_answer(canned_aws, body) -> None:
    endpoint = canned_aws(HttpReply(200, body, {"Content-Type": "application/x-amz-json-1.1"}))
    adapter = create_adapter("aws", endpoint=endpoint)
    with pytest.raises(MalformedAnswer, match="could not be parsed"):
        await adapter.label_batch([solid_png()])
    await adapter.aclose()


async def _answer_for(canned_aws, document: dict) -> VendorAnswer:
    endpoint = canned_aws(
        HttpReply(200, json.dumps(document).encode(), {"Content-Type": "application/x-amz-json-1.1"})
    )
    adapter = create_adapter("aws", endpoint=endpoint)
    try:
        [answer] = await adapter.label_batch([solid_png()])
    finally:
        await adapter.aclose()
    return answer


async def test_each_tie_of_the_published_answer_goes_to_its_most_specific_label(canned_aws) -> None:
    answer = await _answer_for(canned_aws, _STREET)
    # Automobile, Vehicle, Transportation and Car tie at 99.15; the last two are the first's and
    # the last's parents, and of Automobile and Car, both most specific, the first by name wins.
    assert answer.top1 == "automobile"
    parents = {
        label["Name"].casefold(): {p["Name"].casefold() for p in label["Parents"]}
        for label in _STREET["Labels"]
    }
    for score in {label.score for label in answer.labels}:
        tied = [label for label in answer.labels if label.score == score]
        chosen = top1(tied)
        assert not any(chosen in parents[label.name] for label in tied), (score, chosen)
    assert (
        top1([label for label in answer.labels if label.name in {"urban", "town", "building", "city"}])
        == "city"
    )


async def test_a_tied_alias_yields_to_the_label_it_aliases(canned_aws) -> None:
    # The 99.15 tie of the published answer, with Automobile given as an alias of Car, the way
    # DetectLabels 3.0 reports synonyms (Label.Aliases in the API reference).
    tie = [label for label in _STREET["Labels"] if label["Confidence"] == _STREET["Labels"][0]["Confidence"]]
    car = next(label for label in tie if label["Name"] == "Car")
    aliased = [label for label in tie if label is not car] + [{**car, "Aliases": [{"Name": "Automobile"}]}]
    answer = await _answer_for(canned_aws, {**_STREET, "Labels": aliased})
    assert answer.top1 == "car"
