"""Property-based fuzz of the published OpenAPI schema (schemathesis): no request gets a 5xx.

Driven by hypothesis directly over each operation's strategy rather than schemathesis' pytest
plugin, whose lazy fixture loader does not run under this pytest version.
"""

from __future__ import annotations

from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, given, settings

from apiwrap.adapters.emulators import EmulatorConfig, emulator
from apiwrap.service import create_app
from apiwrap.testing import fake_classify
from tests.test_service import KEYS, ServerThread, service_config

AUTH = {"Authorization": f"Bearer {KEYS['alice']}"}
EXAMPLES_PER_OPERATION = 12


def test_no_request_makes_the_server_fail(tmp_path: Path) -> None:
    with emulator("aws", EmulatorConfig(classify=fake_classify)) as endpoint:
        # A small query cap bounds the work of the images schemathesis generates (it makes valid
        # PNGs): once it is spent, every certification is a quick 402.
        config = service_config(
            tmp_path, endpoint, max_request_bytes=100_000, caps={"alice": {"max_queries": 500}}
        )
        with ServerThread(create_app(config)) as base:
            schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
            failures: list[str] = []
            operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
            assert len(operations) >= 10

            for operation in operations:

                @given(case=operation.as_strategy())
                @settings(
                    max_examples=EXAMPLES_PER_OPERATION,
                    deadline=None,
                    database=None,
                    derandomize=True,  # the same examples on every run: a failure reproduces
                    suppress_health_check=list(HealthCheck),
                )
                def call(case: schemathesis.Case) -> None:
                    response = case.call(headers=AUTH, timeout=120)
                    if response.status_code >= 500:
                        failures.append(f"{case.method} {case.formatted_path}: {response.text[:300]}")

                call()
    assert failures == []
