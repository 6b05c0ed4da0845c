"""Datasets on an object store: a workload job writes its Parquet files to
``s3://bucket/prefix`` through pyarrow's real S3 client, the API lists and serves them,
and a job that fails leaves nothing listed; dataset locations are checked when created.

The S3 server is moto's standalone ``moto_server``, a separate process on loopback
(``support/s3.py`` says why no other S3 server is used): nextoffer talks to it over
HTTP with pyarrow's S3 client (the AWS SDK for C++), exactly as to S3 or MinIO.
"""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from pyarrow import fs
from starlette.testclient import TestClient

from nextoffer.api.app import create_app
from nextoffer.settings import Settings
from support.api import Tenant, make_tenant
from support.batch import DATASETS, DWM, Library, add_profiles, segment, workload
from support.s3 import ACCESS_KEY, REGION, SECRET_KEY, client, s3_server

BUCKET = "offers-lake"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with s3_server() as url:
        client(url).create_dir(BUCKET)  # type: ignore[attr-defined]
        yield url


@pytest.fixture
def store(endpoint: str) -> Any:
    """An S3 client of the test's own, to look at the bucket beside nextoffer."""
    return client(endpoint)


@pytest.fixture
def tenant(endpoint: str, tmp_path: Path) -> Iterator[Tenant]:
    settings = Settings(
        db_url=f"sqlite:///{tmp_path / 'nextoffer.db'}",
        freeze_heap=False,
        access_log=False,
        datasets_dir=str(tmp_path / "datasets"),
        batch_workers=2,
        batch_chunk=5,  # 40 profiles: 8 parts
        s3_endpoint=endpoint,
        s3_region=REGION,
        s3_access_key=ACCESS_KEY,
        s3_secret_key=SECRET_KEY,
        # The bucket, and one the store does not have (its write check must fail).
        dataset_remote_prefixes=(f"s3://{BUCKET}", "s3://no-such-bucket"),
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield make_tenant(test_client, settings.db_url, "ACME@AdobeOrg", "prod")


def wait_done(tenant: Tenant, job_id: str) -> dict[str, Any]:
    import time

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        body: dict[str, Any] = tenant.client.get(f"{DWM}/{job_id}", headers=tenant.headers).json()
        if body["ode:status"] in ("COMPLETED", "ERROR"):
            return body
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish")


def s3_dataset(tenant: Tenant, prefix: str) -> str:
    created = tenant.client.post(
        DATASETS,
        json={"name": "lake", "location": f"s3://{BUCKET}/{prefix}/"},
        headers=tenant.headers,
    )
    assert created.status_code == 201, created.text
    assert created.json()["location"] == f"s3://{BUCKET}/{prefix}"
    return str(created.json()["id"])


def objects(store: Any, prefix: str) -> list[str]:
    """Every object key under ``prefix`` in the bucket, as the store lists them."""
    found = store.get_file_info(
        fs.FileSelector(f"{BUCKET}/{prefix}", recursive=True, allow_not_found=True)
    )
    return sorted(i.path.removeprefix(f"{BUCKET}/{prefix}/") for i in found if i.is_file)


def test_a_job_writes_parquet_to_s3_listed_and_downloadable(tenant: Tenant, store: Any) -> None:
    library = Library(tenant, [{"xdm:limit": 5, "xdm:scope": "global"}])
    add_profiles(tenant, 40)
    dataset_id = s3_dataset(tenant, "weekly/email")
    body = workload(library, segment(tenant, "age >= 10"), dataset_id)  # 30 of 40
    started = tenant.client.post(DWM, json=body, headers=tenant.headers)
    assert started.status_code == 200, started.text
    job_id = started.json()["@id"]
    done = wait_done(tenant, job_id)
    assert done["ode:status"] == "COMPLETED", done
    # In the bucket: the job's parts and its manifest, nothing else (no export, no probe).
    stored = objects(store, "weekly/email")
    assert stored, "nothing was written to the bucket"
    assert all(key.startswith(f"{job_id}/") for key in stored), stored
    names = [key.split("/", 1)[1] for key in stored]
    assert "manifest.json" in names
    parts = [n for n in names if n != "manifest.json"]
    assert parts and all(n.startswith("part-") and n.endswith(".parquet") for n in parts)
    # Listed through the API, each downloadable, its bytes those in the bucket.
    listing = tenant.client.get(f"{DATASETS}/{dataset_id}/files", headers=tenant.headers)
    assert listing.status_code == 200, listing.text
    listed = {f["name"]: f for f in listing.json()["files"]}
    assert set(listed) == set(stored) == {f"{job_id}/{n}" for n in names}
    decided = []
    for name, entry in listed.items():
        data = tenant.client.get(entry["href"], headers=tenant.headers)
        assert data.status_code == 200, name
        assert len(data.content) == entry["length"]
        with store.open_input_stream(f"{BUCKET}/weekly/email/{name}") as direct:
            assert data.content == direct.read()
        if name.endswith(".parquet"):
            assert data.headers["content-type"] == "application/octet-stream"
            decided.extend(pq.read_table(io.BytesIO(data.content)).to_pylist())
    manifest = tenant.client.get(
        f"{DATASETS}/{dataset_id}/files/{job_id}/manifest.json", headers=tenant.headers
    ).json()
    assert manifest["rows"] == 30 and sorted(manifest["files"]) == sorted(parts)
    people = sorted(r["identityMap"][0][1][0]["id"] for r in decided)
    assert people == [f"p{n:04d}@example.com" for n in range(10, 40)]
    chosen = [r["_experience"]["decisioning"]["propositions"][0]["items"][0] for r in decided]
    assert sum(1 for c in chosen if c["id"] == library.a) == 5  # the cap held
    assert sorted(done["ode:statusDetail"]["files"]) == sorted(listed)


def test_a_failed_job_leaves_nothing_listed(tenant: Tenant, store: Any, tmp_path: Path) -> None:
    """A profile whose stored attributes are not JSON fails the job in the last chunk,
    after earlier chunks wrote their parts: the job ends in ERROR, its objects are
    removed, and the dataset lists nothing."""
    library = Library(tenant, [])
    add_profiles(tenant, 40)
    dataset_id = s3_dataset(tenant, "failing")
    with sqlite3.connect(tmp_path / "nextoffer.db") as db:
        db.execute(
            "UPDATE profiles SET attributes = 'not json'"
            " WHERE profile_id = (SELECT max(profile_id) FROM profiles)"
        )
    body = workload(library, segment(tenant, "age >= 0"), dataset_id)
    job_id = tenant.client.post(DWM, json=body, headers=tenant.headers).json()["@id"]
    done = wait_done(tenant, job_id)
    assert done["ode:status"] == "ERROR", done
    assert done["ode:statusDetail"]["errors"][0]["code"] == "failed"
    assert objects(store, "failing") == []
    listing = tenant.client.get(f"{DATASETS}/{dataset_id}/files", headers=tenant.headers)
    assert listing.status_code == 200 and listing.json()["files"] == []


def test_parts_without_a_manifest_are_never_listed(tenant: Tenant, store: Any) -> None:
    """What a runner killed before its commit leaves: parts under a job's prefix, no
    manifest. Not listed, not downloadable; a committed job beside it is."""
    library = Library(tenant, [])
    add_profiles(tenant, 6)
    dataset_id = s3_dataset(tenant, "crashed")
    body = workload(library, segment(tenant, "age >= 0"), dataset_id)
    job_id = tenant.client.post(DWM, json=body, headers=tenant.headers).json()["@id"]
    assert wait_done(tenant, job_id)["ode:status"] == "COMPLETED"
    committed_part = next(n for n in objects(store, "crashed") if n.endswith(".parquet"))
    with (
        store.open_input_stream(f"{BUCKET}/crashed/{committed_part}") as source,
        store.open_output_stream(f"{BUCKET}/crashed/dead-job/part-00000.parquet") as out,
    ):
        out.write(source.read())
    listing = tenant.client.get(f"{DATASETS}/{dataset_id}/files", headers=tenant.headers)
    names = [f["name"] for f in listing.json()["files"]]
    assert names and all(n.startswith(f"{job_id}/") for n in names)
    missing = tenant.client.get(
        f"{DATASETS}/{dataset_id}/files/dead-job/part-00000.parquet", headers=tenant.headers
    )
    assert missing.status_code == 404
    # A file of a committed job's folder that its manifest does not name: not served.
    with store.open_output_stream(f"{BUCKET}/crashed/{job_id}/part-99999.parquet") as out:
        out.write(b"stray")
    stray = tenant.client.get(
        f"{DATASETS}/{dataset_id}/files/{job_id}/part-99999.parquet", headers=tenant.headers
    )
    assert stray.status_code == 404


@pytest.mark.parametrize(
    ("location", "says"),
    [
        ("abfss://container@account.dfs.core.windows.net/x", "not supported"),
        ("ftp://host/x", "not supported"),
        (f"s3://{ACCESS_KEY}:{SECRET_KEY}@{BUCKET}/x", "no credentials"),
        (f"s3://{BUCKET}/x?endpoint_override=127.0.0.1:1", "no query"),
        ("s3:///x", "bucket"),
        (
            "s3://no-such-bucket/x",
            "cannot write to s3://no-such-bucket/x: its bucket does not exist",
        ),
    ],
)
def test_dataset_locations_are_checked(tenant: Tenant, location: str, says: str) -> None:
    refused = tenant.client.post(
        DATASETS, json={"name": "x", "location": location}, headers=tenant.headers
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["pointer"] == "/location"
    assert says in refused.json()["detail"]
    assert SECRET_KEY not in refused.text


def test_s3a_is_the_same_store_and_keys_stay_out_of_the_dataset(tenant: Tenant, store: Any) -> None:
    created = tenant.client.post(
        DATASETS, json={"name": "x", "location": f"s3a://{BUCKET}/spark"}, headers=tenant.headers
    )
    assert created.status_code == 201, created.text
    assert created.json()["location"] == f"s3a://{BUCKET}/spark"
    read = tenant.client.get(f"{DATASETS}/{created.json()['id']}", headers=tenant.headers)
    assert SECRET_KEY not in read.text and ACCESS_KEY not in read.text
    assert objects(store, "spark") == []  # the write check removed its probe


def test_spark_without_hadoop_aws_fails_with_the_reason(tenant: Tenant, store: Any) -> None:
    """Spark (``local[2]``) writes ``s3a://`` only with hadoop-aws on its classpath, which
    these machines cannot fetch: the job ends in ERROR saying what to add, and the profile
    export the runner had uploaded to the job's folder is removed."""
    library = Library(tenant, [])
    add_profiles(tenant, 6)
    dataset_id = s3_dataset(tenant, "spark")
    body = {
        **workload(library, segment(tenant, "age >= 0"), dataset_id),
        "nextoffer:engine": "spark",
    }
    job_id = tenant.client.post(DWM, json=body, headers=tenant.headers).json()["@id"]
    done = wait_done(tenant, job_id)
    assert done["ode:status"] == "ERROR", done
    message = done["ode:statusDetail"]["errors"][0]["message"]
    assert "Spark has no Hadoop file system for s3a://" in message, message
    assert "hadoop-aws" in message
    assert objects(store, "spark") == []
    listing = tenant.client.get(f"{DATASETS}/{dataset_id}/files", headers=tenant.headers)
    assert listing.json()["files"] == []
