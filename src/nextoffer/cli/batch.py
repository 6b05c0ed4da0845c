"""``nextoffer batch run|status``: decide for a whole audience from the command line.

``batch run`` submits the job as the workloads API does, then runs it in this process
with a progress bar (or follows it, when a server's runner claimed it first);
``batch status ID`` prints a job as ``GET …/workloads/decisions/ID`` answers it.
"""

from __future__ import annotations

import time

import click
import orjson
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from nextoffer.cli.options import db_option, existing_database
from nextoffer.errors import NotFound
from nextoffer.root import NextOffer
from nextoffer.service.auth import Principal
from nextoffer.service.batch import lifecycle as lc
from nextoffer.service.batch.jobs import JobRecord
from nextoffer.settings import Settings


@click.group()
def batch() -> None:
    """Batch decisioning: an audience's offers into a dataset's Parquet files."""


def _status(job: JobRecord) -> dict[str, object]:
    return {
        "@id": job.job_id,
        "xdm:imsOrgId": job.org_id,
        "xdm:containerId": job.container_id,
        "ode:createDate": job.created_ms,
        "ode:status": job.status,
        "ode:statusDetail": job.detail,
    }


@batch.command()
@db_option(creates=False)
@click.option("--container", "container_id", required=True, help="Decisioning container id.")
@click.option("--segment", "segment_id", required=True, help="Segment definition id (audience).")
@click.option("--activity", required=True, help="Decision @id (xcore:offer-activity:…).")
@click.option("--placement", required=True, help="Placement @id (xcore:offer-placement:…).")
@click.option("--dataset", "dataset_id", required=True, help="Output dataset id.")
@click.option(
    "--engine", type=click.Choice(lc.ENGINES), default="local", show_default=True, help="Engine."
)
@click.option(
    "--item-count", default=1, show_default=True, type=click.IntRange(1, 30), help="Options wanted."
)
@click.option("--include-content", is_flag=True, help="Write each item's content.")
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), help="Seed of the tie-breaking draws.")
@click.option("--workers", type=click.IntRange(0, 256), help="Local engine's processes (0: cores).")
def run(
    db_url: str | None,
    container_id: str,
    segment_id: str,
    activity: str,
    placement: str,
    dataset_id: str,
    engine: str,
    item_count: int,
    include_content: bool,
    seed: int | None,
    workers: int | None,
) -> None:
    """Submit a batch job and run it here, with a progress bar; exit 1 when it ends in ERROR."""
    settings = Settings.from_env(db_url=db_url, batch_workers=workers)
    existing_database(settings.db_url)
    console = Console(stderr=True)
    with NextOffer.open(settings) as no:
        with no.store.session() as session:
            container = session.get_container_by_id(container_id)
        if container is None:
            raise NotFound(f"container {container_id} does not exist")
        principal = Principal(container.org_id, container.sandbox, "nextoffer-cli", "nextoffer-cli")
        body = {
            "xdm:segmentIds": [segment_id],
            "xdm:dataSetId": dataset_id,
            "xdm:propositionRequests": [
                {
                    "xdm:activityId": activity,
                    "xdm:placementId": placement,
                    "xdm:itemCount": item_count,
                }
            ],
            "xdm:includeContent": include_content,
            **({"nextoffer:seed": seed} if seed is not None else {}),
        }
        job = no.batch.submit(principal, body, container_id=container_id, engine=engine)
        console.print(f"job {job.job_id} queued ({engine} engine)")
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as bar:
            task = bar.add_task("QUEUED", total=None, rate="")
            started = time.monotonic()

            def show(current: JobRecord) -> None:
                total = current.detail.get("profilesTotal")
                done = int(current.detail.get("profilesDone", 0))
                elapsed = max(time.monotonic() - started, 1e-9)
                bar.update(
                    task,
                    description=current.status,
                    total=total,
                    completed=done,
                    rate=f"{done / elapsed:,.0f} profiles/s" if done else "",
                )

            final = None
            while final is None:
                # Jobs whose runner died (another `batch run` interrupted or killed) hold
                # their dataset's running slots until a runner ends them: this one is a
                # runner too, and no server may be running any.
                no.batch.recover()
                claimed = no.batch.claim(job.job_id)
                if claimed is not None:
                    final = no.batch.execute(claimed, on_progress=show)
                    break
                current = no.batch.get(principal, job.job_id)
                show(current)
                if current.status in (lc.COMPLETED, lc.ERROR):
                    final = current  # another runner (a server) ran it
                else:
                    time.sleep(1.0)  # queued behind the dataset's running jobs
    click.echo(orjson.dumps(_status(final), option=orjson.OPT_INDENT_2).decode())
    if final.status == lc.ERROR:
        raise SystemExit(1)


@batch.command()
@db_option(creates=False)
@click.argument("job_id")
def status(db_url: str | None, job_id: str) -> None:
    """Print a batch job: its status and ode:statusDetail (progress, engine, errors)."""
    settings = Settings.from_env(db_url=db_url)
    existing_database(settings.db_url)
    with NextOffer.open(settings) as no:
        job = no.batch.find(job_id)
    click.echo(orjson.dumps(_status(job), option=orjson.OPT_INDENT_2).decode())
