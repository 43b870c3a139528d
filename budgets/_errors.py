"""The budget error tree.

    BudgetError
    ├── BudgetExceeded      a reservation would take the job past a cap; stop cleanly
    ├── PriceConfigError    a price file or price table is wrong (file and key named)
    └── ReservationError    a reservation was settled twice or belongs to another budget

``BudgetExceeded`` is the only one a correct engine meets in normal operation; the other two
point at a configuration mistake or a bug in the caller.
"""

from __future__ import annotations

from typing import Literal

from apiwrap.errors import ApiwrapError

__all__ = ["BudgetError", "BudgetExceeded", "PriceConfigError", "ReservationError"]


class BudgetError(ApiwrapError):
    """Base of every error raised by :mod:`apiwrap.budgets`."""


class BudgetExceeded(BudgetError):
    """Reserving would let spent + reserved pass a cap; nothing was reserved.

    When :class:`~budgets.Budget` raises it, the attributes give the cap (``"usd"`` or
    ``"queries"``) and the figures in that cap's unit (micro-dollars or queries), so that a
    report or an HTTP 402 body needs no parsing of the message. Raised by a caller with a
    message alone (a job that stops before an image starts), they are ``None``.
    """

    def __init__(
        self,
        message: str,
        *,
        cap: Literal["usd", "queries"] | None = None,
        limit: int | None = None,
        spent: int | None = None,
        reserved: int | None = None,
        requested: int | None = None,
    ) -> None:
        super().__init__(message)
        self.cap = cap
        self.limit = limit
        self.spent = spent
        self.reserved = reserved
        self.requested = requested


class PriceConfigError(BudgetError):
    """A price is missing or a price file is malformed."""


class ReservationError(BudgetError):
    """A reservation is not open in this budget (already settled or released, or foreign)."""
