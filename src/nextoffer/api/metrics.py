"""Prometheus metrics of one app: requests, latency, decisions, cap refusals, rebuilds.

Each app owns a :class:`Metrics` with its own registry (tests build many apps in one
process). With several worker processes (``nextoffer serve --workers N``) each worker
writes its samples to memory-mapped files in ``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's
multiprocess mode, chosen when the variable is set before prometheus-client is imported;
``serve`` sets it to a fresh temporary folder), and ``GET /metrics`` in any worker
aggregates every worker's files — so one scrape sees the whole server, whichever worker
answers it.

Label values are bounded: the route *template* (``/data/core/ode/{container_id}/decisions``),
never the raw path; ``<unmatched>`` for paths no route serves.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client import values as prometheus_values
from prometheus_client.multiprocess import MultiProcessCollector

#: Latency buckets (seconds): sub-millisecond to seconds, dense where decisions land.
BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        # Multiprocess mode is fixed when prometheus-client is imported; follow what it chose.
        multiprocess = getattr(prometheus_values.ValueClass, "_multiprocess", False)
        folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        self._multiprocess_dir = folder if multiprocess else None
        self.requests = Counter(
            "nextoffer_http_requests",
            "HTTP requests answered, by route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "nextoffer_http_request_duration_seconds",
            "Time from request to the last byte sent, by route template.",
            ["method", "route"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.propositions = Counter(
            "nextoffer_decision_propositions",
            "Propositions answered, by outcome: options, fallback, or empty.",
            ["outcome"],
            registry=self.registry,
        )
        self.cap_refusals = Counter(
            "nextoffer_cap_reservation_refusals",
            "Cap reservations refused: another request took the last unit (the decision is made again).",
            registry=self.registry,
        )
        self.rebuilds = Counter(
            "nextoffer_catalog_rebuilds",
            "Catalog snapshots rebuilt after a library change.",
            registry=self.registry,
        )
        # ``labels()`` takes a lock and builds a key per call; children are cached here instead.
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
        children[0].inc()
        children[1].observe(seconds)

    def observe_outcomes(self, options: int, fallbacks: int, empty: int) -> None:
        for outcome, count in (("options", options), ("fallback", fallbacks), ("empty", empty)):
            if count:
                self.propositions.labels(outcome).inc(count)

    def cap_refused(self) -> None:
        self.cap_refusals.inc()

    def catalog_rebuilt(self) -> None:
        self.rebuilds.inc()

    def render(self) -> bytes:
        """The text exposition of this process, or of every worker in multiprocess mode."""
        if self._multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(registry, path=self._multiprocess_dir)
        return generate_latest(registry)
