"""Shared pieces of the HTTP benchmarks: a server subprocess and a wrk driver.

The server is nextoffer's own app plus one extra route, ``GET /bare``, answering a small
JSON body with no framework work beyond routing: the ceiling of this server stack,
measured in the same run as the endpoints it is compared with.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

SERVER = """
import sys, uvicorn
from starlette.responses import Response
from starlette.routing import Route
from nextoffer.api.app import create_app
from nextoffer.settings import Settings

async def bare(request):
    return Response(b'{"status":"ok"}', media_type="application/json")

def factory():
    app = create_app(Settings(db_url=sys.argv[1]))
    app.router.routes.insert(0, Route("/bare", bare, methods=["GET"]))
    return app

uvicorn.run(factory, factory=True, host="127.0.0.1", port=int(sys.argv[2]),
            workers=1, access_log=False, log_level="warning")
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, db_url: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen([sys.executable, "-c", SERVER, db_url, str(self.port)])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.base + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)


@dataclass
class Result:
    name: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(name: str, url: str, *, method: str = "GET", headers: dict[str, str] | None = None,
        body: str | None = None, seconds: int = 10, connections: int = 10, threads: int = 1) -> Result:
    """Drive ``url`` with wrk for a fixed, bounded time and parse its report."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    lua = [f'wrk.method = "{method}"']
    for key, value in (headers or {}).items():
        lua.append(f"wrk.headers[{json.dumps(key)}] = {json.dumps(value)}")
    if body is not None:
        lua.append(f"wrk.body = {json.dumps(body)}")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write("\n".join(lua) + "\n")
    try:
        out = subprocess.run(
            ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--latency",
             "-s", script.name, url],
            check=True, capture_output=True, text=True,
        ).stdout
    finally:
        os.unlink(script.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    return Result(name, rps, p50, p99, errors)


def machine() -> str:
    return f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, {Path('/etc/debian_version').read_text().strip() if Path('/etc/debian_version').exists() else ''}"
