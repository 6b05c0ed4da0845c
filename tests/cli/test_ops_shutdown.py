"""SIGTERM to ``nextoffer serve`` as an operator sends it (to the server's process, as
``docker stop`` does): requests in flight are answered, decisions answered 200 are stored,
and the server exits in bounded time without a traceback."""

from __future__ import annotations

import asyncio
import signal
import socket
import sqlite3
import time
from pathlib import Path

import httpx
import orjson

from support.live import DECIDE_TYPE, LiveServer, decision_request, headers_of, make_tenant


def stop_and_time(server: LiveServer) -> float:
    """SIGTERM to the server's own process (not its group); seconds until it exited."""
    assert server.process is not None
    start = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(timeout=30)
    return time.monotonic() - start


def test_sigterm_under_load_stores_every_decision_answered_200(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'ops.db'}"
    creds, ids = make_tenant(db_url, "OPS@AdobeOrg", "prod", seed=True)
    url = f"/data/core/ode/{creds.container_id}/decisions"
    headers = {**headers_of(creds), "Content-Type": DECIDE_TYPE}
    answered: list[str] = []
    failures: list[str] = []
    server = LiveServer(db_url, workdir=tmp_path, workers=2).start()

    async def client(n: int, http: httpx.AsyncClient, until: float) -> None:
        i = 0
        while time.monotonic() < until:
            i += 1
            body = orjson.dumps(decision_request(ids, f"u{n}-{i}@x"))
            try:
                response = await http.post(url, content=body, headers=headers)
            except httpx.TransportError:  # refused or closed once the server stops
                await asyncio.sleep(0.05)
                continue
            if response.status_code == 200:
                answered.append(response.json()["xdm:propositionId"])
            else:
                failures.append(f"{response.status_code} {response.text[:200]}")

    async def load() -> float:
        until = time.monotonic() + 3
        async with httpx.AsyncClient(base_url=server.base, timeout=30) as http:
            clients = asyncio.gather(*(client(n, http, until) for n in range(8)))
            await asyncio.sleep(1.5)
            took = await asyncio.to_thread(stop_and_time, server)
            await clients
        return took

    try:
        took = asyncio.run(load())
    finally:
        server.stop()
    assert answered and not failures
    with sqlite3.connect(tmp_path / "ops.db") as db:
        stored = {row[0] for row in db.execute("SELECT proposition_id FROM decision_events")}
    assert set(answered) <= stored
    assert took < 10 and server.process is not None and server.process.returncode == 0
    assert "Traceback" not in server.log_text()


def test_a_request_still_running_when_the_shutdown_times_out_gets_503(tmp_path: Path) -> None:
    """A body still arriving NEXTOFFER_SHUTDOWN_TIMEOUT after SIGTERM: uvicorn cancelled the
    request, logged "Exception in ASGI application" with a traceback, and answered a bare
    500."""
    db_url = f"sqlite:///{tmp_path / 'ops.db'}"
    creds, _ = make_tenant(db_url, "OPS@AdobeOrg", "prod", seed=True)
    server = LiveServer(
        db_url, workdir=tmp_path, env={"NEXTOFFER_SHUTDOWN_TIMEOUT": "1"}, access_log=True
    ).start()
    head = "".join(f"{k}: {v}\r\n" for k, v in headers_of(creds).items())
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
            sock.sendall(
                f"POST /data/core/ode/{creds.container_id}/decisions HTTP/1.1\r\nHost: x\r\n"
                f"{head}Content-Type: {DECIDE_TYPE}\r\nContent-Length: 1000\r\n\r\n{{".encode()
            )
            time.sleep(0.5)  # the request is in the app, waiting for the rest of its body
            took = stop_and_time(server)
            answer = sock.recv(65536).decode()
    finally:
        server.stop()
    status, _, rest = answer.partition("\r\n")
    assert status == "HTTP/1.1 503 Service Unavailable", answer
    assert "retry-after: 1" in rest and "content-type: application/problem+json" in rest
    assert took < 10
    log = server.log_text()
    assert "Traceback" not in log and "Exception in ASGI application" not in log
    assert '"status":503' in log  # its access line
