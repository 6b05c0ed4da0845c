"""``nextoffer serve``: run the HTTP service (optionally with a seeded demo tenant)."""

from __future__ import annotations

import os

import click
import uvicorn

from nextoffer.settings import Settings


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--db", "db_url", envvar="NEXTOFFER_DB", help="Database URL (default: ./.nextoffer/nextoffer.db).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option("--demo", is_flag=True, help="Create a demo tenant with a small library and print a ready curl.")
@click.option("--access-log/--no-access-log", default=True, show_default=True)
def serve(host: str, port: int, db_url: str | None, workers: int, demo: bool, access_log: bool) -> None:
    """Serve the Offer Library and Decisioning APIs."""
    settings = Settings.from_env(db_url=db_url, host=host, port=port, workers=workers)
    if demo:
        from nextoffer.cli.demo import seed_demo

        seed_demo(settings)
    # Worker processes build their app from the environment, so pass the settings there.
    os.environ["NEXTOFFER_DB"] = settings.db_url
    uvicorn.run(
        "nextoffer.api.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        access_log=access_log,
        log_level="info",
    )
