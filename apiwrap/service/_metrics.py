"""Prometheus metrics in the text exposition format (0.0.4), kept in memory by one object.

Written by hand rather than with prometheus_client: a handful of counters and one histogram,
owned by the app (so several apps in one process, as in tests, never share a registry).
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Iterable

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Vendor request latency buckets (seconds): cloud vision calls take tens of ms to seconds.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

Labels = tuple[tuple[str, str], ...]

_COUNTERS = {
    "apiwrap_vendor_queries_total": "Images sent to a vendor, by the outcome of that attempt.",
    "apiwrap_vendor_throttles_total": "Attempts the vendor refused as over its rate limit.",
    "apiwrap_vendor_retries_total": "Re-sent samples (counted when their job ends).",
    "apiwrap_spend_usd_total": "Money billed by vendors (list price), by tenant.",
    "apiwrap_certificates_total": "Images certified (label and L2 radius) or predicted.",
    "apiwrap_abstentions_total": "Images where the service abstained, by reason.",
    "apiwrap_jobs_total": "Jobs finished, by final status.",
}
_HISTOGRAM = "apiwrap_vendor_request_seconds"
_GAUGE = "apiwrap_jobs_running"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _format_labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in labels) + "}"


def _number(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Metrics:
    """Counters by name and labels, a latency histogram per vendor, and the running-jobs gauge."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, float]] = {name: defaultdict(float) for name in _COUNTERS}
        self._histogram: dict[Labels, list[float]] = {}  # per labels: bucket counts, +Inf, sum, count
        self.jobs_running = 0

    def count(self, name: str, amount: float = 1.0, **labels: str) -> None:
        if name not in self._counters:
            raise KeyError(f"unknown counter {name}")
        with self._lock:
            self._counters[name][tuple(sorted(labels.items()))] += amount

    def observe_latency(self, seconds: float, *, vendor: str) -> None:
        key = (("vendor", vendor),)
        with self._lock:
            series = self._histogram.setdefault(key, [0.0] * (len(_BUCKETS) + 3))
            series[bisect.bisect_left(_BUCKETS, seconds)] += 1  # bucket le=b holds values <= b
            series[-2] += seconds
            series[-1] += 1

    def render(self) -> str:
        with self._lock:
            return "".join(self._render_lines())

    def _render_lines(self) -> Iterable[str]:
        for name, help_text in _COUNTERS.items():
            yield f"# HELP {name} {help_text}\n# TYPE {name} counter\n"
            for labels, value in sorted(self._counters[name].items()):
                yield f"{name}{_format_labels(labels)} {_number(value)}\n"
        yield f"# HELP {_HISTOGRAM} Latency of one vendor request.\n# TYPE {_HISTOGRAM} histogram\n"
        for labels, series in sorted(self._histogram.items()):
            cumulative = 0.0
            for bound, count in zip((*_BUCKETS, float("inf")), series, strict=False):
                cumulative += count
                le = "+Inf" if bound == float("inf") else repr(bound)
                yield f"{_HISTOGRAM}_bucket{_format_labels((*labels, ('le', le)))} {_number(cumulative)}\n"
            yield f"{_HISTOGRAM}_sum{_format_labels(labels)} {_number(series[-2])}\n"
            yield f"{_HISTOGRAM}_count{_format_labels(labels)} {_number(series[-1])}\n"
        yield f"# HELP {_GAUGE} Jobs running now.\n# TYPE {_GAUGE} gauge\n{_GAUGE} {self.jobs_running}\n"
