"""A request we stop waiting for may still be served and billed: it counts against every cap.

The vendor's own counter is the judge: emulators that answer slower than the client timeout
finish and bill the abandoned calls, as real vendors do, and must never bill past the cap.
"""

from __future__ import annotations

import asyncio
import io
from decimal import Decimal
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import apiwrap
from apiwrap.adapters import Adapter, ImageLimits, TimedOut, VendorAnswer, VendorError
from apiwrap.adapters.emulators import EmulatorConfig, emulator
from apiwrap.budgets import Budget, BudgetExceeded, Price, PriceConfigError, PriceTable, estimate
from apiwrap.cli.main import app
from apiwrap.engine.jobs import JobReport, JobSpec, job_spec, run_job
from apiwrap.engine.journal import Journal
from apiwrap.engine.scheduler import QueryScheduler, RequestOutcome, RetryPolicy, VendorLimits
from apiwrap.engine.settings import ConnectionOptions, JobOptions, SettingsError, parse_options
from apiwrap.errors import ConfigurationError
from apiwrap.reports import load_job, read_csv, write_csv, write_html
from apiwrap.service import create_app, load_config
from apiwrap.statistics.procedures import CertificationSettings
from apiwrap.statistics.votes import FAILED_QUERY
from apiwrap.testing import fake_classify, solid_png
from tests.fakes import FaultyVendor
from tests.test_engine import _images, _run
from tests.test_ray import _on_ray, _paid
from tests.test_ray import cluster as cluster  # the module's local Ray instance, a fixture
from tests.test_service import ServerThread, client, service_config

PRICE = Price(Decimal("1.00"))  # 1,000 micro-USD per image
#: An emulated vendor that answers after 600 ms, long after the clients below give up.
SLOW = EmulatorConfig(classify=fake_classify, latency_ms=600)


def _noisy_png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


# --- the budget and the price --------------------------------------------------------------------


def test_a_possibly_billed_attempt_counts_against_both_caps_and_is_tallied_apart() -> None:
    budget = Budget(max_usd="0.003", max_queries=2)
    first, second = budget.reserve(1_000), budget.reserve(1_000)
    budget.settle(first, billed=True)
    assert budget.settle_possibly_billed(second) == 1_000
    snapshot = budget.snapshot()
    assert (snapshot.spent.micro_usd, snapshot.spent.queries) == (2_000, 2)
    assert (snapshot.possibly_billed.micro_usd, snapshot.possibly_billed.queries) == (1_000, 1)
    assert (snapshot.billed.micro_usd, snapshot.billed.queries) == (1_000, 1)
    assert "(2 billable queries, 1 possibly billed)" in dict(snapshot.rows())["spent"]
    with pytest.raises(BudgetExceeded, match="query cap"):
        budget.reserve(1_000)  # the retry of the timed-out attempt finds no room


def test_a_resumed_budget_keeps_its_possibly_billed_part() -> None:
    budget = Budget(
        max_queries=10,
        spent_micro_usd=5_000,
        spent_queries=5,
        possibly_billed_micro_usd=2_000,
        possibly_billed_queries=2,
    )
    assert budget.snapshot().possibly_billed.queries == 2
    with pytest.raises(ValueError, match="part of the spend"):
        Budget(spent_queries=1, possibly_billed_queries=2)


def test_a_timeout_is_possibly_billed_wherever_the_vendor_bills_anything() -> None:
    assert PRICE.settlement("timeout") == "possibly billed"
    assert PRICE.settlement("ok") == "billed" and PRICE.settlement("throttled") == "unbilled"
    assert not PRICE.bills("timeout")
    assert Price(Decimal("1.00"), frozenset()).settlement("timeout") == "unbilled"
    with pytest.raises(PriceConfigError, match="timeout cannot be chosen"):
        Price(Decimal("1.00"), frozenset({"ok", "timeout"}))


def test_the_worst_case_estimate_bills_every_attempt_since_any_may_time_out() -> None:
    table = PriceTable({"google": Price(Decimal("1.50"), frozenset({"ok"}))})
    assert estimate(table, "google", images=3, queries_per_image=1000, max_attempts=4).worst_case_usd == 18


# --- the emulators ------------------------------------------------------------------------------


