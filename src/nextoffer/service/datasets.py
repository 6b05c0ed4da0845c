"""Output datasets of batch jobs: a name and a storage location, scoped to org + sandbox.

A dataset's location is a local folder by default (``Settings.datasets_dir``/its id) —
a local location given in the request must lie under that root (a tenant never chooses
where on the server's disk to write) — or a URI the engines write through pyarrow's file
systems (``s3://``, ``s3a://``, ``gs://``, ``hdfs://``; ``locations.py``): its scheme is
checked, and it is written to once before it is recorded. Credentials and endpoints come
from the server's settings, never from the dataset. Each job writes into
``<location>/<job id>/``: Parquet files of decision events, then ``manifest.json`` as its
commit; only committed jobs' files are listed and served.
"""

from __future__ import annotations

import os
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from nextoffer.errors import NotFound, Unavailable, Unprocessable
from nextoffer.service import locations
from nextoffer.service.auth import Principal
from nextoffer.service.locations import DatasetFile, Location, LocationError, S3Settings
from nextoffer.storage.batch import DatasetRecord
from nextoffer.storage.session import Session
from nextoffer.storage.store import Store

__all__ = ["DatasetFile", "DatasetRecord", "Datasets"]


#: A file URI's scheme (any case) and empty or local host, before its absolute path: ``file:///p``,
#: ``file://localhost/p`` and RFC 8089's short form ``file:/p``.
_FILE_URI = re.compile(r"^file:(?://(?:localhost)?)?(?=/)", re.IGNORECASE)
#: How long the request waits for a remote location's write check. A store that does not
#: answer (GCS without credentials retries for a quarter of an hour) must not hold the
#: request, nor one of the few threads every API call shares.
PROBE_SECONDS = 20.0
#: Write checks of one org running at once, counting those past their deadline and still
#: waiting for their store: more are told to come back, so one org's silent stores take
#: at most this many of the server's threads, and none of another org's checks.
PROBES_PER_ORG = 2
#: The status of a job whose files are published: ``batch.lifecycle.COMPLETED``, which
#: this module cannot import (the batch package imports it). A folder whose manifest is
#: written belongs to a job that ended otherwise when a publish stuck on its store went
#: on after the job was failed, cancelled or shut down: it is not served while it waits
#: for its removal.
PUBLISHED = "COMPLETED"


