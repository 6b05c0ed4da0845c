"""Shared pieces of the HTTP benchmarks: a server subprocess and a wrk driver.

The server is nextoffer's own app plus two extra routes: ``GET /bare``, answering a small
JSON body with no framework work beyond routing — the ceiling of this server stack,
measured in the same run as the endpoints it is compared with — and ``POST
/floor/{container_id}`` (``io_floor.py``), only the IO a recorded decision must do.

``GET /bare`` still passes nextoffer's middleware (metrics, access log, the decision
shortcut) and Starlette's router. ``GET /asgi`` is answered ahead of all of it by a plain
ASGI callable in the same worker: the rate of a bare uvicorn ASGI app, issue 16's reference
read literally. ``POST /asgi/exchange?bytes=N`` is that callable for a decision's exchange:
it reads the request's body and answers ``N`` bytes under a decision's response headers.
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
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import httpx

SERVER = """
import os
from starlette.responses import Response
from starlette.routing import Route
from nextoffer.api.app import create_app
from nextoffer.api.media import DECISION_RESPONSE
from nextoffer.settings import Settings

async def bare(request):
    return Response(b'{"status":"ok"}', media_type="application/json")

ASGI_BODY = b'{"status":"ok"}'
ASGI_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json"), (b"content-length", b"15")],
}
ASGI_DONE = {"type": "http.response.body", "body": ASGI_BODY}
DECISION_TYPE = DECISION_RESPONSE.encode()
#: ``POST /asgi/exchange?bytes=N``'s two messages, by N.
EXCHANGES = {}


def exchange_messages(size):
    # A decision response's headers (as the app sends them) and a body of ``size`` bytes.
    messages = EXCHANGES.get(size)
    if messages is None:
        start = {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-length", str(size).encode()),
                (b"content-type", DECISION_TYPE),
                (b"x-request-id", b"0123456789ab00000001"),
            ],
        }
        body = {"type": "http.response.body", "body": b" " * size}
        messages = EXCHANGES[size] = (start, body)
    return messages

def factory():
    app = create_app(Settings.from_env())
    app.router.routes.insert(0, Route("/bare", bare, methods=["GET"]))
    try:
        from io_floor import ROUTE
    except ImportError:  # a checkout older than what it uses (--compare)
        pass
    else:
        # Served by the decision route's shortcut, as decisions are (the app builds its
        # middleware at the first request, from these entries).
        for entry in app.user_middleware:
            if entry.cls.__name__ == "Shortcut":
                entry.kwargs["routes"] = [*entry.kwargs["routes"], ROUTE]
                break
        else:  # a checkout without the shortcut
            app.router.routes.insert(0, ROUTE)

    async def outer(scope, receive, send):
        # A bare ASGI app: no middleware, no router, no request object.
        if scope["type"] == "http" and scope["path"] == "/asgi":
            await send(ASGI_START)
            await send(ASGI_DONE)
            return
        if scope["type"] == "http" and scope["path"] == "/asgi/exchange":
            # The same, for a decision's exchange: its request read to the end, an answer
            # as long as a decision's (``?bytes=N``) with a decision's headers.
            while (await receive()).get("more_body"):
                pass
            start, body = exchange_messages(int(scope["query_string"].partition(b"=")[2]))
            await send(start)
            await send(body)
            return
        await app(scope, receive, send)

    return outer
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_LOGS = ["--no-access-log", "--log-level", "warning"]
_QUIET = ["--factory", *_LOGS]

#: ``Server(stack=…)``: each stack's command (app dir, host, port and workers are appended).
STACKS = {
    "uvicorn": ["uvicorn", *_QUIET],
    "uvicorn-h11": ["uvicorn", *_QUIET, "--http", "h11", "--loop", "asyncio"],
    "granian": ["granian", *_QUIET, "--interface", "asgi"],
    # granian pared to what nextoffer uses: HTTP/1 only, no websockets, a single-threaded
    # runtime per worker, on uvloop.
    "granian-st": [
        "granian",
        *_QUIET,
        *("--interface", "asgi", "--http", "1", "--no-ws"),
        *("--runtime-mode", "st", "--loop", "uvloop"),
    ],
    # … and granian's own (Rust) task for each request instead of an asyncio task.
    "granian-st-rust-tasks": [
        "granian",
        *_QUIET,
        *("--interface", "asgi", "--http", "1", "--no-ws"),
        *("--runtime-mode", "st", "--loop", "uvloop", "--task-impl", "rust"),
    ],
    # uvicorn without its proxy-headers middleware (on by default for 127.0.0.1 peers).
    "uvicorn-no-proxy": ["uvicorn", *_QUIET, "--no-proxy-headers"],
}


class AppStack(NamedTuple):
    """A stack serving an app of bench/ instead of nextoffer's (``Server(stack=…)``)."""

    #: The stack's command, as in :data:`STACKS` (app dir, host, port and workers appended).
    command: list[str]
    #: ``module:attribute``; the module, a file of bench/, is copied beside the server's.
    target: str
    #: A path the app answers at once with no work: what a drain between rows times.
    bare_path: str


