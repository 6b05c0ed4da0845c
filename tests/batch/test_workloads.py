"""The workloads API end to end: audiences, datasets, jobs through their lifecycle on the
local engine, the Parquet files and manifest, caps shared with online decisions."""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from starlette.testclient import TestClient

from support.api import Tenant
from support.batch import DATASETS, DWM, SEGMENTS, Library, add_profiles, dataset, segment, workload

DECIDE = 'application/vnd.adobe.xdm+json; schema="https://ns.adobe.com/experience/offer-management/decision-request;version=1.0"'


def wait_done(tenant: Tenant, url: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        body = tenant.client.get(url, headers=tenant.headers).json()
        if not seen or seen[-1] != body["ode:status"]:
            seen.append(body["ode:status"])
        if body["ode:status"] in ("COMPLETED", "ERROR"):
            body["seen"] = seen
            return body
        time.sleep(0.2)
    raise AssertionError(f"job still {seen[-1]} after {timeout} s")


def rows(tenant: Tenant, dataset_id: str) -> list[dict[str, Any]]:
    listing = tenant.client.get(f"{DATASETS}/{dataset_id}/files", headers=tenant.headers)
    assert listing.status_code == 200, listing.text
    out = []
    for entry in listing.json()["files"]:
        if entry["name"].endswith(".parquet"):
            data = tenant.client.get(entry["href"], headers=tenant.headers)
            assert data.status_code == 200
            out.extend(pq.read_table(io.BytesIO(data.content)).to_pylist())
    return out


def test_a_job_decides_the_audience_into_parquet(tenant: Tenant) -> None:
    library = Library(tenant, [{"xdm:limit": 5, "xdm:scope": "global"}])
    add_profiles(tenant, 40)
    segment_id = segment(tenant, "age >= 10")  # p0010..p0039: 30 profiles
    dataset_id = dataset(tenant)
    started = tenant.client.post(
        DWM, json=workload(library, segment_id, dataset_id), headers=tenant.headers
    )
    assert started.status_code == 200, started.text
    job = started.json()
    assert set(job) == {"@id", "xdm:imsOrgId", "ode:createDate", "ode:status"}
    assert job["ode:status"] == "QUEUED"
    assert isinstance(job["ode:createDate"], int) and job["ode:createDate"] > 1_600_000_000_000
    done = wait_done(tenant, f"{DWM}/{job['@id']}")
    assert done["ode:status"] == "COMPLETED", done
    assert done["seen"][-1] == "COMPLETED"
    detail = done["ode:statusDetail"]
    assert detail["profilesTotal"] == 40 and detail["profilesDone"] == 40
    assert detail["decisions"] == 30
    decided = rows(tenant, dataset_id)
    assert len(decided) == 30
    assert len({r["_id"] for r in decided}) == 30
    people = sorted(r["identityMap"][0][1][0]["id"] for r in decided)
    assert people == [f"p{n:04d}@example.com" for n in range(10, 40)]
    chosen = [r["_experience"]["decisioning"]["propositions"][0]["items"][0] for r in decided]
    # A is capped at 5 for everyone; gold profiles get B next; the rest the fallback.
    assert sum(1 for c in chosen if c["id"] == library.a) == 5
    for row, item in zip(decided, chosen, strict=True):
        n = int(row["identityMap"][0][1][0]["id"][1:5])
        if item["id"] != library.a:
            assert item["id"] == (library.b if n % 3 == 0 else library.fallback)
        assert item["fallback"] is (item["id"] == library.fallback)
        assert item["content"] is None  # includeContent false
    manifest = tenant.client.get(
        f"{DATASETS}/{dataset_id}/files/{job['@id']}/manifest.json", headers=tenant.headers
    ).json()
    assert manifest["rows"] == 30 and manifest["engine"] == "local"
    assert all(name.endswith(".parquet") for name in manifest["files"])


def test_batch_and_online_decisions_share_caps(tenant: Tenant) -> None:
    batch_and_online_share_caps(tenant)


def batch_and_online_share_caps(tenant: Tenant) -> None:
    """A global cap of 3: one unit taken online before a job of 12 profiles, two by the
    job, none left for the next online decision (``test_redis_batch`` runs it with the
    counters in Redis)."""
    library = Library(tenant, [{"xdm:limit": 3, "xdm:scope": "global"}])
    add_profiles(tenant, 12)
    decide = {
        "xdm:propositionRequests": [
            {"xdm:placementId": library.placement, "xdm:activityId": library.decision}
        ],
        "xdm:profiles": [{"xdm:identityMap": {"Email": [{"xdm:id": "p0000@example.com"}]}}],
    }
    url = f"/data/core/ode/{tenant.container}/decisions"
    headers = {**tenant.headers, "Content-Type": DECIDE}
    first = tenant.client.post(url, json=decide, headers=headers).json()
    assert first["xdm:propositions"][0]["xdm:options"][0]["xdm:id"] == library.a
    job = tenant.client.post(
        DWM,
        json=workload(library, segment(tenant, "age >= 0"), dataset(tenant)),
        headers=tenant.headers,
    ).json()
    done = wait_done(tenant, f"{DWM}/{job['@id']}")
    assert done["ode:status"] == "COMPLETED", done
    decided = rows(tenant, done["xdm:dataSetId"])
    chosen = [r["_experience"]["decisioning"]["propositions"][0]["items"][0]["id"] for r in decided]
    assert chosen.count(library.a) == 2  # one unit went online before the batch
    after = tenant.client.post(url, json=decide, headers=headers).json()
    assert after["xdm:propositions"][0]["xdm:options"][0]["xdm:id"] != library.a


def test_per_profile_caps_hold_across_batch_and_online(tenant: Tenant) -> None:
    library = Library(tenant, [{"xdm:limit": 1, "xdm:scope": "profile"}])
    add_profiles(tenant, 4)
    job = tenant.client.post(
        DWM,
        json=workload(library, segment(tenant, "age >= 0"), dataset(tenant)),
        headers=tenant.headers,
    ).json()
    done = wait_done(tenant, f"{DWM}/{job['@id']}")
    chosen = [
        r["_experience"]["decisioning"]["propositions"][0]["items"][0]["id"]
        for r in rows(tenant, done["xdm:dataSetId"])
    ]
    assert chosen == [library.a] * 4
    decide = {
        "xdm:propositionRequests": [
            {"xdm:placementId": library.placement, "xdm:activityId": library.decision}
        ],
        "xdm:profiles": [{"xdm:identityMap": {"Email": [{"xdm:id": "p0001@example.com"}]}}],
    }
    answer = tenant.client.post(
        f"/data/core/ode/{tenant.container}/decisions",
        json=decide,
        headers={**tenant.headers, "Content-Type": DECIDE},
    ).json()
    assert answer["xdm:propositions"][0]["xdm:fallback"]["xdm:id"] == library.fallback


def test_the_2022_form_names_its_container_and_include_content(tenant: Tenant) -> None:
    library = Library(tenant, [])
    add_profiles(tenant, 3)
    base = f"/data/core/ode/{tenant.container}/workloads/decisions"
    body = workload(library, segment(tenant, "age >= 0"), dataset(tenant))
    body["xdm:includeContent"] = True
    started = tenant.client.post(base, json=body, headers=tenant.headers)
    assert started.status_code == 200, started.text
    job = started.json()
    assert job["xdm:containerId"] == tenant.container
    done = wait_done(tenant, f"{base}/{job['@id']}")
    assert done["ode:status"] == "COMPLETED", done
    items = [
        r["_experience"]["decisioning"]["propositions"][0]["items"][0]
        for r in rows(tenant, body["xdm:dataSetId"])
    ]
    assert all('"<b>hi</b>"' in item["content"] for item in items)
    # The same job is not found under another container's path.
    other = tenant.client.get(
        f"/data/core/ode/00000000-0000-0000-0000-000000000000/workloads/decisions/{job['@id']}",
        headers=tenant.headers,
    )
    assert other.status_code == 404


@pytest.mark.parametrize(
    ("change", "status", "field"),
    [
        ({"xdm:segmentIds": ["a", "b"]}, 422, "/xdm:segmentIds"),
        ({"xdm:segmentIds": []}, 422, "/xdm:segmentIds"),
        ({"xdm:segmentIds": ["00000000-0000-0000-0000-000000000000"]}, 404, "/xdm:segmentIds/0"),
        ({"xdm:dataSetId": "nope"}, 404, "/xdm:dataSetId"),
        ({"xdm:dataSetId": None}, 422, "/xdm:dataSetId"),
        ({"itemCount": 31}, 422, "/xdm:propositionRequests/0/xdm:itemCount"),
        ({"itemCount": 0}, 422, "/xdm:propositionRequests/0/xdm:itemCount"),
        ({"activity": "xcore:offer-activity:0"}, 404, "/xdm:propositionRequests/0/xdm:activityId"),
        ({"xdm:propositionRequests": []}, 422, "/xdm:propositionRequests"),
        ({"xdm:includeContent": "yes"}, 422, "/xdm:includeContent"),
        ({"nextoffer:engine": "hadoop"}, 422, "/nextoffer:engine"),
        ({"xdm:containerId": "nope"}, 404, "/xdm:containerId"),
        ({"xdm:containerId": ""}, 422, "/xdm:containerId"),
        ({"xdm:containerId": 5}, 422, "/xdm:containerId"),
    ],
)
def test_bad_workloads_name_the_field(
    tenant: Tenant, change: dict[str, Any], status: int, field: str
) -> None:
    library = Library(tenant, [])
    body = workload(library, segment(tenant, "age >= 0"), dataset(tenant))
    change = dict(change)  # the parameter is shared by both backends' runs
    request = body["xdm:propositionRequests"][0]
    if "itemCount" in change:
        request["xdm:itemCount"] = change.pop("itemCount")
    if "activity" in change:
        request["xdm:activityId"] = change.pop("activity")
    body.update(change)
    response = tenant.client.post(DWM, json=body, headers=tenant.headers)
    assert response.status_code == status, response.text
    problem = response.json()
    assert problem["pointer"] == field
    name = field.rsplit("/", 1)[-1] if not field[-1].isdigit() else field.split("/")[1]
    assert name.removeprefix("xdm:").removeprefix("nextoffer:") in problem["detail"]


def test_segment_definitions_crud_and_rule_errors(tenant: Tenant) -> None:
    segment_id = segment(tenant, "age >= 18")
    one = tenant.client.get(f"{SEGMENTS}/{segment_id}", headers=tenant.headers).json()
    assert one["expression"]["value"] == "age >= 18"
    assert one["schema"] == {"name": "_xdm.context.profile"}
    patched = tenant.client.patch(
        f"{SEGMENTS}/{segment_id}",
        json={"expression": {"type": "PQL", "format": "pql/text", "value": "age >= 21"}},
        headers=tenant.headers,
    )
    assert patched.status_code == 200 and patched.json()["expression"]["value"] == "age >= 21"
    listed = tenant.client.get(SEGMENTS, headers=tenant.headers).json()
    assert [s["id"] for s in listed["segments"]] == [segment_id]
    bad = tenant.client.post(
        SEGMENTS,
        json={"name": "x", "expression": {"type": "PQL", "format": "pql/text", "value": "age >="}},
        headers=tenant.headers,
    )
    assert bad.status_code == 422
    problem = bad.json()
    assert problem["pointer"] == "/expression/value"
    assert problem["line"] == 1 and problem["column"] >= 6
    assert (
        tenant.client.delete(f"{SEGMENTS}/{segment_id}", headers=tenant.headers).status_code == 204
    )
    assert tenant.client.get(f"{SEGMENTS}/{segment_id}", headers=tenant.headers).status_code == 404


@pytest.mark.parametrize(
    "query",
    ["start=-1", "start=x", "start=9223372036854775808", "start=207660334999757848576", "limit=0"],
)
def test_a_page_out_of_range_is_400_naming_the_parameter(tenant: Tenant, query: str) -> None:
    # Past a 64-bit integer the databases refuse the offset (SQLite's driver raises,
    # PostgreSQL answers "bigint out of range"): the request must be refused first.
    response = tenant.client.get(f"{SEGMENTS}?{query}", headers=tenant.headers)
    assert response.status_code == 400, response.text
    name = query.split("=")[0]
    assert response.json()["pointer"] == name


def test_the_largest_start_is_an_empty_page(tenant: Tenant) -> None:
    segment(tenant, "age >= 18")
    response = tenant.client.get(f"{SEGMENTS}?start=9223372036854775807", headers=tenant.headers)
    assert response.status_code == 200, response.text
    assert response.json()["segments"] == []


def test_another_tenant_sees_nothing(client: TestClient, tenant: Tenant, db_url: str) -> None:
    from support.api import make_tenant

    library = Library(tenant, [])
    add_profiles(tenant, 2)
    segment_id = segment(tenant, "age >= 0")
    dataset_id = dataset(tenant)
    job = tenant.client.post(
        DWM, json=workload(library, segment_id, dataset_id), headers=tenant.headers
    ).json()
    wait_done(tenant, f"{DWM}/{job['@id']}")
    other = make_tenant(client, db_url, "OTHER@AdobeOrg", "prod")
    for url in (
        f"{SEGMENTS}/{segment_id}",
        f"{DATASETS}/{dataset_id}",
        f"{DATASETS}/{dataset_id}/files",
        f"{DWM}/{job['@id']}",
    ):
        assert client.get(url, headers=other.headers).status_code == 404, url
    assert client.delete(f"{DWM}/{job['@id']}", headers=other.headers).status_code == 404


def test_file_downloads_stay_inside_the_dataset(tenant: Tenant) -> None:
    dataset_id = dataset(tenant)
    for path in ("../nextoffer.db", "%2e%2e/x", "_staging/part-00000.parquet", "x/../../y"):
        response = tenant.client.get(
            f"{DATASETS}/{dataset_id}/files/{path}", headers=tenant.headers
        )
        assert response.status_code == 404, path


def test_a_dataset_location_stays_under_the_datasets_root(tenant: Tenant) -> None:
    for location in ("/etc", "../outside", "/tmp/../etc/x"):
        response = tenant.client.post(
            DATASETS, json={"name": "x", "location": location}, headers=tenant.headers
        )
        assert response.status_code == 422, location
        assert response.json()["pointer"] == "/location"
    inside = tenant.client.post(
        DATASETS, json={"name": "x", "location": "email/weekly"}, headers=tenant.headers
    )
    assert inside.status_code == 201
    assert inside.json()["location"].endswith("/datasets/email/weekly")


@pytest.mark.parametrize("form", ["dwm", "ode"])
def test_adobes_documented_bodies(tenant: Tenant, form: str) -> None:
    """The request Adobe's page prints (its ids mapped to ours) is accepted, and the answer
    has exactly the members and types of the page's response; a status read back too."""
    from support import example, remap

    library = Library(tenant, [])
    add_profiles(tenant, 2)
    request = example(f"batch-{form}-start.request.json")
    documented = example(f"batch-{form}-start.response.json")
    mapping = {
        request["xdm:segmentIds"][0]: segment(tenant, "age >= 0"),
        request["xdm:dataSetId"]: dataset(tenant),
        request["xdm:propositionRequests"][0]["xdm:activityId"]: library.decision,
        request["xdm:propositionRequests"][0]["xdm:placementId"]: library.placement,
    }
    base = DWM if form == "dwm" else f"/data/core/ode/{tenant.container}/workloads/decisions"
    started = tenant.client.post(base, json=remap(request, mapping), headers=tenant.headers)
    assert started.status_code == 200, started.text
    answer = started.json()
    assert set(answer) == set(documented)
    assert {k: type(v) for k, v in answer.items()} == {k: type(v) for k, v in documented.items()}
    assert answer["xdm:imsOrgId"] == "ACME@AdobeOrg" and answer["ode:status"] == "QUEUED"
    status = wait_done(tenant, f"{base}/{answer['@id']}")
    read_back = example(f"batch-{form}-status.response.json")
    assert set(read_back) <= set(status)
    assert status["ode:status"] == "COMPLETED"


def test_a_job_failing_on_its_dataset_folder_is_logged_without_a_traceback(
    tenant: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    # The dataset's folder is a file: the job ends in ERROR saying so, and the log line
    # tells it whole (a traceback reached `nextoffer batch run`'s stderr).
    library = Library(tenant, [])
    add_profiles(tenant, 3)
    created = tenant.client.post(
        DATASETS, json={"name": "x", "location": "blocked/here"}, headers=tenant.headers
    ).json()
    folder = Path(created["location"])
    shutil.rmtree(folder)
    folder.write_text("a file where the dataset's folder should be")
    body = workload(library, segment(tenant, "age >= 0"), created["id"])
    with caplog.at_level("ERROR", logger="nextoffer"):
        job_id = tenant.client.post(DWM, json=body, headers=tenant.headers).json()["@id"]
        done = wait_done(tenant, f"{DWM}/{job_id}")
    assert done["ode:status"] == "ERROR", done
    message = done["ode:statusDetail"]["errors"][0]["message"]
    assert "Error" in message, message  # the OSError's own words, e.g. NotADirectoryError
    failed = [r for r in caplog.records if f"batch job {job_id} failed" in r.getMessage()]
    assert failed and all(r.exc_info is None for r in failed), failed


def test_another_tenant_cannot_name_a_datasets_location(
    client: TestClient, tenant: Tenant, db_url: str
) -> None:
    """A dataset's folder is its own: another tenant naming it (as it is, relative, as a
    file:// URI, a folder inside it or around it) is refused, so it never lists or
    downloads the first tenant's decision events (their identities)."""
    from support.api import make_tenant

    dataset_id, job = _a_completed_job(tenant)
    location = tenant.client.get(f"{DATASETS}/{dataset_id}", headers=tenant.headers).json()[
        "location"
    ]
    root = str(Path(location).parent)
    other = make_tenant(client, db_url, "OTHER@AdobeOrg", "prod")
    for taken in (
        location,
        dataset_id,
        Path(location).as_uri(),
        f"{location}/inside",
        f"{location}/{job['@id']}",
        root,
        ".",
        f"FILE://{location}",
        f"file://localhost{location}",
        f"file:{location}",  # RFC 8089's short form
    ):
        response = client.post(
            DATASETS, json={"name": "theirs", "location": taken}, headers=other.headers
        )
        assert response.status_code == 422, (taken, response.text)
        assert response.json()["pointer"] == "/location"
    own = client.post(DATASETS, json={"name": "own", "location": "own"}, headers=other.headers)
    assert own.status_code == 201, own.text
    short = client.post(
        DATASETS, json={"name": "short", "location": f"file:{root}/short"}, headers=other.headers
    )
    assert short.status_code == 201, short.text
    assert short.json()["location"] == f"{root}/short"
    around = client.post(
        DATASETS, json={"name": "x", "location": "own/deeper"}, headers=tenant.headers
    )
    assert around.status_code == 422, around.text


def _a_completed_job(tenant: Tenant) -> tuple[str, dict[str, Any]]:
    """A dataset and a job that completed on it (two profiles, an empty library)."""
    library = Library(tenant, [])
    add_profiles(tenant, 2)
    dataset_id = dataset(tenant)
    job = tenant.client.post(
        DWM, json=workload(library, segment(tenant, "age >= 0"), dataset_id), headers=tenant.headers
    ).json()
    assert wait_done(tenant, f"{DWM}/{job['@id']}")["ode:status"] == "COMPLETED"
    return dataset_id, job


def test_a_manifest_of_a_job_that_did_not_complete_is_not_served(
    tenant: Tenant, db_url: str
) -> None:
    """A publish stuck on its store can go on after its job was failed, cancelled or shut
    down, and write the manifest before the folder's removal: the folder is then not
    listed nor served, its job being in ERROR."""
    from nextoffer.service import datasets
    from nextoffer.service.batch import lifecycle
    from nextoffer.storage.store import Store

    assert datasets.PUBLISHED == lifecycle.COMPLETED  # a copy: datasets cannot import it
    dataset_id, job = _a_completed_job(tenant)
    listed = tenant.client.get(f"{DATASETS}/{dataset_id}/files", headers=tenant.headers).json()
    names = [entry["name"] for entry in listed["files"]]
    assert len(names) == 2 and all(name.startswith(job["@id"] + "/") for name in names)
    store = Store.open(db_url)
    try:
        with store.session(write=True) as session:
            assert session.batch.move_job(
                job["@id"], expect=None, values={"status": lifecycle.ERROR}
            )
    finally:
        store.close()
    listing = tenant.client.get(f"{DATASETS}/{dataset_id}/files", headers=tenant.headers)
    assert listing.status_code == 200 and listing.json()["files"] == []
    for name in names:
        response = tenant.client.get(
            f"{DATASETS}/{dataset_id}/files/{name}", headers=tenant.headers
        )
        assert response.status_code == 404, name


def test_a_shared_folder_lists_only_the_datasets_own_jobs(
    client: TestClient, tenant: Tenant, db_url: str
) -> None:
    """Two datasets recorded on one folder (before locations were checked) list and serve
    only the jobs whose manifest names them."""
    from nextoffer.storage.batch import DatasetRecord
    from nextoffer.storage.store import Store
    from support.api import make_tenant

    dataset_id, _ = _a_completed_job(tenant)
    ours = tenant.client.get(f"{DATASETS}/{dataset_id}/files", headers=tenant.headers).json()
    assert len(ours["files"]) == 2
    location = tenant.client.get(f"{DATASETS}/{dataset_id}", headers=tenant.headers).json()[
        "location"
    ]
    other = make_tenant(client, db_url, "OTHER@AdobeOrg", "prod")
    store = Store.open(db_url)
    try:
        with store.session(write=True) as session:
            session.batch.insert_dataset(
                DatasetRecord("shared", "OTHER@AdobeOrg", "prod", "shared", location, 0)
            )
    finally:
        store.close()
    listing = client.get(f"{DATASETS}/shared/files", headers=other.headers)
    assert listing.status_code == 200 and listing.json()["files"] == []
    for entry in ours["files"]:
        name = entry["name"]
        response = client.get(f"{DATASETS}/shared/files/{name}", headers=other.headers)
        assert response.status_code == 404, name


def test_a_file_uri_location_is_percent_decoded(tenant: Tenant, settings: Any) -> None:
    """``file://`` names a path percent-encoded (``Path.as_uri()``): the folder is the
    decoded one; a plain path keeps its ``%`` as it is."""
    root = Path(settings.datasets_dir).resolve()
    uri = (root / "weekly [EU] é").as_uri()
    created = tenant.client.post(
        DATASETS, json={"name": "x", "location": uri}, headers=tenant.headers
    )
    assert created.status_code == 201, created.text
    assert created.json()["location"] == str(root / "weekly [EU] é")
    plain = tenant.client.post(
        DATASETS, json={"name": "x", "location": "pct%20kept"}, headers=tenant.headers
    )
    assert plain.status_code == 201, plain.text
    assert plain.json()["location"] == str(root / "pct%20kept")


def test_a_dataset_recorded_on_the_root_blocks_no_new_dataset(
    tenant: Tenant, settings: Any, db_url: str
) -> None:
    """The datasets root was once a location a tenant could name: such a dataset does not
    make every new (default) location overlap it."""
    from nextoffer.storage.batch import DatasetRecord
    from nextoffer.storage.store import Store

    store = Store.open(db_url)
    try:
        with store.session(write=True) as session:
            session.batch.insert_dataset(
                DatasetRecord(
                    "legacy",
                    "OTHER@AdobeOrg",
                    "prod",
                    "legacy",
                    str(Path(settings.datasets_dir).resolve()),
                    0,
                )
            )
    finally:
        store.close()
    dataset(tenant)
    named = tenant.client.post(
        DATASETS, json={"name": "x", "location": "weekly"}, headers=tenant.headers
    )
    assert named.status_code == 201, named.text


def test_a_segment_description_is_bounded(tenant: Tenant) -> None:
    """A page lists 100 definitions whole: a megabyte of description each made pages of
    100 MB."""
    body = {
        "name": "x",
        "expression": {"type": "PQL", "format": "pql/text", "value": "age >= 0"},
        "description": "d" * 4097,
    }
    refused = tenant.client.post(SEGMENTS, json=body, headers=tenant.headers)
    assert refused.status_code == 422, refused.text
    assert refused.json()["pointer"] == "/description"
    body["description"] = "d" * 4096
    assert tenant.client.post(SEGMENTS, json=body, headers=tenant.headers).status_code == 200


def test_each_form_answers_in_its_own_shape_whichever_submitted(tenant: Tenant) -> None:
    """A job read through the 2022 form names its container (as that form's responses
    do), read through the current form it does not (as its page prints), whichever form
    submitted it."""
    library = Library(tenant, [])
    ode = f"/data/core/ode/{tenant.container}/workloads/decisions"
    body = workload(library, segment(tenant, "age >= 0"), dataset(tenant))
    by_dwm = tenant.client.post(DWM, json=body, headers=tenant.headers).json()["@id"]
    by_ode = tenant.client.post(ode, json=body, headers=tenant.headers).json()["@id"]
    for job_id in (by_dwm, by_ode):
        read = tenant.client.get(f"{ode}/{job_id}", headers=tenant.headers).json()
        assert read["xdm:containerId"] == tenant.container, read
        read = tenant.client.get(f"{DWM}/{job_id}", headers=tenant.headers).json()
        assert "xdm:containerId" not in read, read


def test_locations_read_to_record_a_dataset_wait_for_one_being_recorded(
    settings: Any,
) -> None:
    """A write that reads the locations with ``lock`` (to check a new dataset's, then
    insert it) waits while another such write has not committed, then sees its dataset:
    a new row has nothing to lock, and PostgreSQL let both read at once."""
    import threading
    from concurrent.futures import Future

    from sqlalchemy import text

    from nextoffer.storage.batch import DatasetRecord
    from nextoffer.storage.store import Store

    first, second = Store.open(settings.db_url), Store.open(settings.db_url)
    seen: Future[list[str]] = Future()

    def check() -> None:
        with second.session(write=True) as session:
            seen.set_result(session.batch.dataset_locations(lock=True))

    try:
        with first.session(write=True) as session:
            session.batch.dataset_locations(lock=True)
            session.batch.insert_dataset(DatasetRecord("a", "ACME@AdobeOrg", "prod", "a", "/x", 0))
            thread = threading.Thread(target=check, daemon=True)
            thread.start()
            if first.dialect == "postgresql":  # until the other waits on a lock
                deadline = time.monotonic() + 20
                waiting = text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                )
                with first.engine.connect() as watcher:
                    while watcher.execute(waiting).scalar() == 0:
                        assert time.monotonic() < deadline, "the other write never waited"
                        time.sleep(0.02)
            else:  # it waits for the write lock held from a write's start
                time.sleep(0.3)
            assert not seen.done()
        thread.join(timeout=30)
        assert seen.result(timeout=0) == ["/x"]
    finally:
        first.close()
        second.close()


def _create_at_once(nodes: list[Any], locations: list[str]) -> list[str]:
    """Create a dataset on each location at the same instant, in a thread each (on the
    nodes in turn): "created" or "refused" (an overlap's 422) each, sorted."""
    import threading

    from nextoffer.errors import Unprocessable
    from nextoffer.service.auth import Principal

    principal = Principal("ACME@AdobeOrg", "prod", "test", "test")
    barrier = threading.Barrier(len(locations))
    outcomes: list[str] = []

    def create(index: int, location: str) -> None:
        barrier.wait()
        try:
            nodes[index % len(nodes)].datasets.create(
                principal, {"name": "x", "location": location}
            )
        except Unprocessable as exc:
            assert "overlaps the location of another dataset" in exc.detail
            outcomes.append("refused")
        else:
            outcomes.append("created")

    threads = [threading.Thread(target=create, args=item) for item in enumerate(locations)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(outcomes)


def test_datasets_created_at_once_on_one_folder_are_one_dataset(settings: Any) -> None:
    """Datasets created at the same instant on one folder, or one inside another (two
    nodes, two threads each, many rounds): one is recorded and the others are 422. The
    check read the locations in a transaction of its own, before the insert, and each
    creation could find the folder free."""
    from nextoffer.root import NextOffer
    from nextoffer.service.auth import Principal

    rounds = 30
    with NextOffer.open(settings) as one, NextOffer.open(settings) as two:
        for n in range(rounds):
            names = [f"r{n}", f"r{n}", f"r{n}/in", f"r{n}/in/deeper"]
            assert _create_at_once([one, two], names) == ["created"] + ["refused"] * 3, n
        principal = Principal("ACME@AdobeOrg", "prod", "test", "test")
        assert len(one.datasets.get_all(principal)) == rounds