class Datasets:
    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], datetime],
        default_root: Path,
        s3: S3Settings | None = None,
        remote_prefixes: Sequence[str] = (),
    ) -> None:
        self._store = store
        self._clock = clock
        self._root = default_root
        self._s3 = s3 or S3Settings()
        #: Where remote datasets may be (``Settings.dataset_remote_prefixes``).
        self._remote_prefixes = tuple(remote_prefixes)
        self._probing: dict[str, int] = {}
        self._probing_lock = threading.Lock()

    def create(self, principal: Principal, body: Any) -> DatasetRecord:
        if not isinstance(body, dict):
            raise Unprocessable("the body must be a JSON object", pointer="/")
        name = body.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 255:
            raise Unprocessable("name must be a non-empty string of up to 255", pointer="/name")
        dataset_id = str(uuid.uuid4())
        location = body.get("location")
        if location is None:
            location = str(self._root / dataset_id)
        if not isinstance(location, str) or not location.strip() or len(location) > 2048:
            raise Unprocessable("location must be a path or URL", pointer="/location")
        if locations.is_remote(location):
            try:
                location = locations.check_remote(location)
                self._refuse_outside(location)
                self._refuse_shared(location)
                self._probe(principal.org, Location(location, self._s3))
            except LocationError as exc:
                raise Unprocessable(str(exc), pointer="/location") from exc
        else:
            # A tenant writes only under the datasets root the operator chose: a relative
            # location is a folder there, an absolute one must lie inside it.
            root = self._root.resolve()
            if _FILE_URI.match(location):  # a URI: its path is percent-encoded
                location = unquote(_FILE_URI.sub("", location, count=1))
            path = (root / location).resolve()
            if root not in path.parents:  # the root itself holds every default location
                raise Unprocessable(
                    f"a local location must be a folder under {root}", pointer="/location"
                )
            location = str(path)
            self._refuse_shared(location)
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise Unprocessable(
                    f"location {location} cannot be created: {exc.strerror}", pointer="/location"
                ) from exc
            if not os.access(path, os.W_OK):
                raise Unprocessable(f"location {location} is not writable", pointer="/location")
        record = DatasetRecord(
            dataset_id,
            principal.org,
            principal.sandbox,
            name,
            location,
            int(self._clock().timestamp() * 1000),
        )
        with self._store.session(write=True) as session:
            # Checked again as one step with the insert: two datasets created at once on
            # one folder both passed the check above.
            self._refuse_shared(location, session)
            session.batch.insert_dataset(record)
        return record

    def _probe(self, org: str, location: Location) -> None:
        """:func:`locations.probe` in a thread of its own, waited for at most
        :data:`PROBE_SECONDS`: :class:`LocationError` when it fails or does not end by then,
        503 when :data:`PROBES_PER_ORG` of the org's checks are still running."""
        with self._probing_lock:
            if self._probing.get(org, 0) >= PROBES_PER_ORG:
                raise Unavailable(
                    f"{PROBES_PER_ORG} location checks of this organisation are still waiting"
                    " for their stores: try again later",
                    retry_after=int(PROBE_SECONDS),
                )
            self._probing[org] = self._probing.get(org, 0) + 1
        failure: list[BaseException] = []

        def check() -> None:
            try:
                locations.probe(location)
            except BaseException as exc:  # handed to the request, which raises it
                failure.append(exc)
            finally:
                with self._probing_lock:
                    self._probing[org] -= 1
                    if not self._probing[org]:
                        del self._probing[org]

        thread = threading.Thread(target=check, name="nextoffer-location-check", daemon=True)
        thread.start()
        thread.join(PROBE_SECONDS)
        if thread.is_alive():
            raise LocationError(
                f"cannot write to {location.uri}: the store did not answer within"
                f" {PROBE_SECONDS:g} s"
            )
        if failure:
            raise failure[0]

    def _refuse_outside(self, location: str) -> None:
        """Refuse a remote location under none of the server's remote prefixes: the
        server's credentials write there for any tenant, so the operator says where."""
        prefixes = self._remote_prefixes
        if not prefixes:
            raise LocationError(
                "remote dataset locations are off on this server: its operator allows"
                " them under NEXTOFFER_DATASET_REMOTE_PREFIXES (docs/batch.md)"
            )
        if not locations.under_any(location, prefixes):
            raise LocationError(
                f"{location} is under none of this server's remote dataset folders:"
                f" {', '.join(prefixes)}"
            )

    def _refuse_shared(self, location: str, session: Session | None = None) -> None:
        """422 when ``location`` is, holds or lies in another dataset's (any tenant's)
        location: a dataset's folder is its own, or another could list and serve its jobs.
        Without ``session``, before anything is created or probed there; in ``session``
        (the write that records the dataset), under the lock that keeps another from being
        recorded until it commits (``BatchTables.dataset_locations``)."""
        if session is None:
            with self._store.session() as read:
                taken = read.batch.dataset_locations()
        else:
            taken = session.batch.dataset_locations(lock=True)
        root = self._root.resolve()
        for other in taken:
            if not locations.is_remote(other) and root.is_relative_to(other):
                # Recorded before the root itself was refused: it holds every default
                # location, and lists only its own jobs (their manifests name it).
                continue
            if locations.overlaps(location, other):
                raise Unprocessable(
                    f"location {location} overlaps the location of another dataset: give"
                    " each dataset a folder of its own",
                    pointer="/location",
                )

    def get(self, principal: Principal, dataset_id: str) -> DatasetRecord:
        with self._store.session() as session:
            record = session.batch.get_dataset(principal.org, principal.sandbox, dataset_id)
        if record is None:
            raise NotFound(f"no dataset {dataset_id}")
        return record

    def get_all(self, principal: Principal) -> list[DatasetRecord]:
        with self._store.session() as session:
            return session.batch.list_datasets(principal.org, principal.sandbox)

    def location(self, record: DatasetRecord) -> Location:
        """Where the dataset's files live, with the settings that reach them."""
        return Location(record.location, self._s3)

    def files(self, principal: Principal, dataset_id: str) -> list[DatasetFile]:
        """The dataset's published files: committed jobs' parts and manifests."""
        record = self.get(principal, dataset_id)
        try:
            found = locations.committed(self.location(record), dataset_id)
        except locations.STORE_ERRORS as exc:
            raise self._unreadable(record, exc) from exc
        ended = self._unpublished({f.path.partition("/")[0] for f in found})
        return [f for f in found if f.path.partition("/")[0] not in ended]

    def open(
        self, principal: Principal, dataset_id: str, relative: str
    ) -> tuple[DatasetFile, Iterator[bytes]]:
        """The committed file ``relative`` (``<job>/<name>``) names, and its bytes; 404 for
        anything else."""
        record = self.get(principal, dataset_id)
        if self._unpublished({relative.partition("/")[0]}):
            raise NotFound(f"no file {relative!r} in dataset {dataset_id}")
        try:
            found = locations.open_committed(self.location(record), dataset_id, relative)
        except locations.STORE_ERRORS as exc:
            raise self._unreadable(record, exc) from exc
        if found is None:
            raise NotFound(f"no file {relative!r} in dataset {dataset_id}")
        return found

    def _unpublished(self, job_ids: set[str]) -> set[str]:
        """Those of ``job_ids`` whose job has a row and did not complete (see
        :data:`PUBLISHED`); a folder no job's row names is left to its manifest."""
        if not job_ids:
            return set()
        with self._store.session() as session:
            statuses = session.batch.job_statuses(sorted(job_ids))
        return {job for job, status in statuses.items() if status != PUBLISHED}

    def _unreadable(self, record: DatasetRecord, exc: BaseException) -> Unavailable:
        """503 saying what failed reading the dataset's location and what to do
        (:func:`locations.explain`); the store's own answer goes to the log only."""
        message = (
            f"dataset {record.dataset_id}: cannot read {record.location}:"
            f" {locations.explain(self.location(record), exc)}"
        )
        locations.log_failure(message, exc)
        return Unavailable(message)