#: ``Server(stack=…)`` too, apart from :data:`STACKS`: these serve another app than
#: nextoffer's, so a comparison of stacks for nextoffer's app leaves them out.
APP_STACKS = {
    # rsgi_decide.py: decisions with no framework over granian's RSGI interface, pared as
    # granian-st is; ``GET /rsgi`` is its bare app.
    "granian-rsgi": AppStack(
        [
            "granian",
            *_LOGS,
            *("--interface", "rsgi", "--http", "1", "--no-ws"),
            *("--runtime-mode", "st", "--loop", "uvloop"),
        ],
        "rsgi_decide:app",
        "/rsgi",
    ),
}


class Server:
    """nextoffer's app plus ``GET /bare`` and ``GET /asgi`` under one of :data:`STACKS`,
    ``workers`` processes; or, under one of :data:`APP_STACKS`, that stack's own app.

    ``uvicorn`` runs httptools + uvloop, ``uvicorn-h11`` h11 + asyncio, ``granian`` its
    ASGI interface (on uvloop). With more than one worker, uvicorn on the asyncio loop
    leaves TCP_NODELAY off (Kludex/uvicorn#3149): keep-alive requests wait on delayed ACKs
    (~44 ms), which is most of what ``uvicorn-h11`` measures then.

    ``env`` adds ``NEXTOFFER_*`` settings (e.g. ``NEXTOFFER_METRICS=0``); the server's
    stdout (the JSON access log when on) goes to ``log`` or is discarded. ``cpus`` pins
    the server, and every process and thread it starts, to those cores. ``bare_path`` is
    a path it answers at once with no work (what a drain between rows times).
    """

    def __init__(
        self,
        db_url: str,
        *,
        workers: int = 1,
        env: dict[str, str] | None = None,
        log: Path | None = None,
        stack: str = "uvicorn",
        cpus: set[int] | None = None,
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        appdir = self._appdir = Path(tempfile.mkdtemp(prefix="nextoffer-bench-app-"))
        (appdir / "benchserver.py").write_text(SERVER)
        (appdir / "io_floor.py").write_text((Path(__file__).parent / "io_floor.py").read_text())
        env = {**os.environ, "NEXTOFFER_DB": db_url, **(env or {})}
        if workers > 1:
            # prometheus-client's multiprocess mode, as ``nextoffer serve`` sets it up.
            env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(appdir))
        if stack in APP_STACKS:
            (module, *options), target, self.bare_path = APP_STACKS[stack]
            source = Path(__file__).parent / f"{target.partition(':')[0]}.py"
            shutil.copy(source, appdir)
        else:
            (module, *options), target = STACKS[stack], "benchserver:factory"
            self.bare_path = "/bare"
        app_dir = "--working-dir" if module == "granian" else "--app-dir"
        self._log = log.open("ab") if log is not None else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", module, target, *options),
                *(app_dir, str(appdir), "--host", "127.0.0.1", "--port", str(self.port)),
                *("--workers", str(workers)),
            ],
            env=env,
            stdout=self._log,
            # On these cores from its first instruction: every thread it starts inherits.
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.base + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("server did not start")

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server's processes have used so far: the master
        and its workers, read from ``/proc`` (Linux)."""
        total = 0.0
        pending = [self.process.pid]
        while pending:
            pid = pending.pop()
            try:
                total += process_cpu_seconds(pid)
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:  # gone meanwhile
                continue
            pending.extend(int(child) for child in children)
        return total

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        if hasattr(self._log, "close"):
            self._log.close()
        shutil.rmtree(self._appdir, ignore_errors=True)  # its module, its metrics' files


@dataclass
class Result:
    name: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    p999_ms: float = float("nan")
    requests: int = 0
    #: Latency (ms) at each of :data:`TAIL_PERCENTILES`: what :func:`pooled_percentile`
    #: needs to put several runs' requests together.
    tail_ms: tuple[float, ...] = ()


#: The percentiles a run's latency is kept at: 1 to 89 by 1, then 90 to 99.99 by 0.01 (the
#: tail, where a step is ~2.5 requests of a 5 s window at one connection).
TAIL_PERCENTILES: tuple[float, ...] = tuple(float(p) for p in range(1, 90)) + tuple(
    90 + i / 100 for i in range(1000)
)

#: Printed by every wrk run: exact percentiles from wrk's histogram, in microseconds.
_DONE = """
done = function(summary, latency, requests)
  io.write(string.format("PCT %d %d %d %d\\n", latency:percentile(50), latency:percentile(99),
                         latency:percentile(99.9), summary.requests))
  local tail = {}
  for p = 1, 89 do tail[#tail + 1] = latency:percentile(p) end
  for i = 0, 999 do tail[#tail + 1] = latency:percentile(90 + i / 100) end
  io.write("TAIL ", table.concat(tail, " "), "\\n")
end
"""


def probed_servers(
    db_url: str,
    setups: dict[str, tuple[int, dict[str, str]]],
    *,
    probe: str,
    out_var: str,
    workdir: Path,
) -> dict[str, tuple[Server, Path]]:
    """One :class:`Server` per setup (name → workers and environment), each of whose
    processes loads ``probe`` as its ``sitecustomize`` first (a benchmark's timers inside
    the workers) and finds in the variable ``out_var`` a folder of its server's own to write
    what it measured to. A setup's own ``PYTHONPATH`` (another tree's ``src``) comes after
    the probe. Returns name → (server, that folder); each server's stdout goes to a log in
    ``workdir``. A server that fails to start stops the ones started before it."""
    site = workdir / "probe"
    site.mkdir()
    (site / "sitecustomize.py").write_text(probe)
    servers: dict[str, tuple[Server, Path]] = {}
    try:
        for n, (name, (workers, env)) in enumerate(setups.items()):
            out = workdir / f"probe-{n}"
            out.mkdir()
            path = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH")) if p)
            server_env = {**env, "PYTHONPATH": path, out_var: str(out)}
            log = workdir / f"server-{n}.log"
            servers[name] = (Server(db_url, workers=workers, env=server_env, log=log), out)
    except BaseException:
        for server, _ in servers.values():
            server.stop()
        raise
    return servers


def tail_of(sorted_ms: Sequence[float]) -> tuple[float, ...]:
    """:data:`TAIL_PERCENTILES` of latencies measured here (sorted, ms), as wrk keeps them."""
    n = len(sorted_ms)
    if not n:
        return ()
    return tuple(sorted_ms[min(n - 1, int(p / 100 * n))] for p in TAIL_PERCENTILES)


def pooled_percentile(windows: Sequence[tuple[int, Sequence[float]]], q: float) -> float:
    """The ``q``-th percentile of several runs' requests taken together, each run given as
    (its request count, its latency at :data:`TAIL_PERCENTILES`).

    A run's share of requests at or under ``x`` is read as the highest kept percentile
    whose latency is at most ``x`` (a lower bound, so the result never understates the
    latency); the answer is the smallest kept latency of any run at which the runs
    together reach ``q`` per cent. Eight runs of ~25,000 requests put a p99 on ~2,000 slow
    requests where one run's rests on ~250."""
    windows = [(n, tail) for n, tail in windows if n and tail]
    if not windows:
        return float("nan")
    total = sum(n for n, _ in windows)
    wanted = q / 100 * total

    def at_or_under(x: float) -> float:
        found = 0.0
        for n, tail in windows:
            k = bisect_right(tail, x)
            found += n * (TAIL_PERCENTILES[k - 1] / 100 if k else 0.0)
        return found

    candidates = sorted({v for _, tail in windows for v in tail})
    lo, hi = 0, len(candidates) - 1
    while lo < hi:  # the first candidate where the runs reach ``wanted``
        mid = (lo + hi) // 2
        if at_or_under(candidates[mid]) >= wanted:
            hi = mid
        else:
            lo = mid + 1
    return candidates[lo]


def process_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process ``pid`` has used so far, from ``/proc`` (Linux)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # fields 14, 15


def wrk(
    name: str,
    url: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: str | None = None,
    seconds: int = 10,
    connections: int = 10,
    threads: int = 1,
    lua: str = "",
) -> Result:
    """Drive ``url`` with wrk for a fixed, bounded time and parse its report.

    ``lua`` is appended to the generated script (e.g. a ``request`` function that varies
    the body); the script always reports p50/p99/p99.9 from wrk's own histogram.
    """
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    script_lines = [f'wrk.method = "{method}"']
    for key, value in (headers or {}).items():
        script_lines.append(f"wrk.headers[{json.dumps(key)}] = {json.dumps(value)}")
    if body is not None:
        script_lines.append(f"wrk.body = {json.dumps(body)}")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write("\n".join(script_lines) + "\n" + lua + _DONE)
    try:
        out = subprocess.run(
            [
                "wrk",
                "-t",
                str(min(threads, connections)),
                "-c",
                str(connections),
                "-d",
                f"{seconds}s",
                "--timeout",
                "5s",
                "--latency",
                "-s",
                script.name,
                url,
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    finally:
        os.unlink(script.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    pct = re.search(r"PCT (\d+) (\d+) (\d+) (\d+)", out)
    p50, p99, p999, count = (int(v) for v in pct.groups())  # type: ignore[union-attr]
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    tail = re.search(r"^TAIL ([\d. ]+)$", out, re.MULTILINE)
    tail_ms = tuple(float(v) / 1000 for v in tail.group(1).split()) if tail else ()
    return Result(name, rps, p50 / 1000, p99 / 1000, errors, p999 / 1000, count, tail_ms)


def machine() -> str:
    debian = Path("/etc/debian_version")
    release = debian.read_text().strip() if debian.exists() else ""
    return f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, {release}"
