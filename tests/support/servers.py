"""Real ``nextoffer serve`` processes for tests that need more than one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "nextoffer serve did not start: "
                    + (process.stderr.read() if process.stderr else "")
                )
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()
