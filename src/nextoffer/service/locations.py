"""Where a dataset's files live, and how a job's files become visible there.

A location is a local folder (a path, or ``file://``) or a URI that pyarrow's file
systems reach: ``s3://`` and ``s3a://`` (S3 and S3-compatible stores: endpoint, region
and keys come from the server's settings, :class:`S3Settings`, never from the URI),
``gs://`` (Google Cloud Storage, its default credentials) and ``hdfs://`` (libhdfs, as
pyarrow finds it). The local engine's workers write through it with pyarrow; Spark writes
with its own Hadoop writer at :meth:`Location.hadoop_uri`.

Publishing must hold on object stores, which have no atomic rename: a job writes its
parts straight under ``<location>/<job>/``, then :func:`commit` writes ``manifest.json``
— last, appearing whole — and that is the job's commit. Readers (:func:`committed`,
:func:`open_committed`) see only job folders with a manifest, and only the files it
names; a failed or cancelled job's folder is removed (:func:`remove`), and whatever a
crash left behind is never listed.
"""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from nextoffer.logs import Throttled
from nextoffer.settings import REMOTE_SCHEMES

__all__ = [
    "MANIFEST",
    "REMOTE_SCHEMES",
    "STORE_ERRORS",
    "DatasetFile",
    "Location",
    "LocationError",
    "S3Settings",
    "check_remote",
    "commit",
    "committed",
    "delete",
    "entries",
    "explain",
    "is_remote",
    "log_failure",
    "make_folder",
    "open_committed",
    "overlaps",
    "probe",
    "remove",
    "store_said",
    "write_bytes",
]

#: A job's commit marker: written last, it names the job's files.
MANIFEST = "manifest.json"
#: Downloads are read in blocks of this size.
BLOCK = 1 << 20
#: How long the write check's client retries a store (GCS's default is 15 minutes; S3's
#: client waits 3 s per silent attempt): the check gives up soon, its thread with it.
CHECK_SECONDS = 10
#: The longest name of a job folder or file (a job id is a UUID; POSIX file systems refuse
#: longer names with an error that is no "not found").
NAME_MAX = 255
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
#: What a store's failure can raise: pyarrow's I/O errors (``OSError``), a path or an
#: option it refuses (``ValueError``), a file system its build lacks (``ImportError``,
#: ``NotImplementedError``).
STORE_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    ValueError,
    ImportError,
    NotImplementedError,
)
#: A store's failure, as a client is told it: the words of its raw error that tell each
#: cause (in this order: a message may hold several), and what the cause means.
_CAUSES = (
    (
        ("libjvm", "libhdfs", "dlopen", "java_home", "classpath", "jni"),
        "this server cannot reach HDFS: it lacks Hadoop's client library (libhdfs) or a"
        " Java runtime. Ask the server's operator to install them (docs/batch.md), or use"
        " another location",
    ),
    (
        ("not built with support", "not built with"),
        "this server's Arrow library was built without support for {scheme}:// stores. Ask"
        " the server's operator, or use another location",
    ),
    (
        (
            "access_denied",
            "accessdenied",
            "access denied",
            "forbidden",
            "permission_denied",
            "invalidaccesskeyid",
            "signaturedoesnotmatch",
            "unauthenticated",
            "oauth2",
            "credentials",
            "http status 401",
            "http status 403",
        ),
        "the store refused this server's credentials, or the server has none for it. Ask the"
        " server's operator to give it access to this location",
    ),
    (
        ("no_such_bucket", "nosuchbucket", "bucket does not exist", "http status 404"),
        "its bucket does not exist. Create it, or name an existing one",
    ),
    (
        (
            "resolve host",
            "network_connection",
            "connection refused",
            "couldn't connect",
            "could not connect",
            "hdfs connection failed",
            "timed out",
            "timeout",
            "unavailable",
        ),
        "the store could not be reached from this server (its host unknown, or not"
        " answering). Check the location's name, or ask the server's operator",
    ),
)
log = logging.getLogger("nextoffer.datasets")
#: Lines giving a store's own words (:func:`log_failure`): a store that stopped answering
#: fails every request that reaches it, and each line is up to three of its lines.
_STORE_FAILED = Throttled(log)


class LocationError(ValueError):
    """A location that cannot be used (its scheme, its form, or the store's answer)."""


