"""`GET /metrics`: Prometheus text format, by prometheus_client on a registry of pixdex's own.

Request counts and latencies are recorded as requests finish; the queue, rates, failures and
model state are read when Prometheus scrapes (a custom collector), so nothing polls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("pixdex_http_requests", "HTTP requests answered", ["route", "method", "status"],
                                registry=self.registry)
        self.latency = Histogram("pixdex_http_request_seconds", "Time to answer an HTTP request", ["route"],
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
                                 registry=self.registry)
        self.registry.register(_Live(snapshot))

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def text(self) -> bytes:
        return generate_latest(self.registry)


class _Live(Collector):
    """Gauges read from the daemon at scrape time."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.snapshot = snapshot

    def describe(self) -> list[Any]:  # nothing to read at registration: the daemon may not be up yet
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        live = self.snapshot()
        queue = GaugeMetricFamily("pixdex_queue", "Files waiting in the work queue", labels=["priority"])
        for priority, count in live["queue"].items():
            queue.add_metric([priority], count)
        yield queue
        images = GaugeMetricFamily("pixdex_images", "Images in the catalog", labels=["state"])
        for state, count in live["counts"].items():
            images.add_metric([state], count)
        yield images
        yield GaugeMetricFamily("pixdex_waiting_for_models", "Images indexed without models",
                                value=live["waiting_for_models"])
        yield GaugeMetricFamily("pixdex_index_rate", "Files finished per second over the last minute",
                                value=live["rate"])
        yield GaugeMetricFamily("pixdex_committed", "Images committed since the core opened", value=live["committed"])
        yield GaugeMetricFamily("pixdex_failed", "Files that failed since the core opened", value=live["failed"])
        yield GaugeMetricFamily("pixdex_paused", "1 while indexing is paused", value=int(live["paused"]))
        yield GaugeMetricFamily("pixdex_reduced_mode", "1 while models are missing", value=int(live["reduced"]))
        loaded = GaugeMetricFamily("pixdex_model_loaded", "1 for each model session loaded", labels=["model"])
        for model in live["loaded_models"]:
            loaded.add_metric([model], 1)
        yield loaded
        rss = GaugeMetricFamily("pixdex_process_rss_bytes", "Resident memory per pixdex process", labels=["process"])
        for name, value in live["rss"].items():
            rss.add_metric([name], value)
        yield rss
        pss = GaugeMetricFamily("pixdex_process_pss_bytes", "Proportional memory (PSS) per pixdex process",
                                labels=["process"])
        for name, value in live["pss"].items():
            pss.add_metric([name], value)
        yield pss
        yield GaugeMetricFamily("pixdex_idle", "1 while nothing is queued or in flight and no model is loaded",
                                value=int(live["idle"]))
        watch = GaugeMetricFamily("pixdex_watch_polling", "1 for a watched folder that is polled or degraded",
                                  labels=["folder", "mode"])
        for root in live["roots"]:
            watch.add_metric([root["path"], root["mode"]], int(root["mode"] != "inotify"))
        yield watch
        yield from _connection_gauges(live["connections"])


def _connection_gauges(listeners: dict[str, dict[str, Any]]) -> Iterator[GaugeMetricFamily]:
    """Open connections per listener against its cap, and what the caps did since start."""
    described = (("open", "pixdex_connections", "Open connections per listener"),
                 ("limit", "pixdex_connections_limit", "Most open connections a listener holds"),
                 ("closed_idle", "pixdex_connections_closed_idle", "Idle connections closed to make room, since start"),
                 ("refused", "pixdex_connections_refused", "New connections refused with 503 (all busy), since start"))
    for key, name, text in described:
        family = GaugeMetricFamily(name, text, labels=["listener"])
        for listener, counts in listeners.items():
            family.add_metric([listener], counts[key])
        yield family
