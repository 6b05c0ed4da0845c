"""``nextoffer serve --demo`` on a real port: it prints the headers and a curl that works."""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
from importlib import import_module
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from nextoffer.cli.serve import serve


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_demo_serves_and_its_printed_curl_creates_a_fallback(tmp_path: Path) -> None:
    port = free_port()
    exe = Path(sys.executable).with_name("nextoffer")
    env = {**os.environ, "NEXTOFFER_DB": f"sqlite:///{tmp_path / 'demo.db'}"}
    process = subprocess.Popen(
        [str(exe), "serve", "--demo", "--port", str(port), "--no-access-log"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
        text=True,
    )
    output: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            raise AssertionError("the server did not come up")
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=20)
        output.append(out)
    text = output[0]
    for header in (
        "Authorization: Bearer ",
        "x-api-key: ",
        "x-gw-ims-org-id: ",
        "x-sandbox-name: ",
    ):
        assert header in text
    curls = [part.split("\n\n")[0] for part in text.split("curl ")[1:]]
    assert len(curls) == 2  # the seed request, and a decision

    def parse(curl: str) -> tuple[str, dict[str, str], str]:
        args = shlex.split(curl.replace("\\\n", " "))
        headers = dict(
            a.split(": ", 1) for a, prev in zip(args[1:], args, strict=False) if prev == "-H"
        )
        return next(a for a in args if a.startswith("http://")), headers, args[args.index("-d") + 1]

    url, headers, body = parse(curls[0])
    decide_url, decide_headers, decide_body = parse(curls[1])
    assert "  schema=" in headers["Content-Type"]
    # Serve again on the same database (the demo tenant is reused) and run the curl.
    process = subprocess.Popen(
        [str(exe), "serve", "--port", str(port), "--no-access-log"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                response = httpx.post(url, content=body, headers=headers, timeout=5)
                decision = httpx.post(
                    decide_url, content=decide_body, headers=decide_headers, timeout=5
                )
                break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            raise AssertionError("the server did not come up again")
    finally:
        process.terminate()
        process.wait(timeout=20)
    assert response.status_code == 201, response.text
    assert re.fullmatch(r"xcore:fallback-offer:[0-9a-f]{16}", response.json()["@id"])
    assert decision.status_code == 200, decision.text
    proposition = decision.json()["xdm:propositions"][0]
    assert proposition["xdm:options"][0]["xdm:name"] == "Holiday sale: 10% off"
    assert proposition["nextoffer:explain"]["candidates"]


def granian(tmp_path: Path, port: int, *extra: str, **popen: Any) -> subprocess.Popen[Any]:
    """``nextoffer serve --server granian --workers 2`` on ``port``, on a new database."""
    exe = Path(sys.executable).with_name("nextoffer")
    env = {**os.environ, "NEXTOFFER_DB": f"sqlite:///{tmp_path / 'g.db'}"}
    args = ["serve", "--server", "granian", "--workers", "2", "--port", str(port)]
    return subprocess.Popen([str(exe), *args, *extra], env=env, cwd=tmp_path, **popen)


def healthy(port: int) -> httpx.Response:
    """``GET /healthz`` once the server on ``port`` answers (within 30 s)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("the server did not come up")


def test_granian_serves_with_workers_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    process = granian(
        tmp_path, port, "--no-access-log", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        health = healthy(port)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    finally:
        process.terminate()
        code = process.wait(timeout=40)
    assert health.status_code == 200
    assert metrics.status_code == 200
    assert code == 0


def test_granian_missing_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # The module, not the ``serve`` command that shadows it on ``nextoffer.cli``.
    monkeypatch.setattr(import_module("nextoffer.cli.serve"), "find_spec", lambda name: None)
    result = CliRunner().invoke(serve, ["--server", "granian"])
    assert result.exit_code == 2
    assert "pip install 'nextoffer[granian]'" in result.output


def served(
    tmp_path: Path, *args: str, timeout: float = 60, **variables: str
) -> subprocess.CompletedProcess[str]:
    """``nextoffer serve ARGS`` expected to stop before serving (a timeout: it served)."""
    exe = Path(sys.executable).with_name("nextoffer")
    env = {k: v for k, v in os.environ.items() if k not in ("NEXTOFFER_DB", "NEXTOFFER_REDIS")}
    env.update(variables)
    return subprocess.run(
        [str(exe), "serve", "--no-access-log", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=timeout,
        check=False,
    )


def one_error_line(process: subprocess.CompletedProcess[str], code: int) -> str:
    assert process.returncode == code, process.stderr
    assert "Traceback" not in process.stderr and "startup failed" not in process.stderr
    assert process.stdout == ""
    lines = process.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and len(lines) == 1, process.stderr
    return lines[0]


@pytest.mark.parametrize("server", ["uvicorn", "granian"])
def test_serve_refuses_a_bad_database_or_redis_in_one_line_before_starting(tmp_path, server):
    not_a_database = tmp_path / "notes.txt"
    not_a_database.write_text("hello\n")
    port = str(free_port())
    base = ("--server", server, "--port", port)
    bad_url = served(tmp_path, *base, "--db", "notaurl")
    assert one_error_line(bad_url, 2) == "error: not a database URL: 'notaurl'"
    not_sqlite = served(tmp_path, *base, "--db", f"sqlite:///{not_a_database}")
    assert one_error_line(not_sqlite, 6) == (
        "error: the database is unavailable: file is not a database"
    )
    good_db = ("--db", f"sqlite:///{tmp_path / 'n.db'}")
    bad_redis = served(tmp_path, *base, *good_db, "--redis", "notaurl")
    assert one_error_line(bad_redis, 2).startswith("error: not a Redis URL: 'notaurl'")
    no_redis = served(tmp_path, *base, *good_db, "--redis", f"redis://127.0.0.1:{free_port()}/0")
    assert one_error_line(no_redis, 6).startswith(
        "error: the cap counter store (Redis) is unavailable"
    )


def test_serve_refuses_an_unreachable_postgresql_before_starting(tmp_path):
    process = served(tmp_path, "--port", str(free_port()), "--db", "postgresql://x@127.0.0.1:1/db")
    assert process.returncode == 6, process.stderr
    assert process.stderr.startswith("error: the database is unavailable: connection failed")
    assert "Traceback" not in process.stderr and "startup failed" not in process.stderr


@pytest.mark.parametrize("server", ["uvicorn", "granian"])
def test_serve_says_a_port_in_use_is_in_use(tmp_path, server):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = served(
            tmp_path, "--server", server, "--port", str(port), "--db", f"sqlite:///{tmp_path}/n.db"
        )
    assert one_error_line(process, 6) == f"error: port {port} is in use (on 127.0.0.1)"
    assert not (tmp_path / "n.db").exists()  # checked before anything else


def test_serve_refuses_a_metrics_folder_its_workers_cannot_write_in_one_line(tmp_path):
    """prometheus-client creates no folder: every worker failed as it started, and was
    started again, in a loop of tracebacks, serving nothing."""
    db = ("--db", f"sqlite:///{tmp_path / 'n.db'}", "--port", str(free_port()))
    missing = tmp_path / "no-such-folder"
    for workers in ("1", "2"):
        process = served(
            tmp_path, *db, "--workers", workers, timeout=20, PROMETHEUS_MULTIPROC_DIR=str(missing)
        )
        assert one_error_line(process, 2) == (
            f"error: PROMETHEUS_MULTIPROC_DIR={str(missing)!r} is not a folder"
        )
    assert not (tmp_path / "n.db").exists()  # checked before anything else
    a_file = tmp_path / "metrics.txt"
    a_file.write_text("")
    process = served(tmp_path, *db, timeout=20, PROMETHEUS_MULTIPROC_DIR=str(a_file))
    assert one_error_line(process, 2).endswith("is not a folder")


ONE_RECORD = """
import logging, logging.config, sys, uvicorn.config
from nextoffer.cli.serve import with_own_log
logging.config.dictConfig(with_own_log(uvicorn.config.LOGGING_CONFIG))
logging.getLogger("nextoffer.storage").error(
    "decision %s not recorded: connection failed: server closed the connection\\n"
    "\\tThis probably means the server terminated abnormally", "d-1"
)
logging.getLogger("nextoffer.service").info("retention: deleted 3 decision events")
logging.getLogger("uvicorn.error").info("Application startup complete.")
"""


def test_serve_logs_nextoffer_records_one_line_each_with_time_level_and_source(monkeypatch):
    """nextoffer's own records had no handler: Python's last resort wrote the bare message
    (no time, level or logger), a driver's three-line message as three records, and no
    INFO record (retention's deletions) at all."""
    process = subprocess.run(
        [sys.executable, "-c", ONE_RECORD], capture_output=True, text=True, check=True
    )
    lines = process.stderr.splitlines()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert re.fullmatch(
        stamp + r" ERROR nextoffer\.storage: decision d-1 not recorded: connection failed: "
        r"server closed the connection This probably means the server terminated abnormally",
        lines[0],
    ), process.stderr
    assert re.fullmatch(
        stamp + r" INFO nextoffer\.service: retention: deleted 3 decision events", lines[1]
    )
    assert lines[2].endswith("Application startup complete.")  # the server's own, as before
    assert len(lines) == 3 and process.stdout == ""  # stdout is the access log's
    # And serve hands that configuration to the server.
    for key in ("NEXTOFFER_DB", "NEXTOFFER_ACCESS_LOG", "NEXTOFFER_METRICS"):
        monkeypatch.setenv(key, "")  # serve sets them for its workers: put back after
    calls: list[dict[str, object]] = []
    monkeypatch.setattr("uvicorn.run", lambda *args, **kwargs: calls.append(kwargs))
    monkeypatch.setattr(import_module("nextoffer.cli.serve"), "check_stores", lambda s: None)
    result = CliRunner().invoke(serve, ["--port", str(free_port()), "--db", "sqlite://"])
    assert result.exit_code == 0, result.output
    config = calls[0]["log_config"]
    assert isinstance(config, dict) and config["loggers"]["nextoffer"]["level"] == "INFO"


def test_granian_keeps_stdout_for_the_json_access_log(tmp_path: Path) -> None:
    """granian wrote its own lines ("[INFO] Starting granian") to stdout, among the JSON
    access lines a log collector parses one object a line."""
    port = free_port()
    process = granian(tmp_path, port, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        health = healthy(port)
    finally:
        process.terminate()
        out, err = process.communicate(timeout=40)
    assert health.status_code == 200
    lines = out.splitlines()
    assert lines and all(line.startswith('{"time":') for line in lines), out
    assert "Starting granian" in err


def test_serve_warns_at_start_when_a_redis_restart_would_lose_cap_counters(tmp_path, capsys):
    from nextoffer.cli.serve import check_stores
    from nextoffer.settings import Settings
    from support.backends import redis_url

    # The suite's Redis keeps no append-only file (scripts/services: --appendonly no).
    check_stores(Settings(db_url=f"sqlite:///{tmp_path / 'w.db'}", redis_url=redis_url()))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        "warning: Redis keeps no append-only file (appendonly no): a restart of it loses"
    ), err
