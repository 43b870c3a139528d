"""Prometheus metrics in the text exposition format (0.0.4), kept in memory by one object.

Written by hand rather than with prometheus_client: a dozen counters, two histograms and a few
gauges, owned by the app (so several apps in one process, as in tests, never share a
registry). Counters are integers (money in micro-dollars), so a sum never drifts. Tenant names
appear only when ``tenant_labels`` is on (the ``[metrics]`` table of the config).
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable

__all__ = ["CONTENT_TYPE", "GaugeSample", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = tuple[tuple[str, str], ...]
#: (metric name, labels, value) of a gauge read when the metrics are rendered.
GaugeSample = tuple[str, dict[str, str], int]

_COUNTERS = {
    "apiwrap_http_requests_total": "HTTP requests answered, by route template, method and status.",
    "apiwrap_refusals_total": "Error answers, by reason (the problem code).",
    "apiwrap_vendor_queries_total": "Images sent to a vendor, by the outcome of that attempt.",
    "apiwrap_vendor_throttles_total": "Attempts the vendor refused as over its rate limit.",
    "apiwrap_vendor_retries_total": "Re-sent samples (counted when their job ends).",
    "apiwrap_spend_micro_usd_total": "Money billed by vendors (list price), in micro-dollars.",
    "apiwrap_certificates_total": "Images certified (label and L2 radius) or predicted.",
    "apiwrap_abstentions_total": "Images where the service abstained, by reason.",
    "apiwrap_jobs_total": "Jobs finished, by final status.",
}
#: Histograms and their buckets (seconds).
_HISTOGRAMS = {
    # Cloud vision calls take tens of ms to seconds.
    "apiwrap_vendor_request_seconds": (
        "Time one vendor request holds its slot.",
        (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    ),
    # A one-image certify waits for its whole job: up to minutes.
    "apiwrap_http_request_seconds": (
        "Time to answer one HTTP request, by route template and method.",
        (0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
    ),
}
_GAUGES = {
    "apiwrap_jobs_running": "Jobs running now.",
    "apiwrap_budget_remaining_micro_usd": "What a tenant may still spend (tenants with a money cap).",
    "apiwrap_budget_remaining_queries": "Billable queries a tenant may still buy (tenants with a query cap).",
    "apiwrap_budget_spent_micro_usd": "What a tenant has spent.",
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _format_labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in labels) + "}"


def _number(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Metrics:
    """Counters and histograms by name and labels; gauges read from ``gauges`` at render time."""

    def __init__(self, *, tenant_labels: bool = True) -> None:
        self.tenant_labels = tenant_labels
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, int]] = {name: defaultdict(int) for name in _COUNTERS}
        # per labels: one count per bucket and +Inf, then the sum and the count
        self._histograms: dict[str, dict[Labels, list[float]]] = {name: {} for name in _HISTOGRAMS}
        self.gauges: Callable[[], Iterable[GaugeSample]] = lambda: ()

    def count(self, name: str, amount: int = 1, **labels: str) -> None:
        if name not in self._counters:
            raise KeyError(f"unknown counter {name}")
        if not self.tenant_labels:
            labels.pop("tenant", None)
        with self._lock:
            self._counters[name][tuple(sorted(labels.items()))] += amount

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        buckets = _HISTOGRAMS[name][1]
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._histograms[name].setdefault(key, [0.0] * (len(buckets) + 3))
            series[bisect.bisect_left(buckets, seconds)] += 1  # bucket le=b holds values <= b
            series[-2] += seconds
            series[-1] += 1

    def render(self) -> str:
        gauges = list(self.gauges())
        with self._lock:
            return "".join(self._render_lines(gauges))

    def _render_lines(self, gauges: list[GaugeSample]) -> Iterable[str]:
        for name, help_text in _COUNTERS.items():
            yield f"# HELP {name} {help_text}\n# TYPE {name} counter\n"
            for labels, value in sorted(self._counters[name].items()):
                yield f"{name}{_format_labels(labels)} {value}\n"
        for name, (help_text, buckets) in _HISTOGRAMS.items():
            yield f"# HELP {name} {help_text}\n# TYPE {name} histogram\n"
            for labels, series in sorted(self._histograms[name].items()):
                cumulative = 0.0
                for bound, count in zip((*buckets, float("inf")), series, strict=False):
                    cumulative += count
                    le = "+Inf" if bound == float("inf") else repr(bound)
                    yield f"{name}_bucket{_format_labels((*labels, ('le', le)))} {_number(cumulative)}\n"
                yield f"{name}_sum{_format_labels(labels)} {_number(series[-2])}\n"
                yield f"{name}_count{_format_labels(labels)} {_number(series[-1])}\n"
        for name, help_text in _GAUGES.items():
            yield f"# HELP {name} {help_text}\n# TYPE {name} gauge\n"
            for sample_name, labels, value in sorted(gauges, key=lambda g: (g[0], sorted(g[1].items()))):
                if sample_name == name:
                    yield f"{name}{_format_labels(tuple(sorted(labels.items())))} {value}\n"
