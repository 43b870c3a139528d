"""What each vendor charges per image, and which outcomes of an attempt it charges for.

A price file (TOML) overrides the defaults per vendor; every other top-level table in the
file is left to its other readers::

    [prices.aws]
    usd_per_1000 = "1.25"               # a string keeps the price exact; numbers are accepted
    billable = ["ok", "malformed", "lost"]  # outcomes the vendor charges for
    free_images = 0                     # images at the start of the job that cost nothing

    [prices.myvendor]                   # a vendor with no default must give usd_per_1000
    usd_per_1000 = "0.80"
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any, Literal

from apiwrap.budgets._errors import PriceConfigError
from apiwrap.budgets._money import format_usd, parse_usd, to_micro_usd

__all__ = [
    "DEFAULT_BILLABLE",
    "OUTCOMES",
    "POSSIBLY_BILLED",
    "RETRIED_OUTCOMES",
    "Price",
    "PriceTable",
    "Settlement",
]

#: Every outcome the engine records for one attempt (``apiwrap.adapters.errors.VendorError.outcome``,
#: plus ``"ok"`` for an answer, an empty label list included).
OUTCOMES = frozenset(
    {"ok", "throttled", "transient", "malformed", "lost", "timeout", "rejected", "auth", "fatal"}
)

#: Outcomes after which the engine sends the same bytes again (``VendorError.retryable``);
#: only these can make one query cost more than one attempt.
RETRIED_OUTCOMES = frozenset({"throttled", "transient", "malformed", "lost", "timeout"})

#: Outcomes whose billing the client cannot know: the request left, and we stopped waiting for
#: its answer, but the vendor may still have done the work and billed it. They are no price
#: file's choice: they count against every cap whenever the vendor bills anything at all.
POSSIBLY_BILLED = frozenset({"timeout"})

#: How an attempt is settled against a budget (:meth:`Price.settlement`).
Settlement = Literal["billed", "unbilled", "possibly billed"]

#: An answer is billed, and so is a 200 whose body we could not parse: the vendor did the work.
#: An answer lost with the worker that sent it counts as billed: the vendor may have done the work.
DEFAULT_BILLABLE = frozenset({"ok", "malformed", "lost"})


@dataclass(frozen=True, slots=True)
class Price:
    """One vendor's list price.

    ``free_images`` counts the images of a job that cost nothing. The defaults leave it at 0
    even where a vendor has a monthly free tier, because a free tier belongs to the account's
    month, not to the job, and may already be used up.
    """

    usd_per_1000_images: Decimal
    billable_outcomes: frozenset[str] = DEFAULT_BILLABLE
    free_images: int = 0
    #: The price of one image rounded UP to whole micro-dollars, so that reserving image by
    #: image never reserves less than the vendor charges (over by < $1 per million images).
    micro_usd_per_image: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        try:
            usd = parse_usd(self.usd_per_1000_images)
        except ValueError as exc:
            raise PriceConfigError(f"usd_per_1000_images: {exc}") from None
        billable = frozenset(self.billable_outcomes)
        if unknown := billable - OUTCOMES:
            raise PriceConfigError(
                f"billable_outcomes: unknown outcome(s) {', '.join(sorted(unknown))}; "
                f"choose from {', '.join(sorted(OUTCOMES - POSSIBLY_BILLED))}"
            )
        if chosen := billable & POSSIBLY_BILLED:
            raise PriceConfigError(
                f"billable_outcomes: {', '.join(sorted(chosen))} cannot be chosen: a request we stopped "
                "waiting for always counts against the caps as possibly billed"
            )
        if (
            isinstance(self.free_images, bool)
            or not isinstance(self.free_images, int)
            or self.free_images < 0
        ):
            raise PriceConfigError(f"free_images: must be an integer >= 0, got {self.free_images!r}")
        # frozen: the normalised values are stored the one way a frozen dataclass allows
        object.__setattr__(self, "usd_per_1000_images", usd)
        object.__setattr__(self, "billable_outcomes", billable)
        object.__setattr__(self, "micro_usd_per_image", to_micro_usd(usd / 1000, ROUND_CEILING))

    def bills(self, outcome: str) -> bool:
        """Whether an attempt that ended with ``outcome`` is known to be charged (unknown outcomes: a bug)."""
        return self.settlement(outcome) == "billed"

    def settlement(self, outcome: str) -> Settlement:
        """How an attempt that ended with ``outcome`` counts: billed, unbilled, or possibly billed
        (no answer came back, and the vendor charges for some outcome: it may have charged this one)."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}; expected one of {', '.join(sorted(OUTCOMES))}")
        if outcome in POSSIBLY_BILLED:
            return "possibly billed" if self.billable_outcomes else "unbilled"
        return "billed" if outcome in self.billable_outcomes else "unbilled"

    def cost_micro_usd(self, images: int, already_billed: int = 0) -> int:
        """The price of ``images`` more billed images after ``already_billed`` in the same job."""
        if images < 0 or already_billed < 0:
            raise ValueError(
                f"image counts must be >= 0, got images={images}, already_billed={already_billed}"
            )
        free_left = max(0, self.free_images - already_billed)
        return max(0, images - free_left) * self.micro_usd_per_image

    def __str__(self) -> str:
        text = f"{format_usd(to_micro_usd(self.usd_per_1000_images, ROUND_CEILING))} per 1,000 images"
        return text + (f", first {self.free_images:,} free" if self.free_images else "")


