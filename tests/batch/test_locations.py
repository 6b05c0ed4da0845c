"""Dataset locations as data: which URIs are accepted and how they are recorded, how
Spark's Hadoop writer names them and which S3A settings it gets, and S3 settings read
from the environment without showing the secret."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from nextoffer.logs import Throttled
from nextoffer.service import locations
from nextoffer.service.locations import (
    Location,
    LocationError,
    S3Settings,
    check_remote,
    is_remote,
)
from nextoffer.settings import Settings
from support.servers import free_port


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store_lines(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> tuple[pytest.LogCaptureFixture, Clock]:
    """The lines :func:`locations.log_failure` writes in the test, and the clock of their
    throttle (one of the test's own: another test's line in the last ten seconds does not
    hold this one back)."""
    clock = Clock()
    throttled = Throttled(logging.getLogger("nextoffer.datasets"), clock=clock)
    monkeypatch.setattr(locations, "_STORE_FAILED", throttled, raising=False)
    caplog.set_level(logging.WARNING, logger="nextoffer.datasets")
    return caplog, clock


@pytest.mark.parametrize(
    ("given", "recorded"),
    [
        ("s3://bucket/a/b/", "s3://bucket/a/b"),
        ("S3A://bucket/a", "s3a://bucket/a"),
        ("gs://bucket", "gs://bucket"),
        ("hdfs://namenode:8020/data/offers", "hdfs://namenode:8020/data/offers"),
    ],
)
def test_remote_locations_are_recorded_plainly(given: str, recorded: str) -> None:
    assert is_remote(given)
    assert check_remote(given) == recorded


@pytest.mark.parametrize("local", ["/srv/datasets/x", "email/weekly", "file:///srv/x"])
def test_paths_and_file_uris_are_local(local: str) -> None:
    assert not is_remote(local)


@pytest.mark.parametrize(
    "refused",
    [
        "wasbs://c@a.blob.core.windows.net/x",
        "http://host/x",
        "s3://AKIA:secret@bucket/x",
        "s3://bucket/x?region=eu-west-1",
        "s3://bucket/x#frag",
        "gs:///x",
    ],
)
def test_other_uris_are_refused(refused: str) -> None:
    with pytest.raises(LocationError):
        check_remote(refused)


def test_spark_writes_s3_through_s3a_with_the_same_endpoint_and_keys(tmp_path: Path) -> None:
    s3 = S3Settings(
        endpoint="http://127.0.0.1:9000", region="eu-west-1", access_key="k", secret_key="s"
    )
    job = Location("s3://bucket/prefix", s3).join("job")
    assert job.uri == "s3://bucket/prefix/job"
    assert job.hadoop_uri() == "s3a://bucket/prefix/job"
    assert job.hadoop_options() == {
        "spark.hadoop.fs.s3a.endpoint": "http://127.0.0.1:9000",
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.connection.ssl.enabled": "false",
        "spark.hadoop.fs.s3a.endpoint.region": "eu-west-1",
        "spark.hadoop.fs.s3a.access.key": "k",
        "spark.hadoop.fs.s3a.secret.key": "s",
    }
    # AWS itself, keys from the SDK's chain: nothing to tell Hadoop.
    assert Location("s3a://bucket/p").hadoop_options() == {}
    assert Location("hdfs://nn:8020/p", s3).hadoop_options() == {}
    assert Location(str(tmp_path)).hadoop_uri() == f"file://{tmp_path.resolve()}"
    assert Location("hdfs://nn:8020/p").hadoop_uri() == "hdfs://nn:8020/p"


def test_s3_settings_come_from_the_environment_and_the_secret_is_not_shown() -> None:
    settings = Settings.from_env(
        {
            "NEXTOFFER_S3_ENDPOINT": "https://minio.internal:9000",
            "NEXTOFFER_S3_REGION": "eu-west-1",
            "NEXTOFFER_S3_ACCESS_KEY": "AKIAEXAMPLE",
            "NEXTOFFER_S3_SECRET_KEY": "wJalrXUtnFEMI",
        }
    )
    assert settings.s3_endpoint == "https://minio.internal:9000"
    assert settings.s3_region == "eu-west-1"
    assert settings.s3_access_key == "AKIAEXAMPLE"
    assert settings.s3_secret_key == "wJalrXUtnFEMI"
    assert "wJalrXUtnFEMI" not in repr(settings)
    assert "wJalrXUtnFEMI" not in repr(S3Settings(secret_key="wJalrXUtnFEMI"))


def test_a_local_folder_reaches_hadoop_with_its_characters_as_they_are(tmp_path: Path) -> None:
    # Hadoop does not decode a URI's %XX: ``a%20b`` would be another folder.
    folder = tmp_path / "weekly [EU] é%41"
    assert Location(str(folder)).hadoop_uri() == f"file://{folder.resolve()}"


_LIBJVM = (
    "Unable to load libjvm\ndlopen(/usr/lib/jvm/default-java/libjvm.so) failed:"
    " /usr/lib/jvm/default-java/libjvm.so: cannot open shared object file: No such file"
)
_GCS = (
    "google::cloud::Status(UNAVAILABLE: Retry policy exhausted, with a last message of Could"
    " not create a OAuth2 access token to authenticate the request. The underlying error"
    " message was: PerformWork() - CURL error [6]=Could not resolve hostname)"
)
_S3_HOST = (
    "When initiating multiple part upload for key 'one/_check' in bucket 'lake': AWS Error"
    " NETWORK_CONNECTION during CreateMultipartUpload operation: curlCode: 6, Could not"
    " resolve hostname; Details: Could not resolve host: lake.s3.us-east-1.amazonaws.com"
)


@pytest.mark.parametrize(
    ("uri", "raised", "told"),
    [
        ("hdfs://nn:8020/data", OSError(_LIBJVM), "this server cannot reach HDFS: it lacks"),
        ("hdfs://nn:8020/data", OSError("Prior attempt to load libhdfs failed"), "HDFS"),
        (
            "gs://lake/x",
            ImportError("The pyarrow installation is not built with support for 'GcsFileSystem'"),
            "built without support for gs:// stores",
        ),
        ("gs://lake/x", OSError(_GCS), "refused this server's credentials, or the server has"),
        ("s3://lake/x", OSError(_S3_HOST), "the store could not be reached from this server"),
        (
            "s3://lake/x",
            OSError("AWS Error ACCESS_DENIED during PutObject operation: Access Denied"),
            "refused this server's credentials",
        ),
        (
            "s3://lake/x",
            OSError("AWS Error NO_SUCH_BUCKET during PutObject operation: no bucket"),
            "its bucket does not exist",
        ),
        ("s3://lake/x", OSError("something the store said"), "the server's log has its answer"),
    ],
)
def test_a_store_that_fails_the_write_check_is_explained_and_its_words_logged(
    uri: str,
    raised: Exception,
    told: str,
    monkeypatch: pytest.MonkeyPatch,
    store_lines: tuple[pytest.LogCaptureFixture, Clock],
) -> None:
    """The client is told which location failed, what that means and what to do; the
    store's own words (a library's search path, a host, a bucket) go to the log only."""
    caplog, _ = store_lines

    def failing(*args: object) -> object:
        raise raised

    monkeypatch.setattr(locations, "_filesystem", failing)
    with pytest.raises(LocationError) as refused:
        locations.probe(Location(uri))
    message = str(refused.value)
    assert message.startswith(f"cannot write to {uri}: ") and told in message, message
    said = str(raised).splitlines()[0]
    assert said not in message and "dlopen" not in message and "AWS Error" not in message
    assert said in caplog.text


def test_a_dead_stores_failures_are_logged_once_every_ten_seconds_with_a_count(
    store_lines: tuple[pytest.LogCaptureFixture, Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store that stopped answering fails every write check (and listing, download) that
    reaches it, at the rate they come: its words are logged once, then once every ten
    seconds saying how many failures that line stood for — not a line (three of its own)
    for each. Here pyarrow's real S3 client against an endpoint where nothing listens."""
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    caplog, clock = store_lines
    dead = S3Settings(
        endpoint=f"http://127.0.0.1:{free_port()}",
        region="us-east-1",
        access_key="k",
        secret_key="s",
    )
    where = Location("s3://lake/offers", dead)
    for n in range(6):  # within the first second
        clock.now = n / 10
        with pytest.raises(LocationError):
            locations.probe(where)
    clock.now = 10.0
    with pytest.raises(LocationError) as refused:
        locations.probe(where)
    lines = [r.getMessage() for r in caplog.records if r.name == "nextoffer.datasets"]
    assert len(lines) == 2, lines
    told = f"dataset location refused: {refused.value} (the store said: "
    assert all(line.startswith(told) for line in lines), lines
    assert all("Could not connect to server" in line for line in lines), lines
    assert lines[1].endswith("(and 5 more like it in the 10 s before)"), lines[1]
    assert all(r.levelno == logging.WARNING for r in caplog.records)


