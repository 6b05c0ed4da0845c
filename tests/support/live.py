"""A live ``nextoffer serve`` for the reliability suites and scripts (tests and bench/).

Unlike :func:`support.servers.serve`, a :class:`LiveServer` can be killed with SIGKILL and
started again on the same port and database, and it reports its process for RSS
readings. Tenants are bootstrapped and libraries seeded in-process, straight into the
database, before (or while) the server runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from nextoffer.cli.demo import seed_library
from nextoffer.root import NextOffer
from nextoffer.service.tenants import Credentials
from nextoffer.settings import Settings

DECIDE_TYPE = (
    'application/vnd.adobe.xdm+json; schema="https://ns.adobe.com/experience/offer-management/'
    'decision-request;version=1.0"'
)
PATCH_TYPE = "application/vnd.adobe.platform.xcore.patch.hal+json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def headers_of(creds: Credentials) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {creds.access_token}",
        "x-api-key": creds.api_key,
        "x-gw-ims-org-id": creds.org,
        "x-sandbox-name": creds.sandbox,
    }


def make_tenant(
    db_url: str, org: str, sandbox: str, *, seed: bool = False
) -> tuple[Credentials, dict[str, str]]:
    """Bootstrap ``org``/``sandbox``; with ``seed``, the demo library. Returns the
    credentials and the seeded ``@id`` by short name (empty without ``seed``)."""
    with NextOffer.open(Settings(db_url=db_url)) as no:
        creds = no.bootstrap(org=org, sandbox=sandbox)
        ids: dict[str, str] = {}
        if seed:
            ids = seed_library(no.repository, creds.principal, creds.container_id)
            # Instance ids too (``<name>@instance``), for paths.
            with no.store.session() as session:
                found = session.instances_by_at_id(creds.container_id, list(ids.values()))
            for name, at_id in list(ids.items()):
                ids[f"{name}@instance"] = found[at_id].instance_id
    return creds, ids


def decision_request(ids: dict[str, str], email: str) -> dict[str, Any]:
    return {
        "xdm:propositionRequests": [
            {"xdm:placementId": ids["placement"], "xdm:activityId": ids["decision"]}
        ],
        "xdm:profiles": [{"xdm:identityMap": {"Email": [{"xdm:id": email}]}}],
        "xdm:responseFormat": {"xdm:includeContent": True},
    }


class LiveServer:
    """``nextoffer serve`` on ``port`` (a free one by default) over ``db_url``."""

    def __init__(
        self,
        db_url: str,
        *,
        workdir: Path,
        port: int | None = None,
        workers: int = 1,
        env: dict[str, str] | None = None,
        access_log: bool = False,
    ) -> None:
        self.db_url = db_url
        self.access_log = access_log
        self.workdir = workdir
        self.port = port or free_port()
        self.workers = workers
        self.env = env or {}
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self._log = workdir / f"server-{self.port}.log"

    def start(self, timeout: float = 30) -> LiveServer:
        exe = Path(sys.executable).with_name("nextoffer")
        log = self._log.open("ab")
        self.process = subprocess.Popen(
            [
                str(exe),
                "serve",
                "--port",
                str(self.port),
                "--db",
                self.db_url,
                "--access-log" if self.access_log else "--no-access-log",
                "--workers",
                str(self.workers),
            ],
            stdout=log,
            stderr=log,
            cwd=self.workdir,
            env={**os.environ, **self.env},
            start_new_session=True,  # SIGKILL reaches uvicorn's workers through the group
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nextoffer serve did not start:\n{self.log_text()}")
            time.sleep(0.05)

    def log_text(self) -> str:
        return self._log.read_text(errors="replace") if self._log.exists() else ""

    def pids(self) -> list[int]:
        """The server's processes (the master and, with workers, its children)."""
        import psutil

        if self.process is None or self.process.poll() is not None:
            return []
        try:
            parent = psutil.Process(self.process.pid)
            return [parent.pid, *(c.pid for c in parent.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []

    def rss_bytes(self) -> int:
        import psutil

        total = 0
        for pid in self.pids():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += psutil.Process(pid).memory_info().rss
        return total

    def kill(self) -> None:
        """SIGKILL the whole server (no shutdown, no flush): a crash."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()

    def __enter__(self) -> LiveServer:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
