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
import time
from bisect import bisect_left
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client import values as prometheus_values
from prometheus_client.multiprocess import MultiProcessCollector

if TYPE_CHECKING:
    from nextoffer.engine.result import Proposition

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
#: Longest delay before a worker's request observations reach the shared values.
FLUSH_SECONDS = 1.0


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
            "Propositions answered, by API (decisioning, edge) and outcome: options, "
            "fallback, or empty.",
            ["api", "outcome"],
            registry=self.registry,
        )
        self.cap_refusals = Counter(
            "nextoffer_cap_reservation_refusals",
            "Cap reservations refused: a proposed offer's cap was full "
            "(the decision is made again).",
            registry=self.registry,
        )
        self.rebuilds = Counter(
            "nextoffer_catalog_rebuilds",
            "Catalog snapshots rebuilt after a library change.",
            registry=self.registry,
        )
        #: Requests observed since the last :meth:`flush`, per (method, route, status):
        #: [count, sum of seconds, count per bucket]. Plain Python on the event loop's
        #: thread (the only caller), folded into prometheus-client's values at most every
        #: ``FLUSH_SECONDS`` and before a scrape: per request this costs a dict lookup and
        #: two additions instead of three locked (and, with workers, memory-mapped) writes.
        self._pending: dict[tuple[str, str, int], list[Any]] = {}
        #: Propositions by (API, outcome) since the last flush, folded in the same way.
        self._outcomes = dict.fromkeys(
            [(api, o) for api in ("decisioning", "edge") for o in ("options", "fallback", "empty")],
            0,
        )
        self._flushed = time.monotonic()

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        entry = self._pending.get(key)
        if entry is None:
            entry = self._pending[key] = [0, 0.0, [0] * (len(BUCKETS) + 1)]
        entry[0] += 1
        entry[1] += seconds
        entry[2][bisect_left(BUCKETS, seconds)] += 1  # the first bound >= seconds; +Inf last
        now = time.monotonic()
        if now - self._flushed >= FLUSH_SECONDS:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        """Fold pending request observations into the prometheus-client metrics."""
        self._flushed = time.monotonic() if now is None else now
        pending, self._pending = self._pending, {}
        outcomes, self._outcomes = self._outcomes, dict.fromkeys(self._outcomes, 0)
        for (api, outcome), count in outcomes.items():
            if count:
                self.propositions.labels(api, outcome).inc(count)
        for (method, route, status), (count, total, buckets) in pending.items():
            self.requests.labels(method, route, str(status)).inc(count)
            histogram = self.latency.labels(method, route)
            # prometheus-client has no bulk observe: add to the child's values as observe()
            # does (a sum, and one non-cumulative count per bucket, +Inf last).
            histogram._sum.inc(total)
            for index, bucket_count in enumerate(buckets):
                if bucket_count:
                    histogram._buckets[index].inc(bucket_count)

    def observe_propositions(self, api: str, propositions: Iterable[Proposition]) -> None:
        """Count ``propositions`` answered by ``api`` (``decisioning`` or ``edge``): with
        options, with the fallback alone, or empty."""
        outcomes = self._outcomes
        for proposition in propositions:
            if proposition.options:
                outcomes[api, "options"] += 1
            elif proposition.fallback is not None:
                outcomes[api, "fallback"] += 1
            else:
                outcomes[api, "empty"] += 1

    def cap_refused(self) -> None:
        self.cap_refusals.inc()

    def catalog_rebuilt(self) -> None:
        self.rebuilds.inc()

    def render(self) -> bytes:
        """The text exposition of this process, or of every worker in multiprocess mode."""
        self.flush()
        if self._multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry(auto_describe=False)
        # prometheus_client leaves this constructor unannotated.
        MultiProcessCollector(registry, path=self._multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
