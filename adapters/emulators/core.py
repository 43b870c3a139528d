"""What every vendor emulator shares: its configuration, call policy, counters and lifecycle.

A vendor module only knows its wire protocol. For each request it asks the
:class:`CallPolicy` what to do (answer, throttle, or inject a fault), and the policy keeps
the counts tests and benchmarks read: every call received, and the billable ones. As a real
vendor does, an emulator finishes and bills a call whose client stopped waiting (a client
timeout shorter than ``latency_ms``); :meth:`Emulator.wait_idle` waits for such calls, so
counters read after it include them.
"""

from __future__ import annotations

import asyncio
import functools
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from types import TracebackType
from typing import TYPE_CHECKING, ClassVar, Literal, ParamSpec, TypeVar, cast, get_args

from apiwrap.adapters.base import ImageLimits

if TYPE_CHECKING:
    # The model loads torch: imported only when an emulator needs it, so listing them stays light.
    from apiwrap.adapters.emulators.model import Classify, ImageModel

__all__ = ["FAULTS", "Action", "CallPolicy", "Emulator", "EmulatorConfig", "Fault"]

P = ParamSpec("P")
T = TypeVar("T")

#: Faults an emulator can inject, by name.
#: throttle: the vendor's own rate-limit answer; error: a 5xx (gRPC UNAVAILABLE);
#: reset: the TCP connection is reset (gRPC: UNAVAILABLE "connection reset");
#: hang: no answer for ``hang_s`` seconds, then a reset; malformed: a truncated body;
#: empty: a well-formed answer with no labels.
Fault = Literal["throttle", "error", "reset", "hang", "malformed", "empty"]
FAULTS: tuple[Fault, ...] = get_args(Fault)


@dataclass(frozen=True)
class EmulatorConfig:
    """How an emulated vendor behaves. Every field has a default that answers every call."""

    #: Classifier behind the labels (see :data:`apiwrap.denoisers.classifiers.CLASSIFIERS`).
    model: str = "efficientnet-lite2"
    #: Replaces the classifier, e.g. a cheap fake in tests: image bytes -> top-k (name, score).
    classify: Classify | None = None
    #: Labels the model proposes per image (a request may ask for fewer).
    top_k: int = 10
    #: Every answered call waits ``latency_ms`` plus a uniform draw in ``[0, jitter_ms]``.
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    #: Requests per second accepted (token bucket, burst ``burst`` or ``max(1, tps)``);
    #: above it the vendor's own throttle answer. None: unlimited.
    tps: float | None = None
    burst: float | None = None
    #: Probability per call of each fault in :data:`FAULTS`, drawn after the TPS limit.
    fault_rates: Mapping[str, float] = field(default_factory=dict)
    #: How long a "hang" lasts before the connection is reset.
    hang_s: float = 30.0
    #: Model version the vendor reports; None: the vendor's usual one.
    model_version: str | None = None
    #: Credential the emulator demands (AWS access key id, Google API key, Azure key,
    #: Clarifai PAT); None accepts any.
    api_key: str | None = None
    #: Input limits enforced with the vendor's own error bodies; None: the vendor's.
    limits: ImageLimits | None = None
    #: Seed of the fault and jitter draws.
    seed: int | None = 0
    host: str = "127.0.0.1"
    #: Port of the main server; 0 picks a free one.
    port: int = 0

    def __post_init__(self) -> None:
        unknown = set(self.fault_rates) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; choose from {', '.join(FAULTS)}")
        if any(not 0.0 <= rate <= 1.0 for rate in self.fault_rates.values()):
            raise ValueError("fault rates are probabilities in [0, 1]")
        if sum(self.fault_rates.values()) > 1.0:
            raise ValueError("fault rates must sum to at most 1")
        if self.tps is not None and self.tps <= 0:
            raise ValueError("tps must be positive (or None for no limit)")