def _defaults() -> dict[str, Price]:
    # ../shared/reference/vendors.md, "Limits, quotas, list prices". AWS, Azure and Clarifai are
    # marked unverified there; Google's first 1,000/month are free but see Price.free_images.
    return {
        "aws": Price(Decimal("1.00")),
        "google": Price(Decimal("1.50")),
        "azure": Price(Decimal("1.00")),
        "clarifai": Price(Decimal("1.20")),
        # the generic vendor's price is whatever its operator charges: 0 until configured
        "http": Price(Decimal("0")),
        "local": Price(Decimal("0")),
    }


_KEYS = {"usd_per_1000", "billable", "free_images"}


class PriceTable:
    """Prices by vendor name; immutable (``load`` builds a new table)."""

    __slots__ = ("_prices",)

    def __init__(self, prices: Mapping[str, Price]) -> None:
        self._prices = dict(prices)

    @classmethod
    def default(cls) -> PriceTable:
        """The list prices from the project's vendor reference."""
        return cls(_defaults())

    @classmethod
    def load(cls, path: str | Path, base: PriceTable | None = None) -> PriceTable:
        """``base`` (the defaults if ``None``) overridden by the ``[prices.<vendor>]`` tables of ``path``.

        Raises :class:`PriceConfigError` naming the file and the offending key.
        """
        path = Path(path)
        try:
            with path.open("rb") as file:
                document = tomllib.load(file)
        except OSError as exc:
            raise PriceConfigError(f"{path}: cannot read price file: {exc.strerror or exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise PriceConfigError(f"{path}: not valid TOML: {exc}") from exc
        prices = dict((base or cls.default())._prices)
        sections = document.get("prices", {})
        if not isinstance(sections, dict):
            raise PriceConfigError(f"{path}: prices: must be a table of [prices.<vendor>] tables")
        for vendor, section in sections.items():
            prices[vendor] = _override(path, vendor, section, prices.get(vendor))
        return cls(prices)

    @property
    def vendors(self) -> tuple[str, ...]:
        return tuple(sorted(self._prices))

    def price(self, vendor: str) -> Price:
        try:
            return self._prices[vendor]
        except KeyError:
            raise PriceConfigError(
                f"no price for vendor {vendor!r} (priced: {', '.join(self.vendors)}); "
                f'add [prices.{vendor}] usd_per_1000 = "..." to a price file'
            ) from None

    def cost_micro_usd(self, vendor: str, images: int, already_billed: int = 0) -> int:
        """What ``images`` billed images cost at ``vendor`` after ``already_billed`` (see :class:`Price`)."""
        return self.price(vendor).cost_micro_usd(images, already_billed)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PriceTable) and self._prices == other._prices

    __hash__ = None  # type: ignore[assignment]  # equality by content, and the content is a dict

    def __repr__(self) -> str:
        return f"PriceTable({self._prices!r})"


def _override(path: Path, vendor: str, section: Any, current: Price | None) -> Price:
    where = f"{path}: prices.{vendor}"
    if not isinstance(section, dict):
        raise PriceConfigError(f"{where}: must be a table with keys {', '.join(sorted(_KEYS))}")
    if unknown := section.keys() - _KEYS:
        raise PriceConfigError(
            f"{where}.{sorted(unknown)[0]}: unknown key; expected one of {', '.join(sorted(_KEYS))}"
        )
    if current is None and "usd_per_1000" not in section:
        raise PriceConfigError(f"{where}.usd_per_1000: required, since {vendor!r} has no default price")
    current = current or Price(Decimal(0))  # a new vendor: its price is required, the rest defaults
    usd, billable, free = current.usd_per_1000_images, current.billable_outcomes, current.free_images
    if "usd_per_1000" in section:
        try:
            usd = parse_usd(section["usd_per_1000"])
        except ValueError as exc:
            raise PriceConfigError(f'{where}.usd_per_1000: {exc} (write dollars such as "1.25")') from None
    if "billable" in section:
        names = section["billable"]
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise PriceConfigError(f"{where}.billable: expected a list of outcome names, got {names!r}")
        billable = frozenset(names)
    if "free_images" in section:
        free = section["free_images"]
    try:
        return Price(usd, billable, free)
    except PriceConfigError as exc:
        # Price names its own field; map it back to the file's key names
        message = str(exc).replace("billable_outcomes", "billable", 1)
        raise PriceConfigError(f"{where}.{message}") from None