def explain(location: Location, exc: BaseException) -> str:
    """What a store's failure at ``location`` means for a client, and what to do about it:
    never the store's own words, which are the operator's (a library's search path, a
    host, an account, a dozen lines of ``dlopen``), and which the caller logs. A local
    folder's error is its system error's name ("No space left on device")."""
    if not location.scheme:
        if isinstance(exc, OSError) and exc.strerror:
            return f"its file system answered: {exc.strerror}"
        return "its file system refused; the server's log has its answer"
    said = str(exc).lower()
    for words, meaning in _CAUSES:
        if any(word in said for word in words):
            return meaning.format(scheme=location.scheme)
    return "the store refused; the server's log has its answer. Ask the server's operator"


def log_failure(message: str, exc: BaseException) -> None:
    """Log for the operator what a store's failure was told as (``message``) and the
    store's own words (:func:`store_said`), at ``WARNING``. A dead store fails every
    listing, download and write check that reaches it, at the rate they come: so the
    first line is written at once, then at most one every ten seconds, saying how many
    it stood for (:class:`nextoffer.logs.Throttled`, as the database's outage lines)."""
    _STORE_FAILED.warning("%s (the store said: %s)", message, store_said(exc))


def store_said(exc: BaseException, *, lines: int = 3) -> str:
    """A store's raw error as the log keeps it: its first ``lines`` lines (libhdfs lists
    each of the ~90 paths it tried for ``libjvm.so``: a hundred lines a request)."""
    said = str(exc).splitlines() or [type(exc).__name__]
    more = len(said) - lines
    return " / ".join(said[:lines]) + (f" (and {more} more lines)" if more > 0 else "")


@dataclass(frozen=True, slots=True)
class S3Settings:
    """How to reach S3 (``Settings.s3_*``); unset keys: the AWS SDK's default chain."""

    endpoint: str | None = None
    region: str | None = None
    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class DatasetFile:
    #: Relative to the dataset's location, ``/``-separated: ``<job id>/part-00000.parquet``.
    path: str
    size: int
    modified_ms: int


def is_remote(location: str) -> bool:
    """Whether ``location`` is a URI other than ``file://`` (else a local folder)."""
    return bool(_URI.match(location)) and not location.lower().startswith("file://")


def check_remote(location: str) -> str:
    """The URI in its recorded form (no trailing ``/``), or :class:`LocationError`: an
    unsupported scheme, credentials or options in the URI, no bucket or host."""
    parts = urlsplit(location)
    scheme = parts.scheme.lower()
    if scheme not in REMOTE_SCHEMES:
        raise LocationError(
            f"{scheme}:// locations are not supported: use a local folder or one of"
            f" {', '.join(s + '://' for s in REMOTE_SCHEMES)}"
        )
    if "@" in parts.netloc:
        raise LocationError(
            "a location carries no credentials: the server's settings give them"
            " (NEXTOFFER_S3_ACCESS_KEY…, docs/batch.md)"
        )
    if parts.query or parts.fragment:
        raise LocationError(
            "a location takes no query or fragment: endpoint and credentials come from"
            " the server's settings"
        )
    if not parts.netloc:
        raise LocationError(f"a {scheme}:// location names a bucket or host: {scheme}://NAME/…")
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def _comparable(location: str) -> str:
    """``location`` as :func:`overlaps` compares it: ``s3a://`` is ``s3://`` (the same
    objects), a scheme in lower case, no trailing ``/``."""
    if not is_remote(location):
        return location.rstrip("/") or "/"
    scheme, _, rest = location.partition("://")
    scheme = scheme.lower()
    return f"{'s3' if scheme == 's3a' else scheme}://{rest.rstrip('/')}"


def under_any(location: str, prefixes: Sequence[str]) -> bool:
    """Whether a recorded remote ``location`` is one of ``prefixes`` or inside one."""
    here = _comparable(location)
    for prefix in prefixes:
        folder = _comparable(prefix)
        if here == folder or here.startswith(folder + "/"):
            return True
    return False


def overlaps(one: str, other: str) -> bool:
    """Whether two recorded locations share files: the same folder, or one inside the
    other. Each dataset's folder is its own: a job folder under a shared one would be
    another dataset's to list and serve (and another tenant's)."""
    a, b = _comparable(one), _comparable(other)
    if a == b:
        return True
    return a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


