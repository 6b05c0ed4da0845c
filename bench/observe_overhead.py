"""Per-request cost of the Observe middleware (metrics, JSON access log), in-process.

    .venv/bin/python bench/observe_overhead.py > /dev/null            # one process
    PROMETHEUS_MULTIPROC_DIR=$(mktemp -d) .venv/bin/python bench/observe_overhead.py > /dev/null

A trivial ASGI app answering a route, called directly on uvloop (no sockets), with and
without the middleware; access lines go to stdout (send them to /dev/null or a file).
Median of 7 interleaved repeats of 20,000 calls; figures on stderr.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

import uvloop

from nextoffer.api.access_log import AccessLog, Observe
from nextoffer.api.metrics import Metrics


class _Route:
    path = "/data/core/ode/{container_id}/decisions"


async def app(scope: Any, receive: Any, send: Any) -> None:
    scope["route"] = _Route
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": b"{}"})


async def send(message: Any) -> None:
    pass


async def receive() -> Any:
    return {"type": "http.request", "body": b""}


def scope() -> dict[str, Any]:
    headers = [(b"host", b"x"), (b"content-type", b"application/json")]
    return {
        "type": "http",
        "method": "POST",
        "path": "/data/core/ode/abc/decisions",
        "headers": headers,
    }


async def main() -> None:
    variants = {
        "bare app": app,
        "metrics": Observe(app, metrics=Metrics(), access_log=None),
        "access log": Observe(app, metrics=None, access_log=AccessLog()),
        "both": Observe(app, metrics=Metrics(), access_log=AccessLog()),
    }
    timings: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(7):
        for name, handler in variants.items():
            calls = 20_000
            start = time.process_time()  # CPU: other load on the machine does not count
            for _ in range(calls):
                await handler(scope(), receive, send)
            timings[name].append((time.process_time() - start) / calls * 1e6)
    base = statistics.median(timings["bare app"])
    for name, values in timings.items():
        cost = statistics.median(values)
        print(f"{name}: {cost:.1f} µs per request (+{cost - base:.1f})", file=sys.stderr)


if __name__ == "__main__":
    uvloop.run(main())