def test_an_emulator_serves_and_bills_a_call_whose_client_gave_up() -> None:
    running = emulator("azure", SLOW)
    with running as endpoint:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{endpoint}/vision/v3.2/tag",
                content=solid_png(),
                headers={"Ocp-Apim-Subscription-Key": "any", "Content-Type": "application/octet-stream"},
                timeout=0.1,
            )
        assert running.wait_idle()
        assert (running.calls, running.billable) == (1, 1)


# --- the scheduler ------------------------------------------------------------------------------


class SlowVendor(Adapter):
    """Bills every call it receives and never answers before the client gives up."""

    name = "slow"
    max_batch = 1
    model_version = "slow-1"
    limits = ImageLimits(max_bytes=10_000_000)

    def __init__(self) -> None:
        self.billed = 0

    async def label_batch(self, images: list[bytes]) -> list[VendorAnswer | VendorError]:
        self.billed += len(images)
        await asyncio.Event().wait()
        raise AssertionError("never answers")


async def _no_wait(seconds: float) -> None:
    return None


async def test_timed_out_attempts_spend_the_cap_and_their_retries_must_reserve_again(tmp_path: Path) -> None:
    vendor = SlowVendor()
    journal = Journal(tmp_path / "job.sqlite")
    budget = Budget(max_queries=5)
    observed: list[RequestOutcome] = []
    scheduler = QueryScheduler(
        vendor,
        journal,
        budget,
        price=PRICE,
        limits=VendorLimits(request_timeout_s=0.05, concurrency=2),
        retry=RetryPolicy(max_attempts=3),
        sleep=_no_wait,
        on_request=observed.append,
    )
    image = journal.image_id("image")
    outcomes = await asyncio.gather(
        *(scheduler.query(image, index, solid_png(), f"digest-{index}") for index in range(4)),
        return_exceptions=True,
    )
    await scheduler.aclose()
    assert vendor.billed == 5  # 4 queries x 3 attempts wanted; the cap let 5 leave
    snapshot = budget.snapshot()
    assert (snapshot.spent.queries, snapshot.possibly_billed.queries, snapshot.reserved.queries) == (5, 5, 0)
    assert sum(isinstance(outcome, BudgetExceeded) for outcome in outcomes) >= 1
    failed = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
    assert all((vote.outcome, vote.label) == ("timeout", FAILED_QUERY) for vote in failed)
    assert journal.spent() == (5_000, 5) and journal.possibly_billed() == (5_000, 5)
    assert journal.outcome_counts() == {"timeout": 5}
    assert (
        sum(r.possibly_billed_queries for r in observed) == 5 and sum(r.billed_queries for r in observed) == 0
    )
    journal.close()


def test_a_timed_out_attempt_is_a_timed_out_error() -> None:
    assert TimedOut("x").outcome == "timeout" and TimedOut("x").retryable


# --- the request timeout option ------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -1, float("inf"), float("nan")])
def test_the_request_timeout_is_finite_and_positive(value: float) -> None:
    with pytest.raises(SettingsError, match="request_timeout"):
        parse_options(ConnectionOptions, {"request_timeout": value})


@pytest.mark.parametrize("value", ["0", "-5", "inf", '"soon"'])
def test_the_service_refuses_a_vendor_request_timeout_out_of_range(tmp_path: Path, value: str) -> None:
    path = tmp_path / "service.toml"
    path.write_text(f"[vendors.aws]\nrequest_timeout_s = {value}\n")
    with pytest.raises(ValueError, match=r"vendors\.aws\.request_timeout_s: "):
        load_config(path)


def test_the_service_gives_its_vendor_request_timeout_to_the_scheduler(tmp_path: Path) -> None:
    path = tmp_path / "service.toml"
    path.write_text("[vendors.aws]\nrequest_timeout_s = 2.5\n")
    assert load_config(path).vendors["aws"].limits.request_timeout_s == 2.5


