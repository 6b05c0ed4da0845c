"""Real ``nextoffer serve`` processes for tests that need more than one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
