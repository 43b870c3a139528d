"""The service's Prometheus metrics, kept by prometheus-client in one registry per app.

Each app owns a :class:`~prometheus_client.CollectorRegistry` (so several apps in one process, as
in tests, never share a series) holding the service's counters and histograms, the gauges read
from the app when scraped, and prometheus-client's process, platform and garbage-collector
collectors (``process_*``, ``python_*``). Money is counted in whole micro-dollars, so a sum is
exact (prometheus-client keeps floats: exact below 2**53 micro-dollars, $9 billion). Tenant
names appear only when ``tenant_labels`` is on (the ``[metrics]`` table of the config).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

__all__ = ["CONTENT_TYPE", "GaugeSample", "Metrics"]

#: What ``/metrics`` answers: the text format 0.0.4, which every Prometheus server reads.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

#: (metric name, labels, value) of a gauge read when the metrics are scraped.
GaugeSample = tuple[str, dict[str, str], int]

#: Counters: help text and label names.
_COUNTERS = {
    "apiwrap_http_requests_total": (
        "HTTP requests answered, by route template, method and status.",
        ("method", "route", "status"),
    ),
    "apiwrap_refusals_total": ("Error answers, by reason (the problem code).", ("reason",)),
    "apiwrap_vendor_queries_total": (
        "Images sent to a vendor, by the outcome of that attempt.",
        ("outcome", "vendor"),
    ),
    "apiwrap_vendor_throttles_total": ("Attempts the vendor refused as over its rate limit.", ("vendor",)),
    "apiwrap_vendor_retries_total": ("Re-sent samples (counted when their job ends).", ("vendor",)),
    "apiwrap_spend_micro_usd_total": (
        "Money billed by vendors (list price), in micro-dollars.",
        ("tenant", "vendor"),
    ),
    "apiwrap_certificates_total": (
        "Images certified (label and L2 radius) or predicted.",
        ("mode", "vendor"),
    ),
    "apiwrap_abstentions_total": ("Images where the service abstained, by reason.", ("reason", "vendor")),
    "apiwrap_jobs_total": ("Jobs finished, by final status.", ("status",)),
}
#: Histograms: help text, label names and buckets (seconds).
_HISTOGRAMS = {
    # Cloud vision calls take tens of ms to seconds.
    "apiwrap_vendor_request_seconds": (
        "Time one vendor request holds its slot.",
        ("vendor",),
        (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    ),
    # A one-image certify waits for its whole job: up to minutes.
    "apiwrap_http_request_seconds": (
        "Time to answer one HTTP request, by route template and method.",
        ("method", "route"),
        (0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
    ),
}
#: Gauges, read from the app at each scrape: help text and label names.
_GAUGES = {
    "apiwrap_jobs_running": ("Jobs running now.", ()),
    "apiwrap_budget_remaining_micro_usd": (
        "What a tenant may still spend (tenants with a money cap).",
        ("tenant",),
    ),
    "apiwrap_budget_remaining_queries": (
        "Billable queries a tenant may still buy (tenants with a query cap).",
        ("tenant",),
    ),
    "apiwrap_budget_spent_micro_usd": ("What a tenant has spent.", ("tenant",)),
}


class _Gauges:
    """A prometheus-client collector of the gauges ``read`` gives at each scrape."""

    def __init__(self, read: Callable[[], Iterable[GaugeSample]]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        families = {
            name: GaugeMetricFamily(name, help_text, labels=labels)
            for name, (help_text, labels) in _GAUGES.items()
        }
        for name, labels, value in self.read():
            families[name].add_metric([labels[label] for label in _GAUGES[name][1]], value)
        yield from families.values()


class Metrics:
    """The app's registry; counters and histograms by name and labels, gauges from ``gauges``."""

    def __init__(self, *, tenant_labels: bool = True) -> None:
        self.tenant_labels = tenant_labels
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self._counters = {
            name: Counter(name, help_text, self._labels(labels), registry=self.registry)
            for name, (help_text, labels) in _COUNTERS.items()
        }
        self._histograms = {
            name: Histogram(name, help_text, labels, buckets=buckets, registry=self.registry)
            for name, (help_text, labels, buckets) in _HISTOGRAMS.items()
        }
        self.gauges: Callable[[], Iterable[GaugeSample]] = lambda: ()
        self.registry.register(_Gauges(lambda: self.gauges()))

    def _labels(self, names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(name for name in names if self.tenant_labels or name != "tenant")

    def count(self, name: str, amount: int = 1, **labels: str) -> None:
        if not self.tenant_labels:
            labels.pop("tenant", None)
        counter = self._counters[name]
        (counter.labels(**labels) if labels else counter).inc(amount)

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        self._histograms[name].labels(**labels).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