def test_the_request_timeout_reaches_the_scheduler_and_the_vendors_client() -> None:
    spec = job_spec(
        CertificationSettings(vendor="aws"),
        JobOptions(),
        ConnectionOptions(request_timeout=2.5),
        runs_dir=Path("runs"),
        vendor_options={"endpoint": "http://127.0.0.1:1"},
    )
    assert spec.limits.request_timeout_s == 2.5
    assert spec.vendor_options == {"endpoint": "http://127.0.0.1:1", "timeout": 2.5}
    with pytest.raises(ConfigurationError, match="leave 'timeout' out of the vendor options"):
        job_spec(
            CertificationSettings(vendor="aws"),
            JobOptions(),
            ConnectionOptions(),
            runs_dir=Path("runs"),
            vendor_options={"timeout": 1},
        )


# --- end to end: the vendor's own counter -----------------------------------------------------------

CAPS = {"queries": JobOptions(max_job_queries=12), "usd": JobOptions(max_usd=Decimal("0.012"))}


def _slow_job(vendor: str, endpoint: str, runs_dir: Path, caps: JobOptions) -> JobReport:
    settings = CertificationSettings(vendor=vendor, sigma=0.25, n=6, alpha=0.05, seed=3)
    spec = job_spec(
        settings,
        caps.model_copy(update={"job": f"slow-{vendor}"}),
        ConnectionOptions(concurrency=4, max_attempts=3, request_timeout=0.2),
        runs_dir=runs_dir,
        vendor_options={"endpoint": endpoint},
    )
    # list prices for every vendor: the money cap of $0.012 is 8 to 12 queries
    return asyncio.run(run_job(spec, [("noisy.png", _noisy_png(1))], price_table=PriceTable.default()))


@pytest.mark.parametrize("cap", sorted(CAPS))
@pytest.mark.parametrize("vendor", ["aws", "google", "azure", "clarifai"])
def test_a_slow_vendor_that_bills_abandoned_calls_never_bills_past_the_cap(
    vendor: str, cap: str, tmp_path: Path
) -> None:
    # The vendor answers after 0.6 s; the client gives up after 0.2 s and retries (3 attempts).
    running = emulator(vendor, EmulatorConfig(classify=fake_classify, latency_ms=600))
    with running as endpoint:
        report = _slow_job(vendor, endpoint, tmp_path, CAPS[cap])
        assert running.wait_idle(), "the emulator still serves abandoned calls"
        billed_by_vendor = running.billable
    price = PriceTable.default().price(vendor).micro_usd_per_image
    assert billed_by_vendor >= 1  # the abandoned calls were served and billed
    assert billed_by_vendor <= report.budget.spent.queries
    if cap == "queries":
        assert report.budget.spent.queries <= 12
    else:
        assert report.budget.spent.micro_usd <= 12_000 and billed_by_vendor * price <= 12_000
    assert report.budget.possibly_billed.queries >= billed_by_vendor
    assert report.results[0].status == "budget" and report.budget_exhausted


# --- every door shows the possibly billed queries apart -------------------------------------------


def test_the_report_shows_the_possibly_billed_spend_apart(tmp_path: Path) -> None:
    spec = JobSpec(
        settings=CertificationSettings(vendor="slow", n=4),
        job="report",
        runs_dir=tmp_path,
        limits=VendorLimits(request_timeout_s=0.05, concurrency=2),
        retry=RetryPolicy(max_attempts=2, backoff_base_s=0.001, backoff_max_s=0.002),
        max_queries=6,
    )
    prices = PriceTable({"slow": PRICE})
    report = asyncio.run(run_job(spec, [("a.png", _noisy_png(2))], adapter=SlowVendor(), price_table=prices))
    assert report.budget.possibly_billed.queries == report.budget.spent.queries == 6

    job = load_job(report.journal)
    assert (job.possibly_billed_queries, job.possibly_billed_micro_usd) == (6, 6_000)
    write_csv(job, tmp_path / "report.csv")
    (row,) = read_csv(tmp_path / "report.csv")
    assert row["possibly_billed_usd"] == row["spend_usd"] == Decimal("0.006")
    write_html(job, tmp_path / "report.html")
    assert "6 queries timed out, $0.006" in (tmp_path / "report.html").read_text()

    # Resumed, the job's budget starts from the journal, timed-out attempts included: no room left.
    vendor = SlowVendor()
    resumed = asyncio.run(run_job(spec, [("a.png", _noisy_png(2))], adapter=vendor, price_table=prices))
    assert vendor.billed == 0 and resumed.budget_exhausted
    assert resumed.budget.possibly_billed.queries == resumed.budget.spent.queries == 6


