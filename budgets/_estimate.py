"""The cost of a job before it runs: what it should cost, and the most it can cost.

A job sends ``images * queries_per_image`` queries; each query is tried at most
``max_attempts`` times (the first try included).

- Expected: every query answers on its first attempt, so one ``"ok"`` attempt per query.
- Worst case: every attempt of every query may be billed, whenever the vendor bills any outcome:
  an attempt can time out on our side, be retried, and still be billed (possibly billed), and
  billable retried outcomes (by default ``"malformed"``: a 200 whose body we could not parse)
  are billed on each attempt.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from apiwrap.budgets._money import format_usd, from_micro_usd
from apiwrap.budgets._prices import Price, PriceTable

__all__ = ["Estimate", "estimate"]


@dataclass(frozen=True, slots=True)
class Estimate:
    """The arithmetic behind ``apiwrap estimate``; all money in micro-dollars."""

    vendor: str
    price: Price
    images: int
    queries_per_image: int
    max_attempts: int
    queries: int
    expected_billable: int
    worst_case_billable: int
    expected_micro_usd: int
    worst_case_micro_usd: int

    @property
    def expected_usd(self) -> Decimal:
        return from_micro_usd(self.expected_micro_usd)

    @property
    def worst_case_usd(self) -> Decimal:
        return from_micro_usd(self.worst_case_micro_usd)

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) pairs, e.g. for a two-column ``rich`` table."""
        return [
            ("vendor", self.vendor),
            ("price", str(self.price)),
            ("billable outcomes", ", ".join(sorted(self.price.billable_outcomes)) or "none"),
            ("images", f"{self.images:,}"),
            ("queries per image", f"{self.queries_per_image:,}"),
            ("queries", f"{self.queries:,}"),
            ("max attempts per query", f"{self.max_attempts:,}"),
            ("expected cost", f"{format_usd(self.expected_micro_usd)} ({self.expected_billable:,} billed)"),
            ("worst case", f"{format_usd(self.worst_case_micro_usd)} ({self.worst_case_billable:,} billed)"),
        ]

    def __str__(self) -> str:
        rows = self.rows()
        width = max(len(label) for label, _ in rows)
        return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def estimate(
    table: PriceTable, vendor: str, images: int, queries_per_image: int, max_attempts: int
) -> Estimate:
    """Expected and worst-case cost of certifying ``images`` images at ``vendor``."""
    for name, value in (("images", images), ("queries_per_image", queries_per_image)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
    price = table.price(vendor)
    queries = images * queries_per_image
    expected = queries if price.bills("ok") else 0
    # Every attempt may time out, be retried and still be billed (possibly billed): a vendor that
    # bills any outcome may bill each attempt.
    worst = queries * max_attempts if price.billable_outcomes else 0
    return Estimate(
        vendor=vendor,
        price=price,
        images=images,
        queries_per_image=queries_per_image,
        max_attempts=max_attempts,
        queries=queries,
        expected_billable=expected,
        worst_case_billable=worst,
        expected_micro_usd=price.cost_micro_usd(expected),
        worst_case_micro_usd=price.cost_micro_usd(worst),
    )
