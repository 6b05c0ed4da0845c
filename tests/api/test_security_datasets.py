"""Security: what one tenant's dataset request can do to the server and to other tenants.

Creating a dataset on a remote location writes a small file there first (the write
check). A store that never answers (Google Cloud Storage without credentials retries its
metadata server for a quarter of an hour; a host that accepts and stays silent) must not
hold the request, nor the few threads every API call shares: found by running six such
``POST …/datasets`` at once against a live server, after which every authenticated call
waited 16 minutes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from starlette.testclient import TestClient

from nextoffer.api.app import create_app
from nextoffer.logs import Throttled
from nextoffer.service import datasets, locations
from nextoffer.settings import Settings
from support.api import Tenant, make_tenant

DATASETS = "/data/core/nextoffer/datasets"
#: The remote folders this module's server lets tenants create datasets under.
PREFIXES = ("s3://lake", "gs://lake")


@pytest.fixture(autouse=True)
def store_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """A throttle of each test's own for the stores' lines (``locations.log_failure``): a
    line a test looks for is not held back by another test's, seconds before."""
    throttled = Throttled(logging.getLogger("nextoffer.datasets"))
    monkeypatch.setattr(locations, "_STORE_FAILED", throttled)


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    """The API with remote dataset locations on, under :data:`PREFIXES`."""
    settings = Settings(db_url=db_url, freeze_heap=False, dataset_remote_prefixes=PREFIXES)
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def silent_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Every remote write check waits, as on a store that does not answer, until the
    test ends (or 10 s pass); the check's deadline is cut to 1 s."""
    answer = threading.Event()

    def probe(location: locations.Location) -> None:
        answer.wait(10)
        raise locations.LocationError(f"cannot write to {location.uri}: timed out")

    monkeypatch.setattr(locations, "probe", probe)
    monkeypatch.setattr(datasets, "PROBE_SECONDS", 1.0, raising=False)
    yield answer
    answer.set()


def create(tenant: Tenant, location: str) -> tuple[int, dict[str, object], float]:
    started = time.monotonic()
    response = tenant.client.post(
        DATASETS, json={"name": "lake", "location": location}, headers=tenant.headers
    )
    return response.status_code, response.json(), time.monotonic() - started


def test_a_remote_location_whose_store_does_not_answer_is_refused_in_bounded_time(
    tenant: Tenant, silent_store: threading.Event
) -> None:
    status, body, took = create(tenant, "gs://lake/offers")
    assert took < 5, f"the request waited {took:.1f} s for the store"
    assert status == 422, body
    assert body["pointer"] == "/location"
    assert "did not answer within 1 s" in str(body["detail"])
    listed = tenant.client.get(DATASETS, headers=tenant.headers).json()["datasets"]
    assert listed == []  # nothing recorded for a location never checked


def test_location_checks_waiting_on_stores_leave_the_api_answering(
    client: TestClient, db_url: str, tenant: Tenant, silent_store: threading.Event
) -> None:
    other = make_tenant(client, db_url, "GLOBEX@AdobeOrg", "prod")
    # More checks at once than the server has threads (6 on 2 cores).
    with ThreadPoolExecutor(8) as pool:
        pending = [pool.submit(create, tenant, f"s3://lake/{n}") for n in range(8)]
        time.sleep(0.3)
        started = time.monotonic()
        listing = other.client.get(DATASETS, headers=other.headers)
        took = time.monotonic() - started
        answers = [p.result() for p in pending]
    assert listing.status_code == 200, listing.text
    assert took < 0.9, f"another tenant's call waited {took:.1f} s behind the checks"
    statuses = sorted(status for status, _, _ in answers)
    # At most two checks of one org wait on stores; the others are told to come back.
    assert statuses.count(422) <= datasets.PROBES_PER_ORG, answers
    assert all(status in (422, 503) for status in statuses), answers
    busy = next(body for status, body, _ in answers if status == 503)
    assert "try again" in str(busy["detail"])
    # Another org's check is not refused for the first org's waiting ones.
    status, body, _ = create(other, "s3://lake/globex")
    assert status == 422 and "did not answer" in str(body["detail"]), body


