"""Real ``nextoffer serve`` processes for tests that need more than one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(db_url: str, *, workdir: Path, extra: tuple[str, ...] = ()) -> Iterator[str]:
    """A ``nextoffer serve`` process on a free loopback port; yields its base URL."""
    port = free_port()
    exe = Path(sys.executable).with_name("nextoffer")
    process = subprocess.Popen(
        [str(exe), "serve", "--port", str(port), "--db", db_url, "--no-access-log", *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=workdir,
        env={**os.environ},
    )
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200

    def failed() -> str:
        return "nextoffer serve did not start: " + (process.stderr.read() if process.stderr else "")

    try:
        with until_ready(process, healthy, failed, stop_seconds=20):
            yield base
    finally:
        if process.stderr:
            process.stderr.close()


@contextmanager
def redis_server(port: int, folder: Path, *options: str) -> Iterator[str]:
    """A ``redis-server`` of the test's own on ``port`` (no snapshots; ``options`` added),
    its files in ``folder``; yields its URL once it answers, stops it when the block
    ends. Started again on the same port and folder, it is the same server restarted."""
    import redis

    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    process = subprocess.Popen(
        [*command, "--dir", str(folder), *options], stdout=subprocess.DEVNULL
    )
    client = redis.Redis(port=port, socket_connect_timeout=1)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        with until_ready(process, answers, lambda: "redis-server did not start"):
            yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()


@contextmanager
def until_ready(
    process: subprocess.Popen[Any],
    ready: Callable[[], bool],
    failed: Callable[[], str],
    *,
    start_seconds: float = 30,
    stop_seconds: float = 10,
) -> Iterator[None]:
    """Wait until ``ready()`` says the started ``process`` answers (a transport error is
    "not yet"), or fail with ``failed()`` when it exits or ``start_seconds`` pass; stop
    it (terminate, then kill) when the block ends."""
    try:
        deadline = time.monotonic() + start_seconds
        while True:
            try:
                if ready():
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(failed())
            time.sleep(0.1)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=stop_seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Forwarder:
    """A TCP forwarder on ``port`` to ``target``, listening from ``after`` seconds on
    (a database that comes up late) until :meth:`stop` (a database that goes away: its
    connections are cut too)."""

    def __init__(self, target: tuple[str, int], port: int, *, after: float = 0.0) -> None:
        self._target = target
        self._port = port
        self._after = after
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._opened: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._listening = threading.Event()

    def __enter__(self) -> Forwarder:
        self._thread.start()
        if self._after == 0:
            self._listening.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        with self._lock:
            opened, self._opened = self._opened, []
        for sock in opened:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _serve(self) -> None:
        if self._stop.wait(self._after):
            return
        with socket.create_server(("127.0.0.1", self._port)) as listener:
            listener.settimeout(0.1)
            self._listening.set()
            while not self._stop.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                upstream = socket.create_connection(self._target)
                with self._lock:
                    self._opened += [client, upstream]
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=_pump, args=(a, b), daemon=True).start()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    # Each direction ends on its own: at end of file it passes the end on and leaves both
    # sockets open for the other direction (closed by ``stop``). A peer that resets, or a
    # socket closed by ``stop``, ends it too.
    try:
        while data := src.recv(65536):
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        return
