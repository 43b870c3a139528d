"""The /aws door: boto3's Rekognition client, as an application uses it, against the proxy."""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.auth
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from apiwrap.adapters.emulators import Emulator
from tests.proxy_kit import AWS_KEYS, GREEN, RED, TIED, proxy_config, proxy_server, vendor_emulator


@pytest.fixture
def vendor() -> Iterator[Emulator]:
    with vendor_emulator("aws") as running:
        yield running


@pytest.fixture
def proxy(tmp_path: Path, vendor: Emulator) -> Iterator[str]:
    with proxy_server(proxy_config(tmp_path, "aws", vendor.endpoint)) as base:
        yield base


def rekognition(base: str, key_id: str = AWS_KEYS["alice"][0], secret: str = AWS_KEYS["alice"][1]) -> Any:
    return boto3.client(
        "rekognition",
        endpoint_url=f"{base}/aws",
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )


def _error(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def test_detect_labels_answers_the_certified_label_with_its_certificate(proxy: str, vendor: Emulator) -> None:
    client = rekognition(proxy)
    answer = client.detect_labels(Image={"Bytes": RED}, MaxLabels=10)
    headers = answer["ResponseMetadata"]["HTTPHeaders"]

    assert headers["x-apiwrap-status"] == "certified"
    (label,) = answer["Labels"]
    assert label["Name"] == "Goldfish"
    assert label["Confidence"] == pytest.approx(100 * float(headers["x-apiwrap-p-lower"]))
    assert answer["LabelModelVersion"] == "3.0"  # the upstream's
    assert float(headers["x-apiwrap-radius"]) >= 0.25  # the target design's default radius
    assert headers["x-apiwrap-sigma"] == "0.25" and headers["x-apiwrap-alpha"] == "0.001"
    assert headers["x-apiwrap-clean-label"] == "goldfish"
    votes, total = map(int, headers["x-apiwrap-votes"].split("/"))
    assert votes == total > 0
    assert int(headers["x-apiwrap-queries"]) == vendor.billable == total + 1  # the clean image + votes
    assert headers["x-apiwrap-cache"] == "miss"
    assert headers["x-apiwrap-job"].startswith("job-")


def test_the_same_image_again_comes_from_the_cache_without_a_query(proxy: str, vendor: Emulator) -> None:
    client = rekognition(proxy)
    first = client.detect_labels(Image={"Bytes": GREEN})
    calls = vendor.calls
    again = client.detect_labels(Image={"Bytes": GREEN})
    other_tenant = rekognition(proxy, *AWS_KEYS["bob"]).detect_labels(Image={"Bytes": GREEN})

    first_headers = first["ResponseMetadata"]["HTTPHeaders"]
    headers = again["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-apiwrap-cache"] == "hit"
    assert headers["x-apiwrap-job"] == first_headers["x-apiwrap-job"]
    assert again["Labels"] == first["Labels"] and again["Labels"][0]["Name"] == "Tree Frog"
    # The cache is per tenant: bob's request is certified (and paid) on its own.
    assert other_tenant["ResponseMetadata"]["HTTPHeaders"]["x-apiwrap-cache"] == "miss"
    assert vendor.calls == 2 * calls


def test_a_new_vendor_model_version_retires_the_cached_certificates(proxy: str, vendor: Emulator) -> None:
    client = rekognition(proxy)
    client.detect_labels(Image={"Bytes": RED})
    vendor.model_version = "4.0"
    fresh = client.detect_labels(Image={"Bytes": GREEN})  # the proxy learns of 4.0 here
    calls = vendor.calls
    again = client.detect_labels(Image={"Bytes": RED})

    assert fresh["LabelModelVersion"] == "4.0"
    assert again["ResponseMetadata"]["HTTPHeaders"]["x-apiwrap-cache"] == "miss"
    assert again["LabelModelVersion"] == "4.0" and vendor.calls > calls


def test_an_abstention_answers_no_label(proxy: str, vendor: Emulator) -> None:
    client = rekognition(proxy)
    client.meta.events.register(
        "before-sign.rekognition.DetectLabels",
        lambda request, **_: request.headers.__setitem__("X-Apiwrap-Max-Queries", "12"),
    )
    answer = client.detect_labels(Image={"Bytes": TIED})
    headers = answer["ResponseMetadata"]["HTTPHeaders"]

    assert answer["Labels"] == []
    assert headers["x-apiwrap-status"] == "abstained"
    assert "x-apiwrap-radius" not in headers
    assert int(headers["x-apiwrap-queries"]) == vendor.billable <= 1 + 12  # the header capped the votes


def test_bad_keys_and_signatures_are_refused_as_rekognition_refuses_them(
    proxy: str, vendor: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ClientError) as wrong_secret:
        rekognition(proxy, AWS_KEYS["alice"][0], "not-the-secret").detect_labels(Image={"Bytes": RED})
    with pytest.raises(ClientError) as unknown_key:
        rekognition(proxy, "AKIANOBODY0000000000", "x").detect_labels(Image={"Bytes": RED})
    stale = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - datetime.timedelta(minutes=10)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: stale)
    with pytest.raises(ClientError) as expired:
        rekognition(proxy).detect_labels(Image={"Bytes": RED})

    assert _error(wrong_secret) == "InvalidSignatureException"
    assert "does not match the signature you provided" in str(wrong_secret.value)
    assert _error(unknown_key) == "UnrecognizedClientException"
    assert _error(expired) == "InvalidSignatureException" and "Signature expired" in str(expired.value)
    assert vendor.calls == 0


