"""Structured access logs and request metrics: one ASGI middleware around the whole app.

For every HTTP request it measures the time until the response's last byte, counts it in
:class:`~nextoffer.api.metrics.Metrics` under its route *template*, and — when access
logs are on — writes one JSON line to the ``nextoffer.access`` logger (stdout under
``nextoffer serve``)::

    {"time":"2026-11-30T10:00:00.123Z","method":"POST","route":"/data/core/ode/{container_id}/decisions",
     "path":"/data/core/ode/abc/decisions","status":200,"duration_ms":4.21,"request_id":"…"}

The request id is the caller's ``x-request-id`` when it sends one (so a gateway's id
follows the request), otherwise a fresh one; either way it is returned in the
``x-request-id`` response header.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nextoffer.api.metrics import Metrics

log = logging.getLogger("nextoffer.access")
UNMATCHED = "<unmatched>"


class _Stdout(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stdout`` is at the time (test runners swap it)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_stdout() -> None:
    """Send access lines, unadorned, to stdout (once per process)."""
    if not any(isinstance(h, _Stdout) for h in log.handlers):
        handler = _Stdout()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


class Observe:
    """Metrics for every request, and a JSON access line when ``access_log`` is on."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics | None, access_log: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.metrics is None and not self.access_log):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value[:200]
                break
        if request_id is None:
            request_id = uuid.uuid4().hex.encode()
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
            if self.access_log:
                self._write(scope, template, status, seconds, request_id)

    @staticmethod
    def _write(scope: Scope, template: str, status: int, seconds: float, request_id: bytes) -> None:
        line: dict[str, Any] = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "method": scope["method"],
            "route": template,
            "path": scope["path"],
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
            "request_id": request_id.decode("latin-1"),
        }
        log.info(orjson.dumps(line).decode())