def test_the_command_line_takes_the_request_timeout_and_prints_the_possibly_billed(tmp_path: Path) -> None:
    image = tmp_path / "noisy.png"
    image.write_bytes(_noisy_png(3))
    running = emulator("aws", SLOW)
    with running as endpoint:
        result = CliRunner().invoke(
            app,
            [
                *("certify", str(image), "--vendor", "aws", "--endpoint", endpoint, "--n", "4"),
                *("--max-job-queries", "6", "--max-attempts", "2", "--request-timeout", "0.2"),
                *("--runs-dir", str(tmp_path / "runs"), "--job", "cli"),
            ],
        )
        assert running.wait_idle()
        billed_by_vendor = running.billable
    assert "for 6 billable queries (6 possibly billed: timed out)" in result.output, result.output
    assert 1 <= billed_by_vendor <= 6


def test_the_command_line_refuses_a_request_timeout_that_is_not_finite_and_positive(tmp_path: Path) -> None:
    image = tmp_path / "red.png"
    image.write_bytes(solid_png())
    for value in ("0", "-1", "inf"):
        result = CliRunner().invoke(app, ["certify", str(image), "--request-timeout", value])
        assert result.exit_code == 2 and "--request-timeout" in result.output, result.output


def test_the_python_api_takes_the_request_timeout_and_reports_the_possibly_billed(tmp_path: Path) -> None:
    running = emulator("aws", SLOW)
    with running as endpoint:
        job = apiwrap.certify(
            _noisy_png(4),
            vendor="aws",
            vendor_options={"endpoint": endpoint},
            runs_dir=tmp_path,
            request_timeout=0.2,
            max_attempts=2,
            max_job_queries=6,
            n=4,
        )
        assert running.wait_idle()
        billed_by_vendor = running.billable
    assert job.possibly_billed_queries == job.billable_queries == 6
    assert job.possibly_billed_usd == job.spent_usd == Decimal("0.006")
    assert 1 <= billed_by_vendor <= 6


def test_the_service_counts_timeouts_against_the_tenant_and_shows_them_in_the_job(tmp_path: Path) -> None:
    running = emulator("aws", SLOW)
    with running as endpoint:
        limits = VendorLimits(concurrency=4, request_timeout_s=0.2)
        config = service_config(tmp_path, endpoint, limits=limits, caps={"carol": {"max_queries": 40}})
        with ServerThread(create_app(config)) as base, client(base, "carol") as api:
            answer = api.post(
                "/v1/certify", params={"n": 20}, content=solid_png(), headers={"Content-Type": "image/png"}
            )
            job = api.get(answer.headers["Location"]).json()
            budget = api.get("/v1/budget").json()
        assert running.wait_idle()
        billed_by_vendor = running.billable
    spend = job["spend"]
    assert spend["possibly_billed_queries"] == spend["billable_queries"] >= billed_by_vendor >= 1
    assert budget["spent"]["billable_queries"] == spend["billable_queries"] <= 40


def test_on_ray_requests_cut_off_by_the_timeout_count_against_the_cap(cluster: str, tmp_path: Path) -> None:
    # Each query actor's vendor bills a request as it arrives, then answers after 0.5 s; the
    # driver gives up after 0.1 s (cancelling the call on the worker) and retries.
    ledger = tmp_path / "vendor-ledger.txt"
    vendor = FaultyVendor(latency_s=0.5, bill_on_receipt=True, ledger_file=ledger)
    spec = _on_ray(
        tmp_path,
        "slow-ray",
        # one image's procedure (9 queries) fits the cap: a fixed job that cannot pay for one is refused
        settings=CertificationSettings(vendor="fake", sigma=0.25, n=8, alpha=0.01, seed=1),
        limits=VendorLimits(concurrency=4, request_timeout_s=0.1),
        retry=RetryPolicy(max_attempts=3, backoff_base_s=0.001, backoff_max_s=0.002),
        max_queries=12,
    )
    report = _run(spec, vendor, _images(1))
    paid = sum(_paid(ledger).values())
    assert 1 <= paid <= report.budget.possibly_billed.queries <= report.budget.spent.queries <= 12
    assert report.budget_exhausted
