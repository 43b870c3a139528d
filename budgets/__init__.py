"""Money and query accounting for vendor queries (knows prices, nothing of images).

- :class:`PriceTable` / :class:`Price`: what each vendor charges per image and for which
  attempt outcomes; defaults from the vendor reference, overridable from a TOML file.
- :class:`Budget`: caps per job in money and in billable queries. Each query reserves its
  price before it is sent and settles after (billed, unbilled, or possibly billed when no
  answer came back in time), so no interleaving of concurrent queries can pass a cap.
- :func:`estimate`: expected and worst-case cost of a job before it runs.
- Money is integer micro-dollars inside; :func:`to_micro_usd`, :func:`from_micro_usd`,
  :func:`parse_usd` and :func:`format_usd` convert at the edges.

Errors: ``BudgetError`` > ``BudgetExceeded`` | ``PriceConfigError`` | ``ReservationError``.
"""

from __future__ import annotations

from apiwrap.budgets._budget import Budget, BudgetSnapshot, Headroom, Reservation, Tally
from apiwrap.budgets._errors import BudgetError, BudgetExceeded, PriceConfigError, ReservationError
from apiwrap.budgets._estimate import Estimate, estimate
from apiwrap.budgets._money import MICRO_USD_PER_USD, format_usd, from_micro_usd, parse_usd, to_micro_usd
from apiwrap.budgets._prices import (
    DEFAULT_BILLABLE,
    OUTCOMES,
    POSSIBLY_BILLED,
    RETRIED_OUTCOMES,
    Price,
    PriceTable,
    Settlement,
)

__all__ = [
    "DEFAULT_BILLABLE",
    "MICRO_USD_PER_USD",
    "OUTCOMES",
    "POSSIBLY_BILLED",
    "RETRIED_OUTCOMES",
    "Budget",
    "BudgetError",
    "BudgetExceeded",
    "BudgetSnapshot",
    "Estimate",
    "Headroom",
    "Price",
    "PriceConfigError",
    "PriceTable",
    "Reservation",
    "ReservationError",
    "Settlement",
    "Tally",
    "estimate",
    "format_usd",
    "from_micro_usd",
    "parse_usd",
    "to_micro_usd",
]