def test_an_unsupported_operation_gets_rekognitions_error(proxy: str, vendor: Emulator) -> None:
    client = rekognition(proxy)
    with pytest.raises(ClientError) as faces:
        client.detect_faces(Image={"Bytes": RED})
    with pytest.raises(ClientError) as s3:
        client.detect_labels(Image={"S3Object": {"Bucket": "photos", "Name": "cat.png"}})
    assert _error(faces) == "UnknownOperationException"
    assert _error(s3) == "InvalidParameterException"
    assert vendor.calls == 0


def test_an_exhausted_budget_is_rekognitions_limit_error(tmp_path: Path, vendor: Emulator) -> None:
    config = proxy_config(tmp_path, "aws", vendor.endpoint, caps={"alice": {"max_queries": 3}})
    with proxy_server(config) as base:
        client = rekognition(base)
        with pytest.raises(client.exceptions.LimitExceededException) as ran_out:
            client.detect_labels(Image={"Bytes": RED})
        with pytest.raises(client.exceptions.LimitExceededException) as refused:
            client.detect_labels(Image={"Bytes": GREEN})
    assert "ran out" in str(ran_out.value)
    assert "query cap" in str(refused.value)
    assert vendor.billable == 3  # what the cap allowed, nothing more


def test_a_certificate_still_running_is_throttling_and_the_retry_finds_it(tmp_path: Path) -> None:
    with vendor_emulator("aws", latency_ms=40) as slow:
        config = proxy_config(tmp_path, "aws", slow.endpoint, certify_wait_s=0.05)
        with proxy_server(config) as base:
            client = rekognition(base)
            with pytest.raises(client.exceptions.ThrottlingException) as running:
                client.detect_labels(Image={"Bytes": RED})
            headers = running.value.response["ResponseMetadata"]["HTTPHeaders"]
            job = running.value.response["Error"]["Message"].split()[1]
            for _ in range(1200):  # the job runs on without its client; sent again once done, it is served
                try:
                    answer = client.detect_labels(Image={"Bytes": RED})
                    break
                except client.exceptions.ThrottlingException:
                    time.sleep(0.05)
            else:
                pytest.fail(f"job {job} never finished")
    assert headers["x-amz-retry-after"] == "1000"
    assert answer["ResponseMetadata"]["HTTPHeaders"]["x-apiwrap-job"] == job
    assert answer["ResponseMetadata"]["HTTPHeaders"]["x-apiwrap-cache"] == "hit"
    assert slow.billable == int(answer["ResponseMetadata"]["HTTPHeaders"]["x-apiwrap-queries"])  # paid once


def test_a_bad_or_unknown_option_header_is_an_invalid_parameter(proxy: str, vendor: Emulator) -> None:
    def with_header(name: str, value: str) -> Any:
        client = rekognition(proxy)
        client.meta.events.register(
            "before-sign.rekognition.DetectLabels",
            lambda request, **_: request.headers.__setitem__(name, value),
        )
        return client

    with pytest.raises(ClientError) as unknown:
        with_header("X-Apiwrap-Radius", "0.5").detect_labels(Image={"Bytes": RED})
    with pytest.raises(ClientError) as bad:
        with_header("X-Apiwrap-Target-Radius", "-1").detect_labels(Image={"Bytes": RED})
    assert _error(unknown) == _error(bad) == "InvalidParameterException"
    assert "x-apiwrap-target-radius" in str(unknown.value) and "target_radius" in str(bad.value)
    assert vendor.calls == 0


def test_a_tenants_door_options_override_the_servers_and_a_header_overrides_both(
    tmp_path: Path, vendor: Emulator
) -> None:
    config = proxy_config(tmp_path, "aws", vendor.endpoint, caps={"bob": {"proxy": {"target_radius": 0.5}}})
    with proxy_server(config) as base:
        alice = rekognition(base).detect_labels(Image={"Bytes": RED})
        bob_client = rekognition(base, *AWS_KEYS["bob"])
        bob = bob_client.detect_labels(Image={"Bytes": RED})
        bob_client.meta.events.register(
            "before-sign.rekognition.DetectLabels",
            lambda request, **_: request.headers.__setitem__("X-Apiwrap-Sigma", "0.12"),
        )
        bob_header = bob_client.detect_labels(Image={"Bytes": RED})

    def sigma(answer: Any) -> str:
        return str(answer["ResponseMetadata"]["HTTPHeaders"]["x-apiwrap-sigma"])

    # sigma follows the target radius (the smallest of 0.12, 0.25, 0.5 at least as large) unless given
    assert (sigma(alice), sigma(bob), sigma(bob_header)) == ("0.25", "0.5", "0.12")
    assert float(bob["ResponseMetadata"]["HTTPHeaders"]["x-apiwrap-radius"]) >= 0.5
