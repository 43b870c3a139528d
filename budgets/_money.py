"""Money as integer micro-dollars, and the conversions to and from USD for people.

All accounting is done in ``int`` micro-dollars (1 USD = 1,000,000) so that sums of many
small prices are exact; :class:`~decimal.Decimal` appears only at the edges (config files,
command-line flags, reports).
"""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal, InvalidOperation

from apiwrap.errors import ConfigurationError

__all__ = ["MICRO_USD_PER_USD", "format_usd", "from_micro_usd", "parse_usd", "to_micro_usd"]

MICRO_USD_PER_USD = 1_000_000

_MICRO = Decimal(MICRO_USD_PER_USD)


def parse_usd(amount: Decimal | str | int | float) -> Decimal:
    """A non-negative, finite dollar amount as an exact :class:`~decimal.Decimal`.

    Strings may carry a leading ``$`` and surrounding spaces (``" $1.25 "``). A float is read
    through its shortest ``repr`` (``0.1`` -> ``Decimal("0.1")``), which is what the user typed,
    rather than through its binary value (``0.1000000000000000055...``).

    Raises :class:`ValueError` for anything else, including negatives, NaN and infinity.
    """
    if isinstance(amount, bool):  # bool is an int; True dollars is always a mistake
        raise ConfigurationError(f"not an amount of money: {amount!r}")
    if isinstance(amount, float):
        amount = repr(amount)
    if isinstance(amount, str):
        text = amount.strip().removeprefix("$").strip()
        try:
            value = Decimal(text)
        except InvalidOperation:
            raise ConfigurationError(f"not an amount of money: {amount!r}") from None
    elif isinstance(amount, Decimal | int):
        value = Decimal(amount)
    else:
        raise ConfigurationError(f"not an amount of money: {amount!r}")
    if not value.is_finite() or value < 0:
        raise ConfigurationError(f"an amount of money must be finite and >= 0, got {amount!r}")
    return value


def to_micro_usd(amount: Decimal | str | int | float, rounding: str | None = None) -> int:
    """Convert dollars to integer micro-dollars.

    With ``rounding=None`` the amount must be a whole number of micro-dollars, else
    :class:`ValueError`; pass :data:`decimal.ROUND_CEILING` for a price (never under-reserve) or
    :data:`decimal.ROUND_FLOOR` for a cap (never overspend).
    """
    micro = parse_usd(amount) * _MICRO
    whole = micro.to_integral_value(rounding=rounding or ROUND_FLOOR)
    if rounding is None and whole != micro:
        raise ConfigurationError(f"{amount!r} is not a whole number of micro-dollars; choose a rounding")
    return int(whole)


def from_micro_usd(micro_usd: int) -> Decimal:
    """Micro-dollars as exact dollars with six decimal places (``1500`` -> ``Decimal("0.001500")``)."""
    return Decimal(micro_usd).scaleb(-6)


def format_usd(micro_usd: int) -> str:
    """Dollars for people: ``$1,001.50``, with sub-cent digits only when they are not zero (``$0.0015``)."""
    whole, _, fraction = f"{from_micro_usd(micro_usd):,f}".partition(".")
    return f"${whole}.{fraction.rstrip('0').ljust(2, '0')}"