@dataclass(frozen=True, slots=True)
class Location:
    """A folder: an absolute local path, or a URI :func:`check_remote` accepted.
    Picklable, so it travels to worker processes and Spark executors."""

    uri: str
    s3: S3Settings = S3Settings()

    @property
    def scheme(self) -> str:
        """``""`` for a local folder."""
        return urlsplit(self.uri).scheme.lower() if is_remote(self.uri) else ""

    def join(self, *names: str) -> Location:
        return Location("/".join([self.uri.rstrip("/"), *names]), self.s3)

    def filesystem(self, *, check: bool = False) -> tuple[Any, str]:
        """pyarrow's file system for the location, and the folder's path in it; with
        ``check``, one that gives up within about :data:`CHECK_SECONDS` (:func:`probe`)."""
        if not self.scheme:
            return _filesystem("", "", self.s3), str(Path(self.uri.removeprefix("file://")))
        parts = urlsplit(self.uri)
        if self.scheme == "hdfs":
            return _filesystem("hdfs", parts.netloc, self.s3), parts.path or "/"
        return _filesystem(self.scheme, "", self.s3, check), f"{parts.netloc}{parts.path}"

    def hadoop_uri(self) -> str:
        """The folder as Hadoop's file systems (Spark's writer) name it: ``file:///…``,
        ``s3a://…`` for both S3 schemes, else the URI."""
        if not self.scheme:
            # Not ``Path.as_uri()``: Hadoop takes a path's characters as they are, and
            # would write a folder named ``a%20b`` for ``a b``.
            return f"file://{Path(self.uri.removeprefix('file://')).resolve()}"
        if self.scheme == "s3":
            return "s3a" + self.uri[2:]
        return self.uri

    def hadoop_options(self) -> dict[str, str]:
        """Spark settings that give Hadoop's S3A client the same endpoint and keys."""
        if self.scheme not in ("s3", "s3a"):
            return {}
        options: dict[str, str] = {}
        s3 = self.s3
        if s3.endpoint:
            endpoint = s3.endpoint
            options["spark.hadoop.fs.s3a.endpoint"] = endpoint
            options["spark.hadoop.fs.s3a.path.style.access"] = "true"
            options["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(
                not endpoint.startswith("http://")
            ).lower()
        if s3.region:
            options["spark.hadoop.fs.s3a.endpoint.region"] = s3.region
        if s3.access_key and s3.secret_key:
            options["spark.hadoop.fs.s3a.access.key"] = s3.access_key
            options["spark.hadoop.fs.s3a.secret.key"] = s3.secret_key
        return options


@lru_cache(maxsize=16)
def _filesystem(scheme: str, authority: str, s3: S3Settings, check: bool = False) -> Any:
    from pyarrow import fs

    if not scheme:
        return fs.LocalFileSystem()
    if scheme in ("s3", "s3a"):
        options: dict[str, Any] = {}
        if check:
            options.update(
                request_timeout=CHECK_SECONDS / 2,
                retry_strategy=fs.AwsStandardS3RetryStrategy(max_attempts=2),
            )
        if s3.endpoint:
            options["endpoint_override"] = s3.endpoint  # http:// or https:// as given
        if s3.region:
            options["region"] = s3.region
        if s3.access_key and s3.secret_key:
            options.update(access_key=s3.access_key, secret_key=s3.secret_key)
        return fs.S3FileSystem(connect_timeout=10, **options)
    if scheme == "gs":
        if check:
            return fs.GcsFileSystem(retry_time_limit=timedelta(seconds=CHECK_SECONDS))
        return fs.GcsFileSystem()
    return fs.FileSystem.from_uri(f"hdfs://{authority}")[0]


def write_bytes(location: Location, data: bytes) -> None:
    """Write a file that appears whole: a hidden temporary beside it, then a move (a
    rename on local disks and HDFS, a server-side copy on object stores)."""
    filesystem, path = location.filesystem()
    folder, _, name = path.rpartition("/")
    temporary = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
    with filesystem.open_output_stream(temporary) as out:
        out.write(data)
    filesystem.move(temporary, path)


def make_folder(location: Location) -> None:
    filesystem, path = location.filesystem()
    filesystem.create_dir(path, recursive=True)


def entries(location: Location) -> list[Any]:
    """The folder's direct entries (pyarrow ``FileInfo``s); none when it does not exist."""
    from pyarrow import fs

    filesystem, path = location.filesystem()
    return list(
        filesystem.get_file_info(fs.FileSelector(path, recursive=False, allow_not_found=True))
    )


