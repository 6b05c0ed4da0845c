"""``nextoffer serve``: run the HTTP service (optionally with a seeded demo tenant)."""

from __future__ import annotations

import atexit
import copy
import logging
import math
import os
import re
import shutil
import tempfile
import time
from importlib.util import find_spec
from typing import Any

import click
import uvicorn

from nextoffer.cli.options import db_option
from nextoffer.errors import BadRequest, CountersLost, CountersNotMoved, Unavailable
from nextoffer.settings import Settings


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@db_option(creates=True)
@click.option(
    "--redis",
    "redis_url",
    envvar="NEXTOFFER_REDIS",
    help="redis://host:port/N: cap counters in Redis.",
)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--demo", is_flag=True, help="Create a demo tenant with a small library and print a ready curl."
)
@click.option(
    "--access-log/--no-access-log",
    default=True,
    show_default=True,
    help="One line per request on stdout.",
)
@click.option(
    "--access-log-format",
    type=click.Choice(["json", "text"]),
    default="json",
    show_default=True,
    help="json: one JSON object per line (time, method, route, status, duration, request id); "
    "text: the server's own (uvicorn's or granian's).",
)
@click.option(
    "--metrics/--no-metrics",
    default=None,
    help=(
        "Serve GET /metrics without credentials (default on; NEXTOFFER_METRICS). "
        "Keep it off the public network."
    ),
)
@click.option(
    "--server",
    type=click.Choice(["uvicorn", "granian"]),
    default="uvicorn",
    show_default=True,
    help="HTTP server. granian (pip install 'nextoffer[granian]') has the higher ceiling; "
    "on decisions neither is clearly faster.",
)
def serve(
    host: str,
    port: int,
    db_url: str | None,
    redis_url: str | None,
    workers: int,
    demo: bool,
    access_log: bool,
    access_log_format: str,
    metrics: bool | None,
    server: str,
) -> None:
    """Serve the Offer Library and Decisioning APIs."""
    if server == "granian" and find_spec("granian") is None:
        raise click.UsageError("--server granian needs granian: pip install 'nextoffer[granian]'")
    json_log = access_log and access_log_format == "json"
    settings = Settings.from_env(
        db_url=db_url,
        host=host,
        port=port,
        workers=workers,
        access_log=json_log,
        metrics=metrics,
        redis_url=redis_url,
    )
    check_port(settings.host, settings.port)
    if settings.metrics and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        check_metrics_folder(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    if demo:
        from nextoffer.cli.demo import seed_demo

        seed_demo(settings)  # opens the database and Redis: a bad one is one line
    else:
        check_stores(settings)
    # Worker processes build their app from the environment, so pass the settings there.
    os.environ["NEXTOFFER_DB"] = settings.db_url
    if settings.redis_url:
        os.environ["NEXTOFFER_REDIS"] = settings.redis_url
    os.environ["NEXTOFFER_ACCESS_LOG"] = "1" if settings.access_log else "0"
    os.environ["NEXTOFFER_METRICS"] = "1" if settings.metrics else "0"
    if settings.metrics and settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # prometheus-client's multiprocess mode: each worker writes its samples to files
        # here and /metrics aggregates them. The workers import prometheus-client after
        # this is set; a fresh folder per server so no dead process's counts linger.
        folder = tempfile.mkdtemp(prefix="nextoffer-metrics-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    text_log = access_log and access_log_format == "text"
    if server == "granian":
        run_granian(settings, access_log=text_log)
        return
    uvicorn.run(
        "nextoffer.api.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        access_log=text_log,
        log_level="info",
        log_config=with_own_log(uvicorn.config.LOGGING_CONFIG),
        # SIGTERM: stop accepting, let in-flight requests finish (up to this long), exit.
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout),
    )


class OneLineFormatter(logging.Formatter):
    """``2026-12-07T17:01:02.123Z ERROR nextoffer.service: message``, on one line: nextoffer's
    own records had no handler, so Python's last resort wrote the bare message (no time,
    level or source), and a driver's message over three lines (psycopg's "connection
    failed", then "This probably means…" on a line of its own) read as three records to a
    log collector. A traceback still follows its record's line, as the server's own do."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = _BREAKS.sub(" ", record.message)
        return super().formatMessage(record)


_BREAKS = re.compile(r"\s*[\r\n]\s*")


def with_own_log(config: dict[str, Any]) -> dict[str, Any]:
    """The server's logging ``config`` plus nextoffer's loggers: at INFO, one line a record,
    on stderr (stdout carries the JSON access log)."""
    config = copy.deepcopy(config)
    config.setdefault("formatters", {})["nextoffer"] = {"()": OneLineFormatter}
    config.setdefault("handlers", {})["nextoffer"] = {
        "formatter": "nextoffer",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
    }
    config.setdefault("loggers", {})["nextoffer"] = {
        "handlers": ["nextoffer"],
        "level": "INFO",
        "propagate": False,
    }
    return config


def granian_log(config: dict[str, Any]) -> dict[str, Any]:
    """granian's logging ``config`` with its own lines on stderr, as uvicorn's: granian
    writes them to stdout, where they broke the JSON access log's one object a line."""
    config = with_own_log(config)
    for handler in config["handlers"].values():
        if handler.get("stream") == "ext://sys.stdout" and handler.get("formatter") != "access":
            handler["stream"] = "ext://sys.stderr"
    return config


def check_port(host: str, port: int) -> None:
    """Refuse, in one line, an address the server could not listen on (a port in use, a
    host that is not this machine's) before the server starts and fails in a traceback."""
    import errno
    import socket

    if port == 0:  # any free port
        return
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BadRequest(f"--host {host!r}: {exc.strerror}") from None
    for family, kind, proto, _, address in found:
        with socket.socket(family, kind, proto) as probe:
            # As the servers bind: a port whose old connections linger (TIME_WAIT) is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise Unavailable(f"port {port} is in use (on {host})") from None
                raise BadRequest(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def check_metrics_folder(folder: str) -> None:
    """Refuse, in one line, a ``PROMETHEUS_MULTIPROC_DIR`` the workers could not write
    their samples to: prometheus-client creates no folder, so every worker failed as it
    started and was started again, in a loop of tracebacks, and nothing was served."""
    if not os.path.isdir(folder):
        raise BadRequest(f"PROMETHEUS_MULTIPROC_DIR={folder!r} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BadRequest(f"PROMETHEUS_MULTIPROC_DIR={folder!r} is not writable")


def check_stores(settings: Settings) -> None:
    """Open the database (upgrading an empty one, as a worker would) and reach Redis, so
    that a bad ``--db`` or ``--redis`` is one line, not a failed start in every worker;
    say what a restart of Redis would lose of the cap counters, which containers'
    counters it has lost already, and which containers' counters the database still holds
    (counted before Redis was added: ``admin counters --into-redis`` moves them)."""
    from nextoffer.storage.database import REDIS, require_client
    from nextoffer.storage.store import Store

    store = Store.open(settings.db_url, pool_size=1)
    try:
        if settings.redis_url:
            require_client(*REDIS)
            from nextoffer.storage.redis_counters import RedisCounters

            counters = RedisCounters.from_url(settings.redis_url, store=store)
            try:
                counters.ping()
                warning = counters.persistence_warning()
                lost = counters.markers.lost()
                unmoved = sorted(counters.moves.unmoved())
                # Counted in Redis already (first counted before caps failed closed).
                adopted = counters.markers.marked(unmoved)
            finally:
                counters.close()
            if warning is not None:  # served anyway: the operator's choice, said at start
                click.echo(f"warning: {warning}", err=True)
            if lost:  # served, capped offers as capped, until the operator acts
                click.echo(f"error: {CountersLost(lost).detail}", err=True)
            closed = [c for c in unmoved if c not in adopted]
            if closed:  # counted before Redis was added: as capped until moved
                click.echo(f"error: {CountersNotMoved(closed).detail}", err=True)
            if adopted:
                click.echo(
                    f"error: the cap counters of container {', '.join(adopted)} counted "
                    "before Redis was added are still in the database: its caps count from "
                    "Redis's alone (offers served past them) until they are moved with "
                    "'nextoffer admin counters --into-redis' (docs/deploy.md)",
                    err=True,
                )
    finally:
        store.close()


def run_granian(settings: Settings, *, access_log: bool) -> None:
    """The app under granian's ASGI interface (its workers are processes, as uvicorn's)."""
    from granian import Granian
    from granian.constants import Interfaces
    from granian.log import LOGGING_CONFIG

    Granian(
        "nextoffer.api.app:create_app",
        factory=True,
        interface=Interfaces.ASGI,
        address=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_access=access_log,
        log_dictconfig=granian_log(LOGGING_CONFIG),
        # SIGTERM stops the workers; one still running after this long is killed.
        workers_kill_timeout=max(1, math.ceil(settings.shutdown_timeout)),
    ).serve()