def test_a_folders_lane_is_its_mount_or_its_store(tmp_path: Path) -> None:
    """Calls on one store share a lane (``batch/lanes.py``): a local folder's is the mount
    point holding it, read from the mount table (its escapes decoded) without touching the
    folder; a remote one's its bucket or host, ``s3a`` as ``s3``."""
    from nextoffer.service.batch.lanes import lane_of

    mounts = tmp_path / "mountinfo"
    mounts.write_text(
        "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
        "40 22 0:40 / /srv rw - ext4 /dev/sdb1 rw\n"
        "41 40 0:41 / /srv/data\\040sets rw - nfs4 filer:/export rw\n"
    )
    assert lane_of(Location("/srv/data sets/one/job"), mounts) == "/srv/data sets"
    assert lane_of(Location("file:///srv/data sets"), mounts) == "/srv/data sets"
    assert lane_of(Location("/srv/data/job"), mounts) == "/srv"
    assert lane_of(Location("/var/lib/nextoffer/job"), mounts) == "/"
    assert lane_of(Location("/srv/data sets/job"), tmp_path / "none") == "/"
    assert lane_of(Location("s3a://lake/offers/job")) == "s3://lake"
    assert lane_of(Location("s3://lake/other/job")) == "s3://lake"
    assert lane_of(Location("hdfs://namenode:8020/data/job")) == "hdfs://namenode:8020"
    assert lane_of(Location("gs://bucket/job")) == "gs://bucket"
