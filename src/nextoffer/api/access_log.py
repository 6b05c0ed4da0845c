"""Structured access logs and request metrics: one ASGI middleware around the whole app.

For every HTTP request it measures the time until the response's last byte, counts it in
:class:`~nextoffer.api.metrics.Metrics` under its route *template*, and — when access
logs are on — writes one JSON line to stdout::

    {"time":"2026-11-30T10:00:00.123Z","method":"POST","route":"/data/core/ode/{container_id}/decisions",
     "path":"/data/core/ode/abc/decisions","status":200,"duration_ms":4.21,"request_id":"…"}

The request id is the caller's ``x-request-id`` when it sends one (so a gateway's id
follows the request), otherwise a fresh one (a random prefix per process and a counter);
either way it is returned in the ``x-request-id`` response header.

Lines wait in the log's own buffer and go to ``sys.stdout`` in one write at most every
second (or every 64 KiB), and from the app's flusher task when the server goes quiet: not
through the logging module, and not through the stream's buffer, which
``PYTHONUNBUFFERED=1`` (set in most container images) turns into a ``write`` per line. A
killed process can lose its last second of lines; a line per request through ``logging``
with a flush each cost several times more on the decision path (docs/benchmarks.md).
"""

from __future__ import annotations

import itertools
import os
import sys
import time

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nextoffer.api.metrics import Metrics

UNMATCHED = "<unmatched>"
#: Longest time an access line waits in the buffer while requests keep coming.
FLUSH_SECONDS = 1.0
#: Most characters the buffer holds before it is written out.
FLUSH_CHARS = 64 * 1024


class AccessLog:
    """Buffered JSON lines for ``sys.stdout`` (looked up per flush: test runners swap it)."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""
        self._flushed = time.monotonic()
        self._lines: list[str] = []
        self._chars = 0

    def write(
        self, method: str, route: str, path: str, status: int, seconds: float, request_id: str
    ) -> None:
        now = time.time()
        second = int(now)
        if second != self._second:  # the date part changes once a second
            self._second, self._prefix = (
                second,
                time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)),
            )
        line = {
            "time": f"{self._prefix}.{int((now - second) * 1000):03d}Z",
            "method": method,
            "route": route,
            "path": path,
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
            "request_id": request_id,
        }
        text = orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE).decode()
        self._lines.append(text)
        self._chars += len(text)
        if self._chars >= FLUSH_CHARS or time.monotonic() - self._flushed >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Write the waiting lines at once."""
        self._flushed = time.monotonic()
        if self._lines:
            text = "".join(self._lines)
            self._lines.clear()
            self._chars = 0
            sys.stdout.write(text)
        sys.stdout.flush()


class Observe:
    """Metrics for every request, and a JSON access line when ``access_log`` is given."""

    def __init__(
        self, app: ASGIApp, *, metrics: Metrics | None, access_log: AccessLog | None
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log
        self._id_prefix = os.urandom(6).hex()
        self._ids = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.metrics is None and self.access_log is None):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value[:200]
                break
        if request_id is None:
            request_id = f"{self._id_prefix}{next(self._ids):08x}".encode()
        status = 500

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            seconds = time.perf_counter() - start
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED
            if self.metrics is not None:
                self.metrics.observe_request(scope["method"], template, status, seconds)
            if self.access_log is not None:
                self.access_log.write(
                    scope["method"],
                    template,
                    scope["path"],
                    status,
                    seconds,
                    request_id.decode("latin-1"),
                )
