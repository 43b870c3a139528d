"""Property-based fuzz of the published OpenAPI schema (schemathesis), with conformance checks on.

Every generated request must get an answer the schema documents: no 5xx, a documented status,
a documented content type and headers, and a body that validates against that status's schema
(the pydantic response models; ``application/problem+json`` for errors). Driven by hypothesis
directly over each operation's strategy rather than schemathesis' pytest plugin, whose lazy
fixture loader does not run under this pytest version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from apiwrap.adapters.emulators import EmulatorConfig, emulator
from apiwrap.service import create_app
from apiwrap.testing import fake_classify
from tests.test_service import KEYS, METRICS_KEY, ServerThread, service_config

EXAMPLES_PER_OPERATION = 12
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _fuzz(operation: Any, headers: dict[str, str]) -> None:
    """Raises schemathesis' FailureGroup, with every failed check, for the first bad answer."""

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=True,  # the same examples on every run: a failure reproduces
        suppress_health_check=list(HealthCheck),
    )
    def call(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS, timeout=120)

    call()


def test_every_answer_conforms_to_the_published_schema(tmp_path: Path) -> None:
    with emulator("aws", EmulatorConfig(classify=fake_classify)) as endpoint:
        # A small query cap bounds the work of the images schemathesis generates (it makes valid
        # PNGs): once it is spent, every certification is a quick 402.
        config = service_config(
            tmp_path, endpoint, max_request_bytes=100_000, caps={"alice": {"max_queries": 500}}
        )
        with ServerThread(create_app(config)) as base:
            schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
            operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
            assert len(operations) >= 10

            for operation in operations:
                key = METRICS_KEY if operation.path == "/metrics" else KEYS["alice"]
                _fuzz(operation, {"Authorization": f"Bearer {key}"})