@pytest.mark.parametrize("job", ["j" * 300, "manifest.json"])
def test_a_file_name_no_job_could_have_is_404_without_the_servers_paths(
    tenant: Tenant, job: str
) -> None:
    made = tenant.client.post(DATASETS, json={"name": "offers"}, headers=tenant.headers)
    assert made.status_code == 201, made.text
    dataset = made.json()["id"]
    response = tenant.client.get(
        f"{DATASETS}/{dataset}/files/{job}/manifest.json", headers=tenant.headers
    )
    assert response.status_code == 404, response.text
    assert "/" not in response.json()["detail"].replace(f"{job}/manifest.json", "")


@pytest.mark.parametrize(
    ("location", "told"),
    [
        ("s3://other-bucket/x", "under none of this server's remote dataset folders"),
        ("s3://lakehouse/x", "under none of this server's remote dataset folders"),
        ("hdfs://10.0.0.1:8020/x", "under none of this server's remote dataset folders"),
    ],
)
def test_a_remote_location_outside_the_servers_folders_is_refused_unwritten(
    tenant: Tenant, location: str, told: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Any bucket the server's credentials reach, or any host and port (hdfs://), was
    # written to (the write check) and recorded for whichever tenant asked.
    probed: list[str] = []
    monkeypatch.setattr(locations, "probe", lambda where: probed.append(where.uri))
    status, body, _ = create(tenant, location)
    assert status == 422, body
    assert body["pointer"] == "/location" and told in str(body["detail"]), body
    assert probed == []
    inside, _, _ = create(tenant, "s3a://lake/offers")  # s3a:// is s3:// (the same objects)
    assert inside == 201 and probed == ["s3a://lake/offers"]


def test_remote_locations_are_off_without_folders_named_by_the_operator(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    probed: list[str] = []
    monkeypatch.setattr(locations, "probe", lambda where: probed.append(where.uri))
    settings = Settings(db_url=db_url, freeze_heap=False)
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        tenant = make_tenant(test_client, db_url, "ACME@AdobeOrg", "prod")
        status, body, _ = create(tenant, "s3://lake/offers")
    assert status == 422, body
    assert "NEXTOFFER_DATASET_REMOTE_PREFIXES" in str(body["detail"]), body
    assert probed == []


def test_a_location_the_server_cannot_reach_is_refused_without_the_stores_words(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An ``hdfs://`` location on a server without libhdfs or a Java runtime (pyarrow's
    real HDFS client, which lists each of the ~90 paths it tried for ``libjvm.so``): the
    422 says which location, what is missing and what to do; the server's log alone has
    the store's words."""
    settings = Settings(
        db_url=db_url, freeze_heap=False, dataset_remote_prefixes=("hdfs://127.0.0.1:9",)
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        tenant = make_tenant(test_client, db_url, "ACME@AdobeOrg", "prod")
        status, body, _ = create(tenant, "hdfs://127.0.0.1:9/offers")
    assert status == 422, body
    detail = str(body["detail"])
    assert detail.startswith("cannot write to hdfs://127.0.0.1:9/offers: this server cannot")
    assert "HDFS" in detail and "operator" in detail, detail
    assert "dlopen" not in detail and "/usr/" not in detail and "\n" not in detail, detail
    assert "the store said: " in caplog.text


def test_a_datasets_store_that_fails_is_a_503_saying_what_not_its_words(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A dataset's store that fails when its files are listed or read (here a file system
    this server's pyarrow was built without, an ImportError: once a 500): 503 saying which
    dataset and location and what that means, the store's words logged only."""
    monkeypatch.setattr(locations, "probe", lambda where: None)
    status, made, _ = create(tenant, "gs://lake/offers")
    assert status == 201, made

    def failing(*args: object) -> object:
        raise ImportError("The pyarrow installation is not built with support for 'GcsFs'")

    monkeypatch.setattr(locations, "_filesystem", failing)
    for path in ("files", "files/job/manifest.json"):
        response = tenant.client.get(f"{DATASETS}/{made['id']}/{path}", headers=tenant.headers)
        assert response.status_code == 503, response.text
        detail = response.json()["detail"]
        assert detail.startswith(f"dataset {made['id']}: cannot read gs://lake/offers: ")
        assert "built without support for gs:// stores" in detail, detail
        assert "GcsFs" not in detail
    assert "GcsFs" in caplog.text
