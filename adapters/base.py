"""The adapter contract: exact image bytes in, the vendor's labels out.

An adapter knows one vendor's protocol and nothing of statistics. The engine hands it
the bytes to send (already encoded, never altered by the adapter) and receives a
:class:`VendorAnswer` per image, or a :class:`~adapters.errors.VendorError`.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol, runtime_checkable

from apiwrap.adapters.errors import Rejected, VendorError
from apiwrap.errors import ConfigurationError

__all__ = [
    "NO_LABEL",
    "Adapter",
    "ImageLimits",
    "Label",
    "VendorAnswer",
    "canonical_label",
    "check_adapter",
    "top1",
]

#: The vote cast when the vendor answered with no label at all (a class of its own).
NO_LABEL = "<no label>"

#: Version of the frozen rule that turns an answer into a vote (:func:`canonical_label` and
#: :func:`top1` with its tie-break); recorded with every job, whose votes it decided.
LABEL_RULE_VERSION = "nfkc-casefold-ws-specific-ties-2"


def canonical_label(name: str) -> str:
    """Canonicalise a vendor label by one frozen rule.

    NFKC normalisation, case folding, surrounding whitespace and angle brackets removed,
    inner whitespace runs collapsed to one space. Angle brackets are stripped so that no
    vendor label can collide with the project's own ``<...>`` pseudo-classes.
    """
    folded = unicodedata.normalize("NFKC", name).casefold()
    return " ".join(folded.split()).strip("<> ")


@dataclass(frozen=True, slots=True)
class Label:
    """One label with its score on a unified 0..1 scale."""

    name: str
    score: float
    #: Canonical names the vendor gave as this label's parents or aliases (AWS ``Parents`` and
    #: ``Aliases``): labels this one is at least as specific as. AWS scores a label, its parents
    #: and its aliases alike, so they decide a tie.
    subsumes: frozenset[str] = frozenset()


def top1(labels: Sequence[Label]) -> str:
    """The label with the highest score; a tie goes to the most specific tied label.

    The most specific are the tied labels that no other tied label names in its ``subsumes``
    (AWS's Automobile, Vehicle and Transportation tie at 99.15, the last two parents of the
    first); among them (or among all tied, if each is subsumed by another), the
    lexicographically smallest name. Never "first in the list": vendors do not promise an
    order. An empty list is a vote for :data:`NO_LABEL`.
    """
    if not labels:
        return NO_LABEL
    best = max(label.score for label in labels)
    tied = [label for label in labels if label.score == best]
    specific = [
        label
        for label in tied
        if not any(label.name in other.subsumes for other in tied if other.name != label.name)
    ]
    return min(label.name for label in specific or tied)


@dataclass(frozen=True, slots=True)
class VendorAnswer:
    """What a vendor said about one image."""

    labels: tuple[Label, ...]
    model_version: str | None
    raw: str = field(repr=False)

    @property
    def top1(self) -> str:
        return top1(self.labels)


@dataclass(frozen=True, slots=True)
class ImageLimits:
    """The vendor's documented input limits, checked before any money is spent."""

    max_bytes: int
    min_side: int = 1
    max_side: int = 100_000
    formats: frozenset[str] = frozenset({"PNG", "JPEG"})

    def check(self, size_bytes: int, width: int, height: int, image_format: str) -> None:
        """Raise :class:`Rejected` if an image breaks a limit."""
        if size_bytes > self.max_bytes:
            raise Rejected(f"image is {size_bytes} bytes; the vendor accepts at most {self.max_bytes}")
        if min(width, height) < self.min_side or max(width, height) > self.max_side:
            raise Rejected(
                f"image is {width}x{height}; the vendor accepts sides of "
                f"{self.min_side} to {self.max_side} pixels"
            )
        if image_format.upper() not in self.formats:
            raise Rejected(f"format {image_format} is not accepted; use one of {sorted(self.formats)}")


@runtime_checkable
class Adapter(Protocol):
    """A vendor's labelling endpoint.

    ``label_batch`` sends up to ``max_batch`` images in as few requests as the vendor
    allows and returns one entry per image, in order: a :class:`VendorAnswer`, or the
    :class:`VendorError` for that image alone (Google and Clarifai can fail one image
    of a batch). A failure of the whole request is raised instead. Adapters never retry:
    the engine does, with the same bytes, and the SDKs' own retries are off.

    ``model_options`` are the options that decide which labels the adapter returns (AWS
    ``max_labels``, Azure ``model_version``, ...), never credentials or endpoints. The journal
    binds them with the job, so a resume with other options is refused. A class that subclasses
    ``Adapter`` inherits the defaults: no model options, and an ``aclose`` with nothing to close.
    """

    name: str
    max_batch: int
    limits: ImageLimits
    model_options: Mapping[str, object] = MappingProxyType({})

    async def label_batch(self, images: Sequence[bytes]) -> list[VendorAnswer | VendorError]: ...

    async def aclose(self) -> None:
        """Release the vendor's client; only whoever built the adapter calls it."""
        return None


#: Every member of the interface, in the order the protocol declares them.
_MEMBERS = (
    *Adapter.__annotations__,
    *(name for name, value in vars(Adapter).items() if callable(value) and not name.startswith("_")),
)
#: The members a subclass of :class:`Adapter` inherits.
_DEFAULTED = ("model_options", "aclose")


def check_adapter(candidate: object) -> None:
    """Raise :class:`ConfigurationError` naming what ``candidate`` lacks of :class:`Adapter`."""
    missing = [member for member in _MEMBERS if not hasattr(candidate, member)]
    if not missing:
        return
    defaulted = [member for member in missing if member in _DEFAULTED]
    hint = (
        f"; subclass apiwrap.adapters.Adapter to inherit the defaults of {' and '.join(defaulted)}"
        if defaulted
        else ""
    )
    raise ConfigurationError(
        f"a vendor must be a vendor name or an adapter; {type(candidate).__name__} lacks "
        f"{', '.join(missing)} of the apiwrap.adapters.Adapter interface{hint}"
    )