def remove(location: Location) -> None:
    """Remove the folder and everything under it; nothing when it does not exist."""
    filesystem, path = location.filesystem()
    with contextlib.suppress(FileNotFoundError):
        filesystem.delete_dir(path)


def delete(location: Location, info: Any) -> None:
    """Remove one entry :func:`entries` listed (a file, or a folder with its contents)."""
    filesystem, _ = location.filesystem()
    if info.is_file:
        filesystem.delete_file(info.path)
    else:
        filesystem.delete_dir(info.path)


def probe(location: Location) -> None:
    """Check the folder is writable: write a small file there and remove it;
    :class:`LocationError` saying what failed (:func:`explain`) when it is not, the store's
    own answer logged."""
    check = location.join(f"_nextoffer-write-check-{uuid.uuid4().hex}")
    try:
        filesystem, path = check.filesystem(check=True)
        with filesystem.open_output_stream(path) as out:
            out.write(b"nextoffer")
        filesystem.delete_file(path)
    except STORE_ERRORS as exc:
        message = f"cannot write to {location.uri}: {explain(location, exc)}"
        log_failure(f"dataset location refused: {message}", exc)
        raise LocationError(message) from exc


def commit(job: Location, manifest: dict[str, Any]) -> None:
    """Publish a job whose parts are written: its manifest, written last."""
    write_bytes(job.join(MANIFEST), orjson.dumps(manifest, option=orjson.OPT_INDENT_2))


def _manifest(job: Location, dataset_id: str) -> dict[str, Any] | None:
    """The job folder's manifest when it commits a job *of this dataset*: a folder another
    dataset's job wrote (two datasets were once allowed to share a location, possibly of
    two tenants) is not this dataset's to list or serve."""
    filesystem, path = job.join(MANIFEST).filesystem()
    try:
        with filesystem.open_input_stream(path) as stream:
            value = orjson.loads(stream.read())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None
    if not isinstance(value, dict) or value.get("dataSetId") != dataset_id:
        return None
    return value


def _modified_ms(info: Any) -> int:
    return int(info.mtime.timestamp() * 1000) if info.mtime is not None else 0


def committed(location: Location, dataset_id: str) -> list[DatasetFile]:
    """The files of every committed job of the dataset: the parts its manifest names,
    and the manifest. Folders without a manifest of this dataset (running, failed,
    crashed, or another dataset's) are left out."""
    found: list[DatasetFile] = []
    for folder in sorted(entries(location), key=lambda i: i.base_name):
        if folder.is_file or folder.base_name.startswith(("_", ".")):
            continue
        job = location.join(folder.base_name)
        manifest = _manifest(job, dataset_id)
        if manifest is None:
            continue
        named = {str(n) for n in manifest.get("files", [])} | {MANIFEST}
        for info in sorted(entries(job), key=lambda i: i.base_name):
            if info.is_file and info.base_name in named:
                found.append(
                    DatasetFile(
                        f"{folder.base_name}/{info.base_name}", info.size, _modified_ms(info)
                    )
                )
    return found


def open_committed(
    location: Location, dataset_id: str, relative: str
) -> tuple[DatasetFile, Iterator[bytes]] | None:
    """A committed job's file (``<job>/<name>``) and its bytes in blocks; ``None`` when no
    committed job of the dataset names it."""
    parts = relative.split("/")
    if len(parts) != 2 or any(
        p in ("", ".", "..") or p.startswith(("_", ".")) or len(p) > NAME_MAX for p in parts
    ):
        return None  # no job or file is named so (a name too long: ENAMETOOLONG, not a 404)
    job = location.join(parts[0])
    manifest = _manifest(job, dataset_id)
    if manifest is None or (
        parts[1] != MANIFEST and parts[1] not in {str(n) for n in manifest.get("files", [])}
    ):
        return None
    filesystem, path = job.join(parts[1]).filesystem()
    info = filesystem.get_file_info(path)
    if not info.is_file:
        return None
    stream = filesystem.open_input_stream(path)

    def blocks() -> Iterator[bytes]:
        try:
            while block := stream.read(BLOCK):
                yield bytes(block)
        finally:
            stream.close()

    return DatasetFile(relative, info.size, _modified_ms(info)), blocks()
