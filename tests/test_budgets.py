"""Behaviour of the budgets package: money arithmetic, prices, caps under concurrency, estimates."""

from __future__ import annotations

import asyncio
import random
import sys
import threading
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path

import pytest

from apiwrap.adapters import errors as vendor_errors
from apiwrap.budgets import (
    DEFAULT_BILLABLE,
    OUTCOMES,
    RETRIED_OUTCOMES,
    Budget,
    BudgetError,
    BudgetExceeded,
    Price,
    PriceConfigError,
    PriceTable,
    ReservationError,
    estimate,
    format_usd,
    from_micro_usd,
    parse_usd,
    to_micro_usd,
)

# --- money -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "micro"),
    [("1.25", 1_250_000), (" $0.0015 ", 1_500), (Decimal("3"), 3_000_000), (7, 7_000_000), (0.1, 100_000)],
)
def test_to_micro_usd_is_exact(amount: object, micro: int) -> None:
    assert to_micro_usd(amount) == micro  # type: ignore[arg-type]


def test_sub_micro_amounts_need_an_explicit_rounding() -> None:
    with pytest.raises(ValueError, match="whole number of micro-dollars"):
        to_micro_usd("0.0000015")
    assert to_micro_usd("0.0000015", ROUND_CEILING) == 2
    assert to_micro_usd("0.0000015", ROUND_FLOOR) == 1