@dataclass(frozen=True, slots=True)
class Action:
    """What to do with one call: answer it, or one of :data:`FAULTS`."""

    kind: Literal["answer"] | Fault
    #: For "throttle": seconds until the rate limit admits a call again.
    retry_after: float | None = None


class CallPolicy:
    """Counts calls and decides each one's fate: scripted faults, TPS limit, random faults.

    Thread-safe: HTTP and gRPC handlers run in many threads at once.
    """

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._random = random.Random(config.seed)
        self._script: deque[Fault] = deque()
        self._tokens = config.burst if config.burst is not None else max(1.0, config.tps or 1.0)
        self._refilled = time.monotonic()
        self._stopping = threading.Event()
        self._idle = threading.Condition(self._lock)
        self._serving = 0
        self.calls = 0
        self.billable = 0
        self.outcomes: Counter[str] = Counter()

    def serving(self, handler: Callable[P, T]) -> Callable[P, T]:
        """``handler`` counted while it runs, for :meth:`wait_idle` (each server wraps its handlers)."""

        @functools.wraps(handler)
        def counted(*args: P.args, **kwargs: P.kwargs) -> T:
            with self._lock:
                self._serving += 1
            try:
                return handler(*args, **kwargs)
            finally:
                with self._lock:
                    self._serving -= 1
                    self._idle.notify_all()

        return counted

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no call is being served (billed or not); False if ``timeout`` passed first."""
        with self._lock:
            return self._idle.wait_for(lambda: self._serving == 0, timeout)

    def open_call(self) -> None:
        """Count a call as received (before auth, limits or faults: every call counts)."""
        with self._lock:
            self.calls += 1

    def decide(self) -> Action:
        """The fate of an authenticated call, then its latency (not for throttled calls)."""
        with self._lock:
            action = self._decide_locked()
            self.outcomes[action.kind] += 1
            delay = self.config.latency_ms + self._random.uniform(0.0, self.config.jitter_ms)
        if action.kind != "throttle" and delay > 0:
            self._stopping.wait(delay / 1000.0)
        return action

    def _decide_locked(self) -> Action:
        if self._script:
            fault = self._script.popleft()
            # A scripted throttle hints the time one request takes to earn at the TPS limit.
            hint = 1.0 / self.config.tps if fault == "throttle" and self.config.tps else 1.0
            return Action(fault, retry_after=hint if fault == "throttle" else None)
        if self.config.tps is not None:
            wait = self._take_token()
            if wait is not None:
                return Action("throttle", retry_after=wait)
        draw = self._random.random()
        for name, rate in self.config.fault_rates.items():
            if draw < rate:
                return Action(cast(Fault, name))  # names checked in EmulatorConfig
            draw -= rate
        return Action("answer")

    def _take_token(self) -> float | None:
        rate = self.config.tps
        assert rate is not None
        capacity = self.config.burst if self.config.burst is not None else max(1.0, rate)
        now = time.monotonic()
        self._tokens = min(capacity, self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return None
        return (1.0 - self._tokens) / rate

    def bill(self, images: int) -> None:
        """Count images the vendor answered and would charge for."""
        with self._lock:
            self.billable += images

    def refuse(self, reason: str) -> None:
        """Count a refusal: "auth" (before any draw) or "rejected" (input limits, after it)."""
        with self._lock:
            self.outcomes[reason] += 1

    def inject(self, *faults: Fault) -> None:
        """Make the next calls fail with these faults, in order, before any other rule."""
        unknown = set(faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; choose from {', '.join(FAULTS)}")
        with self._lock:
            self._script.extend(faults)

    def reset_counts(self) -> None:
        with self._lock:
            self.calls = 0
            self.billable = 0
            self.outcomes.clear()

    def hang(self) -> None:
        """Block like a stuck server (until ``hang_s`` passes or the emulator stops)."""
        self._stopping.wait(self.config.hang_s)

    def stop(self) -> None:
        """Wake every hanging or sleeping handler so the servers can shut down."""
        self._stopping.set()

    def resume(self) -> None:
        """Serve again after :meth:`stop` (latency and hangs wait again)."""
        self._stopping.clear()


@cache
def _shared_model(name: str, top_k: int) -> ImageModel:
    # Emulators of several vendors in one process share one loaded classifier.
    from apiwrap.adapters.emulators.model import ImageModel

    return ImageModel(name, top_k)


class Emulator:
    """Base of the vendor emulators: lifecycle, counters and the backing model.

    Use as a context manager (sync or async); entering starts the servers and returns the
    endpoint URL to give the adapter (``create_adapter(vendor, endpoint=url)``).
    """

    #: Registry name of the vendor ("aws", "google", "azure", "clarifai").
    vendor: ClassVar[str]
    #: The vendor's documented input limits (used when the config names none).
    default_limits: ClassVar[ImageLimits]
    #: Model version reported when the config names none.
    default_model_version: ClassVar[str | None] = None

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.policy = CallPolicy(self.config)
        self.limits = self.config.limits or self.default_limits
        self.model_version = self.config.model_version or self.default_model_version
        self._endpoint: str | None = None

    # -- what tests and benchmarks read -------------------------------------------------
    @property
    def endpoint(self) -> str:
        """Base URL of the running emulator (``http://127.0.0.1:PORT``)."""
        if self._endpoint is None:
            raise RuntimeError(f"the {self.vendor} emulator is not running")
        return self._endpoint

    @property
    def calls(self) -> int:
        """Every request received, whatever its fate."""
        return self.policy.calls

    @property
    def billable(self) -> int:
        """Images answered with labels (possibly none): what the vendor would charge."""
        return self.policy.billable

    def counters(self) -> dict[str, object]:
        """The billing counters as JSON-ready values (served live by ``apiwrap emulate``)."""
        return {
            "vendor": self.vendor,
            "endpoint": self._endpoint,
            "calls": self.calls,
            "billable": self.billable,
            "outcomes": dict(self.outcomes),
        }

    @property
    def outcomes(self) -> Counter[str]:
        """Calls by drawn fate ("answer", "throttle", each fault), plus refusals: "auth"
        (refused before any draw) and "rejected" (input refused, also counted by its draw)."""
        return self.policy.outcomes

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Wait until every call received has been served, those whose client gave up included
        (they still count, and bill, as at a real vendor); False if ``timeout`` passed first."""
        return self.policy.wait_idle(timeout)

    def inject(self, *faults: Fault) -> None:
        """Script the fate of the next calls (see :meth:`CallPolicy.inject`)."""
        self.policy.inject(*faults)

    def reset_counts(self) -> None:
        self.policy.reset_counts()

    # -- the model ----------------------------------------------------------------------
    def classify(self, images: Sequence[bytes]) -> list[list[tuple[str, float]]]:
        """Top-k ``(class name, score)`` per image from the configured model."""
        if self.config.classify is not None:
            return self.config.classify(images)
        return _shared_model(self.config.model, self.config.top_k).classify(images)

    def warm_up(self) -> None:
        """Load the backing model now, so the first call is not slowed by it."""
        if self.config.classify is None:
            _shared_model(self.config.model, self.config.top_k)

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> str:
        """Start serving; returns the endpoint URL."""
        if self._endpoint is None:
            self.policy.resume()
            self._endpoint = self._start_servers()
        return self._endpoint

    def stop(self) -> None:
        if self._endpoint is not None:
            self.policy.stop()
            self._stop_servers()
            self._endpoint = None

    def _start_servers(self) -> str:
        raise NotImplementedError

    def _stop_servers(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> str:
        return self.start()  # binding a socket and starting threads does not block

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)  # gRPC shutdown waits for handler threads

    def __repr__(self) -> str:
        state = self._endpoint or "stopped"
        return f"<{type(self).__name__} {state} calls={self.calls} billable={self.billable}>"
