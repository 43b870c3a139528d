"""A fault-injecting fake vendor for engine tests.

Its label is a pure function of the bytes it receives (like a real, deterministic vendor),
and it counts every answer it gives, so tests can compare what the vendor billed with
what the journal's ledger says. Faults are drawn from a seeded generator.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from apiwrap.adapters import (
    Adapter,
    ImageLimits,
    Label,
    MalformedAnswer,
    Throttled,
    Transient,
    VendorAnswer,
    VendorError,
)


@dataclass
class FaultRates:
    throttle: float = 0.0
    timeout: float = 0.0
    reset: float = 0.0
    server_error: float = 0.0
    malformed: float = 0.0


@dataclass
class FaultyVendor(Adapter):
    """Answers ``cat`` for most images and ``dog`` for some, decided by the bytes' hash."""

    faults: FaultRates = field(default_factory=FaultRates)
    seed: int = 0
    latency_s: float = 0.0
    hang_s: float = 60.0
    max_batch: int = 1
    cat_share: float = 0.8
    #: Per-image share of "cat" answers, from the bytes received (overrides cat_share).
    share_of: Callable[[bytes], float] | None = None
    model_version: str = "fake-1"
    ledger_file: Path | None = None
    #: Bill each request as it arrives, like a remote vendor that charges even when the
    #: client dies before the answer reaches it (the in-process default bills on answering).
    bill_on_receipt: bool = False
    name: str = "fake"
    limits: ImageLimits = field(default_factory=lambda: ImageLimits(max_bytes=10_000_000))
    billed: Counter[str] = field(default_factory=Counter)
    calls: int = 0
    in_flight: int = 0
    max_in_flight: int = 0

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def label_of(self, image: bytes) -> str:
        share = int.from_bytes(hashlib.sha256(image).digest()[:8], "big") / 2**64
        cat_share = self.cat_share if self.share_of is None else self.share_of(image)
        return "cat" if share < cat_share else "dog"

    async def label_batch(self, images: Sequence[bytes]) -> list[VendorAnswer | VendorError]:
        self.calls += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(images)
        finally:
            self.in_flight -= 1

    async def _answer(self, images: Sequence[bytes]) -> list[VendorAnswer | VendorError]:
        if self.bill_on_receipt:
            self._bill(images, "ok")
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        draw = self._random.random()
        rates = self.faults
        if draw < rates.throttle:
            raise Throttled("Rate exceeded", retry_after=0.001)
        draw -= rates.throttle
        if draw < rates.timeout:
            await asyncio.sleep(self.hang_s)  # the engine's request timeout cuts this short
        draw -= rates.timeout
        if draw < rates.reset:
            raise Transient("connection reset by peer")
        draw -= rates.reset
        if draw < rates.server_error:
            raise Transient("HTTP 503")
        draw -= rates.server_error
        if draw < rates.malformed:
            if not self.bill_on_receipt:
                self._bill(images, "malformed")
            raise MalformedAnswer("body is not JSON")
        if not self.bill_on_receipt:
            self._bill(images, "ok")
        return [self._vote(image) for image in images]

    def _vote(self, image: bytes) -> VendorAnswer:
        label = self.label_of(image)
        raw = json.dumps({"labels": [label]})
        return VendorAnswer((Label(label, 0.9), Label("animal", 0.5)), self.model_version, raw)

    def _bill(self, images: Sequence[bytes], outcome: str) -> None:
        self.billed[outcome] += len(images)
        if self.ledger_file is not None:
            with self.ledger_file.open("a") as handle:
                for image in images:
                    handle.write(f"{outcome} {hashlib.sha256(image).hexdigest()}\n")
