"""Structured access logs and request metrics: one ASGI middleware around the whole app.

For every HTTP request it measures the time until the response's last byte, counts it in
:class:`~nextoffer.api.metrics.Metrics` under its route *template*, and — when access
logs are on — writes one JSON line to stdout::

    {"time":"2026-11-30T10:00:00.123Z","method":"POST","route":"/data/core/ode/{container_id}/decisions",
     "path":"/data/core/ode/abc/decisions","status":200,"duration_ms":4.21,"request_id":"…"}

The request id is the caller's ``x-request-id`` when it sends one (so a gateway's id
follows the request), otherwise a fresh one (a random prefix per process and a counter);
either way it is returned in the ``x-request-id`` response header.

Lines wait in the log's own buffer and go to ``sys.stdout`` at most every second (or every
64 KiB), from the app's flusher task when the server goes quiet, and when the app stops:
not through the logging module, and not through the stream's buffer, which
``PYTHONUNBUFFERED=1`` (set in most container images) turns into a ``write`` per line. A
killed process can lose its last second of lines; a line per request through ``logging``
with a flush each cost several times more on the decision path (docs/benchmarks.md).

Every worker of ``serve --workers N`` writes to the same stdout, usually a pipe to a log
collector. The kernel keeps a pipe write whole only up to ``PIPE_BUF`` (4 KiB on Linux): a
longer one, while the reader is slow, can be split and interleaved with another worker's,
which cuts lines in two. So the buffer goes out in writes of whole lines of at most
``PIPE_BUF`` bytes, and a line is kept under it by cutting a long ``path`` (ending it with
``…``).

Metric labels are bounded whatever the client sends: the route template (with the prefix
of any ``Mount`` around it: ``/console/login``, not ``/login``), ``<unmatched>`` for paths
no route serves, and the method when it is one of HTTP's own, else ``<other>`` (granian
hands the app any method a client invents).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import select
import sys
import time
import uuid
from collections.abc import Iterable, Iterator

import orjson
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nextoffer.api.edge_response import failure
from nextoffer.api.errors import to_response
from nextoffer.api.metrics import Metrics
from nextoffer.errors import Unavailable

UNMATCHED = "<unmatched>"
#: The ``method`` label of a method HTTP does not define.
OTHER_METHOD = "<other>"
#: Methods counted under their own name (RFC 9110 and PATCH): a closed set.
METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT")
)
#: Longest time an access line waits in the buffer while requests keep coming.
FLUSH_SECONDS = 1.0
#: Most bytes the buffer holds before it is written out.
FLUSH_CHARS = 64 * 1024
#: Most bytes in one write to stdout: what a pipe keeps whole among several writers.
WRITE_BYTES = getattr(select, "PIPE_BUF", 512)
#: Most characters of a path (or method) written in a line; a longer one is cut.
PATH_CHARS = 1024
#: What a cut path ends with.
CUT = "…"


class AccessLog:
    """Buffered JSON lines for ``sys.stdout`` (looked up per flush: test runners swap it)."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""
        self._flushed = time.monotonic()
        self._lines: list[bytes] = []
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
            "method": method if len(method) <= PATH_CHARS else method[:PATH_CHARS] + CUT,
            "route": route,
            "path": path if len(path) <= PATH_CHARS else path[:PATH_CHARS] + CUT,
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
            "request_id": request_id,
        }
        data = orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)
        if len(data) > WRITE_BYTES:  # characters escaped or encoded to several bytes
            data = _shortened(line)
        self._lines.append(data)
        self._chars += len(data)
        if self._chars >= FLUSH_CHARS or time.monotonic() - self._flushed >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Write the waiting lines, in as few writes as keep every line whole."""
        self._flushed = time.monotonic()
        if self._lines:
            lines = self._lines
            self._lines = []
            self._chars = 0
            stdout = sys.stdout
            for chunk in _chunks(lines, WRITE_BYTES):
                stdout.write(chunk.decode())
                stdout.flush()  # one write(2) per chunk, whatever the stream buffers
        else:
            sys.stdout.flush()


def _shortened(line: dict[str, object]) -> bytes:
    """``line`` encoded in at most ``WRITE_BYTES``: its client-sent texts cut further (each
    character can take up to six bytes, as a JSON escape)."""
    room = (WRITE_BYTES - 256) // 18  # method, path and request id, at six bytes a character
    for key in ("method", "path", "request_id"):
        text = str(line[key])
        if len(text) > room:
            line[key] = text[:room] + CUT
    return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)


def _chunks(lines: Iterable[bytes], limit: int) -> Iterator[bytes]:
    """Whole lines joined into pieces of at most ``limit`` bytes (a longer line alone)."""
    piece: list[bytes] = []
    size = 0
    for line in lines:
        if piece and size + len(line) > limit:
            yield b"".join(piece)
            piece, size = [], 0
        piece.append(line)
        size += len(line)
    if piece:
        yield b"".join(piece)


class Observe:
    """Metrics for every request, and a JSON access line when ``access_log`` is given.

    Outermost of the app's middleware, it also answers a request the server cancels when
    it stops (still running ``NEXTOFFER_SHUTDOWN_TIMEOUT`` after SIGTERM: a slow upload, a
    long call) with a ``503`` and ``Retry-After``, in the API's error shape, rather than
    letting the cancellation reach the server: uvicorn logged it as a traceback ("Exception
    in ASGI application") and answered a bare ``500 Internal Server Error``."""

    def __init__(
        self, app: ASGIApp, *, metrics: Metrics | None, access_log: AccessLog | None
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log
        self._id_prefix = os.urandom(6).hex()
        self._ids = itertools.count(1)
        #: Full template of every route, by ``id``: mounted routes with their mount's prefix.
        self._templates: dict[int, str] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._flushing_at_shutdown(send))
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.metrics is None and self.access_log is None:
            await _refusing_when_cancelled(self.app, scope, receive, send)
            return
        if self._templates is None:  # the first request: the app (not a mounted one) is known
            self._templates = dict(_templates(getattr(scope.get("app"), "routes", ()), ""))
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
            await _refusing_when_cancelled(self.app, scope, receive, send_observed)
        finally:
            seconds = time.perf_counter() - start
            template = self._template(scope)
            if self.metrics is not None:
                method = scope["method"]
                label = method if method in METHODS else OTHER_METHOD
                self.metrics.observe_request(label, template, status, seconds)
            if self.access_log is not None:
                self.access_log.write(
                    scope["method"],
                    template,
                    scope["path"],
                    status,
                    seconds,
                    request_id.decode("latin-1"),
                )

    def _flushing_at_shutdown(self, send: Send) -> Send:
        """``send`` for the lifespan: the last counts and lines go out when the app has
        stopped (after the requests it finished), not with the process. A worker stopped
        by SIGTERM or SIGHUP otherwise took up to a second of counts with it, which in
        multiprocess mode the other workers go on reporting without."""

        async def send_flushed(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                if self.metrics is not None:
                    self.metrics.flush()
                if self.access_log is not None:
                    self.access_log.flush()
            await send(message)

        return send_flushed

    def _template(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None:
            return UNMATCHED
        found = self._templates.get(id(route)) if self._templates is not None else None
        return found or getattr(route, "path", None) or UNMATCHED


async def _refusing_when_cancelled(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send
) -> None:
    """``app``, except that when the server cancels it before its response started, the
    client gets a ``503`` (the server is stopping: retry, on another node) and the
    cancellation ends here. One after the response started propagates (nothing can be
    said any more)."""
    started = False

    async def send_started(message: Message) -> None:
        nonlocal started
        started = started or message["type"] == "http.response.start"
        await send(message)

    try:
        await app(scope, receive, send_started)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if started or task is None:
            raise
        task.uncancel()  # this task goes on, only to answer
        stopping = Unavailable("the server is stopping; retry the request")
        if scope["path"].startswith("/ee/"):
            response = failure(stopping, str(uuid.uuid4()), {})
        else:
            response = to_response(stopping)
        response.headers["connection"] = "close"
        await response(scope, receive, send_started)


def _templates(routes: Iterable[BaseRoute], prefix: str) -> Iterator[tuple[int, str]]:
    """(``id``, template) of every route under ``routes``, inside mounts too: the router
    of a ``Mount`` names only the inner route, whose ``path`` leaves out the mount's."""
    for route in routes:
        path = getattr(route, "path", None)
        if path is None:
            continue
        yield id(route), prefix + path
        if isinstance(route, Mount):
            yield from _templates(route.routes, prefix + path)
