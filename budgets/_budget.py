"""Caps on a job's spending, in money and in billable queries, enforced before anything is sent.

The protocol for every query (one image sent in one attempt)::

    reservation = budget.reserve(price.micro_usd_per_image)   # BudgetExceeded: stop cleanly
    try:
        await adapter.query(...)
        outcome = "ok"
    except VendorError as exc:
        outcome = exc.outcome
    budget.settle(reservation, billed=price.bills(outcome))

``release`` is for a reservation whose query was never sent. A query that reached the vendor
but whose answer we stopped waiting for (our timeout) is settled with ``settle_possibly_billed``:
it counts as spent against every cap, as the vendor may have done and billed the work, and is
tallied apart (``possibly_billed``) so that reports can tell it from a known charge.

A reservation holds the worst case until it is settled, so whatever the interleaving of
concurrent queries, spent + reserved never passes a cap and spent alone never can.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

from apiwrap.budgets._errors import BudgetExceeded, ReservationError
from apiwrap.budgets._money import format_usd, from_micro_usd, to_micro_usd

__all__ = ["Budget", "BudgetSnapshot", "Headroom", "Reservation", "Tally"]


@dataclass(frozen=True, slots=True)
class Reservation:
    """A claim on a budget for ``queries`` images costing ``cost_micro_usd`` together."""

    id: int
    cost_micro_usd: int
    queries: int


@dataclass(frozen=True, slots=True)
class Tally:
    """Money and billable queries, both counted."""

    micro_usd: int
    queries: int

    @property
    def usd(self) -> Decimal:
        return from_micro_usd(self.micro_usd)


@dataclass(frozen=True, slots=True)
class Headroom:
    """What may still be reserved; ``None`` where that dimension has no cap."""

    micro_usd: int | None
    queries: int | None

    @property
    def usd(self) -> Decimal | None:
        return None if self.micro_usd is None else from_micro_usd(self.micro_usd)


@dataclass(frozen=True, slots=True)
class BudgetSnapshot:
    """A consistent picture of a budget at one instant, for reports and the journal."""

    max_micro_usd: int | None
    max_queries: int | None
    #: Everything counted against the caps: known charges and possibly billed attempts.
    spent: Tally
    reserved: Tally
    #: The part of ``spent`` whose answer never came back (timed out): perhaps not charged.
    possibly_billed: Tally = Tally(0, 0)

    @property
    def billed(self) -> Tally:
        """The part of ``spent`` that the vendor's answers say was charged."""
        return Tally(
            self.spent.micro_usd - self.possibly_billed.micro_usd,
            self.spent.queries - self.possibly_billed.queries,
        )

    @property
    def spent_usd(self) -> Decimal:
        return self.spent.usd

    @property
    def remaining(self) -> Headroom:
        def left(cap: int | None, used: int) -> int | None:
            # a resumed job may already be past a cap lowered since; headroom is then 0, not negative
            return None if cap is None else max(0, cap - used)

        return Headroom(
            left(self.max_micro_usd, self.spent.micro_usd + self.reserved.micro_usd),
            left(self.max_queries, self.spent.queries + self.reserved.queries),
        )

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) pairs for a two-column table."""
        remaining = self.remaining
        cap_usd = "none" if self.max_micro_usd is None else format_usd(self.max_micro_usd)
        cap_queries = "none" if self.max_queries is None else f"{self.max_queries:,}"
        possibly = self.possibly_billed
        unsure = f", {possibly.queries:,} possibly billed" if possibly.queries else ""
        return [
            (
                "spent",
                f"{format_usd(self.spent.micro_usd)} ({self.spent.queries:,} billable queries{unsure})",
            ),
            ("reserved", f"{format_usd(self.reserved.micro_usd)} ({self.reserved.queries:,} queries)"),
            ("cap", f"{cap_usd}, {cap_queries} billable queries"),
            (
                "remaining",
                f"{'unlimited' if remaining.micro_usd is None else format_usd(remaining.micro_usd)}, "
                f"{'unlimited' if remaining.queries is None else f'{remaining.queries:,}'} queries",
            ),
        ]

    def __str__(self) -> str:
        return "; ".join(f"{label} {value}" for label, value in self.rows())


class Budget:
    """A job's caps and what has been spent and reserved against them.

    ``max_usd`` caps money (rounded down to whole micro-dollars); ``max_queries`` caps *billable*
    queries, the ones that cost money: a throttled attempt that is not billed does not use it
    up. ``spent_micro_usd`` and ``spent_queries`` start a resumed job from what its journal
    says was already paid, ``possibly_billed_micro_usd`` and ``possibly_billed_queries`` the part
    of it whose answers never came back.

    Every method is atomic under one lock, so a budget may be shared by asyncio tasks and by
    threads alike; no method blocks beyond that lock or awaits.
    """

    def __init__(
        self,
        max_usd: Decimal | str | int | float | None = None,
        max_queries: int | None = None,
        spent_micro_usd: int = 0,
        spent_queries: int = 0,
        possibly_billed_micro_usd: int = 0,
        possibly_billed_queries: int = 0,
    ) -> None:
        for name, value in (
            ("spent_micro_usd", spent_micro_usd),
            ("spent_queries", spent_queries),
            ("possibly_billed_micro_usd", possibly_billed_micro_usd),
            ("possibly_billed_queries", possibly_billed_queries),
        ):
            _check_count(name, value)
        if possibly_billed_micro_usd > spent_micro_usd or possibly_billed_queries > spent_queries:
            raise ValueError("possibly billed spend is part of the spend: it cannot exceed it")
        if max_queries is not None:
            _check_count("max_queries", max_queries)
        self._max_micro_usd = None if max_usd is None else to_micro_usd(max_usd, ROUND_FLOOR)
        self._max_queries = max_queries
        self._spent_micro_usd = spent_micro_usd
        self._spent_queries = spent_queries
        self._possibly_billed_micro_usd = possibly_billed_micro_usd
        self._possibly_billed_queries = possibly_billed_queries
        self._reserved_micro_usd = 0
        self._reserved_queries = 0
        self._open: dict[int, Reservation] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    @property
    def max_usd(self) -> Decimal | None:
        return None if self._max_micro_usd is None else from_micro_usd(self._max_micro_usd)

    @property
    def max_queries(self) -> int | None:
        return self._max_queries

    def reserve(self, cost_micro_usd: int, queries: int = 1) -> Reservation:
        """Hold ``cost_micro_usd`` and ``queries`` before sending; :class:`BudgetExceeded` if they do not fit.

        Nothing is held when it raises. The check is spent + reserved + this <= cap, for each cap.
        """
        _check_count("cost_micro_usd", cost_micro_usd)
        _check_count("queries", queries)
        if queries == 0:
            raise ValueError("a reservation is for at least one query")
        with self._lock:
            if self._max_micro_usd is not None and (
                self._spent_micro_usd + self._reserved_micro_usd + cost_micro_usd > self._max_micro_usd
            ):
                raise BudgetExceeded(
                    f"money cap reached: spent {format_usd(self._spent_micro_usd)}, "
                    f"reserved {format_usd(self._reserved_micro_usd)}, "
                    f"this reservation {format_usd(cost_micro_usd)}, cap {format_usd(self._max_micro_usd)}",
                    cap="usd",
                    limit=self._max_micro_usd,
                    spent=self._spent_micro_usd,
                    reserved=self._reserved_micro_usd,
                    requested=cost_micro_usd,
                )
            if self._max_queries is not None and (
                self._spent_queries + self._reserved_queries + queries > self._max_queries
            ):
                raise BudgetExceeded(
                    f"query cap reached: spent {self._spent_queries:,} billable queries, "
                    f"reserved {self._reserved_queries:,}, this reservation {queries:,}, "
                    f"cap {self._max_queries:,}",
                    cap="queries",
                    limit=self._max_queries,
                    spent=self._spent_queries,
                    reserved=self._reserved_queries,
                    requested=queries,
                )
            reservation = Reservation(next(self._ids), cost_micro_usd, queries)
            self._open[reservation.id] = reservation
            self._reserved_micro_usd += cost_micro_usd
            self._reserved_queries += queries
            return reservation

    def settle(self, reservation: Reservation, billed: bool) -> int:
        """Close a reservation after the vendor answered; returns the micro-dollars now spent for it.

        Billed: the reservation moves to spent. Not billed: it is released. A reservation is
        closed once; a second ``settle``, ``settle_possibly_billed`` or ``release`` raises
        :class:`ReservationError`.
        """
        with self._lock:
            self._close(reservation)
            if not billed:
                return 0
            self._spent_micro_usd += reservation.cost_micro_usd
            self._spent_queries += reservation.queries
            return reservation.cost_micro_usd

    def settle_possibly_billed(self, reservation: Reservation) -> int:
        """Close a reservation whose request got no answer in time; returns the micro-dollars counted.

        It moves to spent, as a billed one does (the vendor may have served it: every cap must
        hold if it did), and is also tallied as possibly billed.
        """
        with self._lock:
            self._close(reservation)
            self._spent_micro_usd += reservation.cost_micro_usd
            self._spent_queries += reservation.queries
            self._possibly_billed_micro_usd += reservation.cost_micro_usd
            self._possibly_billed_queries += reservation.queries
            return reservation.cost_micro_usd

    def _close(self, reservation: Reservation) -> None:
        if self._open.get(reservation.id) is not reservation:
            raise ReservationError(
                f"reservation {reservation.id} is not open in this budget (settled, released, or foreign)"
            )
        del self._open[reservation.id]
        self._reserved_micro_usd -= reservation.cost_micro_usd
        self._reserved_queries -= reservation.queries

    def require(self, cost_micro_usd: int, queries: int) -> None:
        """Raise :class:`BudgetExceeded` unless ``queries`` costing ``cost_micro_usd`` fit now; holds nothing.

        The check before a job whose queries are known in advance (a fixed design): refused
        with the budget's own figures instead of buying votes that can never make a certificate.
        """
        self.release(self.reserve(cost_micro_usd, queries))

    def release(self, reservation: Reservation) -> None:
        """Give back a reservation whose query was never sent."""
        self.settle(reservation, billed=False)

    def snapshot(self) -> BudgetSnapshot:
        with self._lock:
            return BudgetSnapshot(
                self._max_micro_usd,
                self._max_queries,
                Tally(self._spent_micro_usd, self._spent_queries),
                Tally(self._reserved_micro_usd, self._reserved_queries),
                Tally(self._possibly_billed_micro_usd, self._possibly_billed_queries),
            )

    @property
    def spent_micro_usd(self) -> int:
        return self.snapshot().spent.micro_usd

    @property
    def spent_usd(self) -> Decimal:
        return self.snapshot().spent_usd

    @property
    def spent_queries(self) -> int:
        return self.snapshot().spent.queries

    @property
    def reserved(self) -> Tally:
        return self.snapshot().reserved

    @property
    def remaining(self) -> Headroom:
        return self.snapshot().remaining

    def __repr__(self) -> str:
        return f"Budget({self.snapshot()})"


def _check_count(name: str, value: int) -> None:
    # bool is an int subclass; passing True as a count is always a mistake
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