@pytest.mark.parametrize("bad", ["-1", "NaN", "Infinity", "abc", "", True, None, float("inf"), [1]])
def test_parse_usd_rejects_what_is_not_money(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_usd(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("micro", "text"),
    [(0, "$0.00"), (1, "$0.000001"), (1_500, "$0.0015"), (5_000_000, "$5.00"), (1_001_500_000, "$1,001.50")],
)
def test_format_usd(micro: int, text: str) -> None:
    assert format_usd(micro) == text


def test_from_micro_usd_round_trips() -> None:
    assert from_micro_usd(1_500) == Decimal("0.0015")
    assert to_micro_usd(from_micro_usd(123_456_789)) == 123_456_789


# --- prices ------------------------------------------------------------------------------------


def test_default_prices_follow_the_vendor_reference() -> None:
    table = PriceTable.default()
    per_image = {vendor: table.cost_micro_usd(vendor, 1) for vendor in table.vendors}
    # $/1000 images from vendors.md, divided by 1000 by hand: $1.00 -> $0.001 = 1000 micro-dollars
    assert per_image == {"aws": 1000, "google": 1500, "azure": 1000, "clarifai": 1200, "http": 0, "local": 0}
    assert all(table.price(v).billable_outcomes == {"ok", "malformed", "lost"} for v in table.vendors)
    assert all(table.price(v).free_images == 0 for v in table.vendors)


def test_outcomes_match_the_adapter_error_tree() -> None:
    errors = [
        vendor_errors.Throttled("x"),
        vendor_errors.Transient("x"),
        vendor_errors.MalformedAnswer("x"),
        vendor_errors.AnswerLost("x"),
        vendor_errors.TimedOut("x"),
        vendor_errors.Rejected("x"),
        vendor_errors.AuthError("x"),
        vendor_errors.Fatal("x"),
    ]
    assert {e.outcome for e in errors} | {"ok"} == OUTCOMES
    assert {e.outcome for e in errors if e.retryable} == RETRIED_OUTCOMES


def test_billable_outcomes() -> None:
    price = PriceTable.default().price("aws")
    assert {outcome for outcome in OUTCOMES if price.bills(outcome)} == {"ok", "malformed", "lost"}
    with pytest.raises(ValueError, match="unknown outcome 'error'"):
        price.bills("error")


def test_per_image_price_rounds_up_to_whole_micro_dollars() -> None:
    # $1.2345 per 1000 = $0.0012345 per image = 1234.5 micro-dollars: never reserve less than that
    price = Price(Decimal("1.2345"))
    assert price.micro_usd_per_image == 1235
    assert price.cost_micro_usd(1000) == 1_235_000


def test_free_images_are_free_once_per_job() -> None:
    price = Price(Decimal("1.50"), free_images=1000)
    assert price.cost_micro_usd(999) == 0
    assert price.cost_micro_usd(1500) == 500 * 1500
    assert price.cost_micro_usd(10, already_billed=995) == 5 * 1500
    assert price.cost_micro_usd(10, already_billed=5000) == 10 * 1500
    with pytest.raises(ValueError):
        price.cost_micro_usd(-1)


def test_price_validates_its_fields() -> None:
    with pytest.raises(PriceConfigError, match="usd_per_1000_images"):
        Price(Decimal("-1"))
    with pytest.raises(PriceConfigError, match="unknown outcome"):
        Price(Decimal("1"), frozenset({"billed"}))
    with pytest.raises(PriceConfigError, match="free_images"):
        Price(Decimal("1"), free_images=-1)


def test_unknown_vendor_is_a_clear_error() -> None:
    with pytest.raises(PriceConfigError, match=r"no price for vendor 'acme'.*\[prices\.acme\]"):
        PriceTable.default().price("acme")
    with pytest.raises(PriceConfigError):
        PriceTable.default().cost_micro_usd("acme", 1)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prices.toml"
    path.write_text(text)
    return path


def test_toml_overrides_per_vendor(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
        [engine]                      # other readers' tables are left alone
        concurrency = 8

        [prices.aws]
        usd_per_1000 = "1.25"
        billable = ["ok"]

        [prices.google]
        free_images = 1000

        [prices.http]
        usd_per_1000 = 2              # TOML integers and floats are dollars too

        [prices.acme]
        usd_per_1000 = 0.8
        """,
    )
    table = PriceTable.load(path)
    assert table.price("aws") == Price(Decimal("1.25"), frozenset({"ok"}))
    assert table.price("google") == Price(Decimal("1.50"), DEFAULT_BILLABLE, free_images=1000)
    assert table.cost_micro_usd("http", 1) == 2000
    assert table.price("acme") == Price(Decimal("0.8"))
    assert table.price("azure") == PriceTable.default().price("azure")


def test_toml_overrides_a_given_base(tmp_path: Path) -> None:
    base = PriceTable({"acme": Price(Decimal("3"), frozenset({"ok"}))})
    table = PriceTable.load(_write(tmp_path, "[prices.acme]\nfree_images = 10\n"), base=base)
    assert table.vendors == ("acme",)
    assert table.price("acme") == Price(Decimal("3"), frozenset({"ok"}), free_images=10)


def test_toml_without_prices_is_the_base(tmp_path: Path) -> None:
    assert PriceTable.load(_write(tmp_path, "")) == PriceTable.default()


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[prices.aws\n", "not valid TOML"),
        ("prices = 3\n", "prices:"),
        ("[prices]\naws = 3\n", "prices.aws:"),
        ('[prices.aws]\nusd_per_100 = "1"\n', "prices.aws.usd_per_100: unknown key"),
        ('[prices.aws]\nusd_per_1000 = "-1"\n', "prices.aws.usd_per_1000"),
        ('[prices.aws]\nusd_per_1000 = "one dollar"\n', "prices.aws.usd_per_1000"),
        ("[prices.aws]\nusd_per_1000 = nan\n", "prices.aws.usd_per_1000"),
        ("[prices.aws]\nusd_per_1000 = true\n", "prices.aws.usd_per_1000"),
        ('[prices.aws]\nbillable = ["ok", "billed"]\n', "prices.aws.billable: unknown outcome(s) billed"),
        ('[prices.aws]\nbillable = "ok"\n', "prices.aws.billable"),
        ("[prices.aws]\nfree_images = -1\n", "prices.aws.free_images"),
        ('[prices.aws]\nfree_images = "10"\n', "prices.aws.free_images"),
        ("[prices.gogle]\nfree_images = 10\n", "prices.gogle.usd_per_1000: required"),
    ],
)
def test_bad_toml_names_the_file_and_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(PriceConfigError) as info:
        PriceTable.load(path)
    assert str(path) in str(info.value)
    assert key in str(info.value)


def test_missing_price_file(tmp_path: Path) -> None:
    with pytest.raises(PriceConfigError, match="cannot read price file"):
        PriceTable.load(tmp_path / "absent.toml")


# --- budget accounting -------------------------------------------------------------------------


def test_settle_billed_spends_and_unbilled_releases() -> None:
    budget = Budget(max_usd=Decimal("1"))
    a, b, c = budget.reserve(1000), budget.reserve(1500), budget.reserve(1200, queries=2)
    assert (budget.reserved.micro_usd, budget.reserved.queries) == (3700, 4)
    assert budget.remaining.micro_usd == 1_000_000 - 3700
    assert budget.settle(a, billed=True) == 1000
    assert budget.settle(b, billed=False) == 0
    budget.release(c)
    assert (budget.spent_micro_usd, budget.spent_queries) == (1000, 1)
    assert budget.spent_usd == Decimal("0.001")
    assert (budget.reserved.micro_usd, budget.reserved.queries) == (0, 0)
    assert budget.remaining.usd == Decimal("0.999")
    assert budget.remaining.queries is None


def test_money_cap_is_reachable_exactly_and_never_passed() -> None:
    budget = Budget(max_usd="0.003")
    first = budget.reserve(1500)
    budget.reserve(1500)
    with pytest.raises(
        BudgetExceeded, match=r"money cap.*spent \$0\.00, reserved \$0\.003.*cap \$0\.003"
    ) as info:
        budget.reserve(1)
    assert (info.value.cap, info.value.limit, info.value.reserved, info.value.requested) == (
        "usd",
        3000,
        3000,
        1,
    )
    assert budget.reserved.micro_usd == 3000  # the refused reservation holds nothing
    budget.settle(first, billed=False)
    budget.reserve(1500)  # released money can be reserved again


def test_query_cap_counts_billable_queries_only() -> None:
    budget = Budget(max_queries=2)
    for _ in range(10):  # throttled attempts are not billed and do not use up the cap
        budget.settle(budget.reserve(0), billed=False)
    budget.settle(budget.reserve(0), billed=True)
    budget.reserve(0)
    with pytest.raises(
        BudgetExceeded, match="query cap reached: spent 1 billable queries, reserved 1"
    ) as info:
        budget.reserve(0)
    assert info.value.cap == "queries"
    with pytest.raises(BudgetExceeded):
        Budget(max_queries=3).reserve(0, queries=4)


def test_settling_twice_or_elsewhere_raises() -> None:
    budget, other = Budget(), Budget()
    reservation = budget.reserve(10)
    budget.settle(reservation, billed=True)
    with pytest.raises(ReservationError, match="not open"):
        budget.settle(reservation, billed=True)
    with pytest.raises(ReservationError):
        budget.release(reservation)
    lookalike = other.reserve(10)  # same id, other budget
    assert lookalike.id == reservation.id
    with pytest.raises(ReservationError):
        budget.settle(lookalike, billed=True)
    assert budget.spent_micro_usd == 10


def test_resume_starts_from_what_was_paid() -> None:
    budget = Budget(max_usd="1", max_queries=1000, spent_micro_usd=998_500, spent_queries=999)
    budget.settle(budget.reserve(1000), billed=True)
    assert (budget.spent_micro_usd, budget.spent_queries) == (999_500, 1000)
    with pytest.raises(BudgetExceeded):
        budget.reserve(0)  # the query cap is met, even for a free query


def test_resume_past_a_lowered_cap_allows_nothing() -> None:
    budget = Budget(max_usd="1", spent_micro_usd=2_000_000)
    assert budget.remaining.micro_usd == 0
    with pytest.raises(BudgetExceeded):
        budget.reserve(0)


def test_cap_is_rounded_down_to_whole_micro_dollars() -> None:
    assert Budget(max_usd="0.0000019").max_usd == Decimal("0.000001")
    assert Budget(max_usd=2.5).max_usd == Decimal("2.5")


@pytest.mark.parametrize(
    "call",
    [
        lambda: Budget(max_usd="-1"),
        lambda: Budget(max_queries=-1),
        lambda: Budget(spent_micro_usd=-5),
        lambda: Budget(spent_queries=True),
        lambda: Budget().reserve(-1),
        lambda: Budget().reserve(10, queries=0),
        lambda: Budget().reserve(1.5),
    ],
)
def test_bad_arguments(call: object) -> None:
    with pytest.raises(ValueError):
        call()  # type: ignore[operator]


def test_snapshot_and_report() -> None:
    budget = Budget(max_usd="5", max_queries=10, spent_micro_usd=1_000_000, spent_queries=3)
    budget.reserve(1500)
    snapshot = budget.snapshot()
    assert snapshot.spent_usd == Decimal("1")
    assert (snapshot.remaining.micro_usd, snapshot.remaining.queries) == (3_998_500, 6)
    assert dict(snapshot.rows())["remaining"] == "$3.9985, 6 queries"
    assert "cap $5.00, 10 billable queries" in str(snapshot)
    assert dict(Budget().snapshot().rows())["remaining"] == "unlimited, unlimited queries"


def test_error_tree() -> None:
    assert issubclass(BudgetExceeded, BudgetError)
    assert issubclass(PriceConfigError, BudgetError)
    assert issubclass(ReservationError, BudgetError)
    assert BudgetExceeded("stopped").cap is None  # callers may raise it with a message alone


# --- the cap under concurrency -----------------------------------------------------------------


def _check_caps(budget: Budget) -> None:
    snap = budget.snapshot()
    assert snap.max_micro_usd is not None and snap.max_queries is not None
    assert snap.spent.micro_usd + snap.reserved.micro_usd <= snap.max_micro_usd
    assert snap.spent.queries + snap.reserved.queries <= snap.max_queries


# one cap binds, the other is loose, so that each cap's check is what stops the job
BINDING = {
    "usd": {"max_usd": "0.5", "max_queries": 10**6},
    "queries": {"max_usd": "1000", "max_queries": 400},
}


@pytest.mark.parametrize("cap", sorted(BINDING))
@pytest.mark.parametrize("seed", range(2))
async def test_cap_holds_for_many_concurrent_tasks(seed: int, cap: str) -> None:
    rng = random.Random(seed)
    budget = Budget(**BINDING[cap])  # type: ignore[arg-type]
    billed_costs: list[int] = []  # kept by the test, independently of the budget
    refused = 0
    done = asyncio.Event()

    async def worker() -> None:
        nonlocal refused
        while True:
            cost = rng.choice([1000, 1200, 1500])
            try:
                reservation = budget.reserve(cost)
            except BudgetExceeded:
                refused += 1
                return
            await asyncio.sleep(rng.random() / 1000)
            if rng.random() < 0.2:
                budget.release(reservation)  # never sent
                continue
            billed = rng.random() < 0.7
            budget.settle(reservation, billed=billed)
            if billed:
                billed_costs.append(cost)

    async def monitor() -> None:
        while not done.is_set():
            _check_caps(budget)
            await asyncio.sleep(0)

    watcher = asyncio.create_task(monitor())
    async with asyncio.TaskGroup() as group:
        for _ in range(200):
            group.create_task(worker())
    done.set()
    await watcher

    assert refused == 200
    assert budget.spent_micro_usd == sum(billed_costs)
    assert budget.spent_queries == len(billed_costs)
    assert (budget.reserved.micro_usd, budget.reserved.queries) == (0, 0)
    if cap == "usd":  # the last refusal came when even the cheapest query could not fit
        assert 500_000 - 1500 < budget.spent_micro_usd <= 500_000
    else:
        assert budget.spent_queries == 400


async def test_all_billed_fills_the_cap_exactly() -> None:
    budget = Budget(max_usd="0.15", max_queries=1000)  # room for exactly 100 queries at $0.0015

    async def one(delay: float) -> bool:
        try:
            reservation = budget.reserve(1500)
        except BudgetExceeded:
            return False
        await asyncio.sleep(delay)
        budget.settle(reservation, billed=True)
        return True

    rng = random.Random(7)
    results = await asyncio.gather(*(one(rng.random() / 500) for _ in range(300)))
    assert results.count(True) == 100
    assert budget.spent_micro_usd == 150_000 and budget.spent_queries == 100


@pytest.mark.parametrize("cap", sorted(BINDING))
def test_cap_holds_across_threads(cap: str) -> None:
    # switch threads as often as possible, so that reserve/settle calls really interleave
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    budget = Budget(**BINDING[cap])  # type: ignore[arg-type]
    billed = [0] * 8
    stop = threading.Event()
    violations: list[str] = []

    def worker(index: int) -> None:
        rng = random.Random(index)
        held = []
        while True:
            try:
                held.append((budget.reserve(rng.choice([1000, 1200, 1500])), rng.random() < 0.6))
            except BudgetExceeded:
                break
            if len(held) > rng.randrange(1, 5):  # hold a few reservations open at once
                reservation, is_billed = held.pop(rng.randrange(len(held)))
                billed[index] += budget.settle(reservation, billed=is_billed)
        for reservation, is_billed in held:
            billed[index] += budget.settle(reservation, billed=is_billed)

    def monitor() -> None:
        while not stop.is_set():
            try:
                _check_caps(budget)
            except AssertionError as exc:
                violations.append(str(exc))

    try:
        watcher = threading.Thread(target=monitor)
        watcher.start()
        workers = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
        stop.set()
        watcher.join()
    finally:
        sys.setswitchinterval(previous)

    assert not violations
    assert budget.spent_micro_usd == sum(billed)
    assert (budget.reserved.micro_usd, budget.reserved.queries) == (0, 0)
    _check_caps(budget)


# --- estimate ----------------------------------------------------------------------------------


def test_estimate_aws_certification_job() -> None:
    # 10 images, n0=100 + n=100,000 votes each, 5 attempts per query, $1.00 per 1000 images:
    # 1,001,000 queries cost $1,001.00; "malformed" is billed and retried, so at worst 5x: $5,005.00
    result = estimate(PriceTable.default(), "aws", images=10, queries_per_image=100_100, max_attempts=5)
    assert result.queries == 1_001_000
    assert (result.expected_billable, result.worst_case_billable) == (1_001_000, 5_005_000)
    assert (result.expected_usd, result.worst_case_usd) == (Decimal("1001"), Decimal("5005"))
    rows = dict(result.rows())
    assert rows["expected cost"] == "$1,001.00 (1,001,000 billed)"
    assert rows["worst case"] == "$5,005.00 (5,005,000 billed)"
    assert "$5,005.00" in str(result)


@pytest.mark.parametrize(
    ("billable", "expected_usd", "worst_usd"),
    [
        # google, 3 images x 1000 queries x 4 attempts at $0.0015 a query
        ({"ok", "malformed"}, "4.5", "18"),
        # any attempt may time out, be retried and still be billed (possibly billed)
        ({"ok"}, "4.5", "18"),
        ({"ok", "throttled"}, "4.5", "18"),
        ({"rejected"}, "0", "18"),
        (set(), "0", "0"),
    ],
)
def test_estimate_depends_on_billable_outcomes(billable: set[str], expected_usd: str, worst_usd: str) -> None:
    table = PriceTable({"google": Price(Decimal("1.50"), frozenset(billable))})
    result = estimate(table, "google", images=3, queries_per_image=1000, max_attempts=4)
    assert (result.expected_usd, result.worst_case_usd) == (Decimal(expected_usd), Decimal(worst_usd))


def test_estimate_counts_free_images_once() -> None:
    table = PriceTable({"google": Price(Decimal("1.50"), free_images=1000)})
    result = estimate(table, "google", images=2, queries_per_image=1000, max_attempts=3)
    # (2000 - 1000) x $0.0015 = $1.50; worst (6000 - 1000) x $0.0015 = $7.50
    assert (result.expected_usd, result.worst_case_usd) == (Decimal("1.5"), Decimal("7.5"))
    assert "first 1,000 free" in dict(result.rows())["price"]


def test_estimate_free_vendor_and_bad_arguments() -> None:
    table = PriceTable.default()
    assert estimate(table, "local", 100, 1000, 5).worst_case_micro_usd == 0
    with pytest.raises(PriceConfigError):
        estimate(table, "acme", 1, 1, 1)
    for images, per_image, attempts in [(-1, 1, 1), (1, -1, 1), (1, 1, 0)]:
        with pytest.raises(ValueError):
            estimate(table, "aws", images, per_image, attempts)
