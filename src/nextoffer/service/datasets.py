"""Output datasets of batch jobs: a name and a storage location, scoped to org + sandbox.

A dataset's location is a local folder by default (``Settings.datasets_dir``/its id) —
a local location given in the request must lie under that root (a tenant never chooses
where on the server's disk to write). ``s3a://``, ``hdfs://``… URLs are recorded, but no
job writes them yet (a job publishes its files on the local file system). Each job writes into
``<location>/<job id>/``: Parquet files of decision events and a ``manifest.json``; local
datasets list their files and serve them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from nextoffer.errors import NotFound, Unprocessable
from nextoffer.service.auth import Principal
from nextoffer.storage.batch import DatasetRecord
from nextoffer.storage.store import Store

__all__ = ["DatasetFile", "DatasetRecord", "Datasets", "is_local"]

#: Locations written by the Spark engine only (its Hadoop file systems).
REMOTE_SCHEMES = ("s3a://", "s3://", "hdfs://", "gs://", "abfss://", "wasbs://")


def is_local(location: str) -> bool:
    return not location.startswith(REMOTE_SCHEMES)


def local_path(location: str) -> Path:
    return Path(location.removeprefix("file://"))


@dataclass(frozen=True, slots=True)
class DatasetFile:
    #: Relative to the dataset's location, ``/``-separated: ``<job id>/part-00000.parquet``.
    path: str
    size: int
    modified_ms: int


class Datasets:
    def __init__(self, store: Store, *, clock: Callable[[], datetime], default_root: Path) -> None:
        self._store = store
        self._clock = clock
        self._root = default_root

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
        if is_local(location):
            # A tenant writes only under the datasets root the operator chose: a relative
            # location is a folder there, an absolute one must lie inside it.
            root = self._root.resolve()
            path = (root / local_path(location)).resolve()
            if path != root and root not in path.parents:
                raise Unprocessable(
                    f"a local location must be a folder under {root}", pointer="/location"
                )
            location = str(path)
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
            session.batch.insert_dataset(record)
        return record

    def get(self, principal: Principal, dataset_id: str) -> DatasetRecord:
        with self._store.session() as session:
            record = session.batch.get_dataset(principal.org, principal.sandbox, dataset_id)
        if record is None:
            raise NotFound(f"no dataset {dataset_id}")
        return record

    def get_all(self, principal: Principal) -> list[DatasetRecord]:
        with self._store.session() as session:
            return session.batch.list_datasets(principal.org, principal.sandbox)

    def files(self, principal: Principal, dataset_id: str) -> list[DatasetFile]:
        """The dataset's published files (jobs' staging folders are not listed)."""
        root = self._local_root(self.get(principal, dataset_id))
        found = []
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root)
            if not path.is_file() or any(p.startswith(("_", ".")) for p in relative.parts):
                continue
            stat = path.stat()
            found.append(DatasetFile(relative.as_posix(), stat.st_size, int(stat.st_mtime * 1000)))
        return found

    def file(self, principal: Principal, dataset_id: str, relative: str) -> Path:
        """The local file ``relative`` names in the dataset; 404 for anything outside it."""
        root = self._local_root(self.get(principal, dataset_id)).resolve()
        parts = relative.split("/")
        if not relative or any(p in ("", ".", "..") or p.startswith(("_", ".")) for p in parts):
            raise NotFound(f"no file {relative!r} in dataset {dataset_id}")
        path = (root / relative).resolve()
        if root not in path.parents or not path.is_file():
            raise NotFound(f"no file {relative!r} in dataset {dataset_id}")
        return path

    @staticmethod
    def _local_root(record: DatasetRecord) -> Path:
        if not is_local(record.location):
            raise Unprocessable(
                f"dataset {record.dataset_id} is stored at {record.location}: list its files"
                " with that storage's own tools"
            )
        return local_path(record.location)
