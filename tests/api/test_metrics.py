"""/metrics in Prometheus text format, and the JSON access log: what they count and write."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from nextoffer.api import access_log
from nextoffer.api.access_log import FLUSH_CHARS, PATH_CHARS, WRITE_BYTES, AccessLog, Observe
from nextoffer.api.app import create_app
from nextoffer.api.metrics import Metrics
from nextoffer.engine import PropositionRequest
from nextoffer.repository.objects import (
    COLLECTION,
    DECISION,
    FALLBACK_OFFER,
    PERSONALIZED_OFFER,
    PLACEMENT,
    SchemaRef,
)
from nextoffer.root import NextOffer
from nextoffer.service.decisions import DecisionCall
from nextoffer.settings import Settings
from nextoffer.storage.store import Store
from support.api import HTML, WEB, Tenant, make_tenant
from support.edge import Library
from support.servers import serve

DECIDE_TYPE = (
    'application/vnd.adobe.xdm+json; schema="https://ns.adobe.com/experience/offer-management/'
    'decision-request;version=1.0"'
)
INSTANCE_ROUTE = "/data/core/xcore/{container_id}/instances/{instance_id}"
DECISIONS_ROUTE = "/data/core/ode/{container_id}/decisions"


def app_client(tmp_path: Path, **settings: bool) -> tuple[TestClient, str]:
    db_url = f"sqlite:///{tmp_path / 'metrics.db'}"
    return TestClient(
        create_app(Settings(db_url=db_url, **settings)), raise_server_exceptions=False
    ), db_url


@pytest.fixture
def observed(tmp_path: Path) -> Iterator[tuple[TestClient, Tenant]]:
    client, db_url = app_client(tmp_path)
    with client:
        yield client, make_tenant(client, db_url, "ACME@AdobeOrg", "prod")


def samples(client: TestClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:  # a sample's value, 0 when there is none
    return found.get((name, frozenset(labels.items())), 0.0)


def library(tenant: Tenant) -> dict[str, str]:
    placement = tenant.create(
        "offer-placement", {"xdm:name": "Banner", "xdm:channel": WEB, "xdm:componentType": HTML}
    )
    reps = [
        {
            "xdm:placement": placement["@id"],
            "xdm:components": [{"@type": HTML, "dc:format": "text/html"}],
        }
    ]
    rule = tenant.create(
        "eligibility-rule",
        {
            "xdm:name": "gold",
            "xdm:condition": {
                "xdm:type": "PQL",
                "xdm:format": "pql/text",
                "xdm:value": 'tier = "gold"',
            },
        },
    )
    offer = tenant.create(
        "personalized-offer",
        {
            "xdm:name": "gold",
            "xdm:status": "approved",
            "xdm:representations": reps,
            "xdm:rank": {"xdm:priority": 1},
            "xdm:selectionConstraint": {"xdm:eligibilityRule": rule["@id"]},
        },
    )
    fallback = tenant.create(
        "fallback-offer",
        {"xdm:name": "welcome", "xdm:status": "approved", "xdm:representations": reps},
    )
    collection = tenant.create(
        "offer-filter", {"xdm:name": "all", "xdm:filterType": "offers", "xdm:ids": [offer["@id"]]}
    )
    decision = tenant.create(
        "offer-activity",
        {
            "xdm:name": "Home",
            "xdm:status": "live",
            "xdm:fallback": fallback["@id"],
            "xdm:criteria": [
                {
                    "xdm:placements": [placement["@id"]],
                    "xdm:optionSelection": {"xdm:filter": collection["@id"]},
                }
            ],
        },
    )
    return {"placement": placement["@id"], "decision": decision["@id"]}


def decide(client: TestClient, tenant: Tenant, ids: dict[str, str], identity: str) -> None:
    body = {
        "xdm:propositionRequests": [
            {"xdm:placementId": ids["placement"], "xdm:activityId": ids["decision"]}
        ],
        "xdm:profiles": [{"xdm:identityMap": {"Email": [{"xdm:id": identity}]}}],
    }
    response = client.post(
        f"/data/core/ode/{tenant.container}/decisions",
        content=orjson.dumps(body),
        headers={**tenant.headers, "Content-Type": DECIDE_TYPE},
    )
    assert response.status_code == 200, response.text


def test_requests_are_counted_and_timed_per_route_template_not_raw_path(observed):
    client, tenant = observed
    for instance_id in ("missing-1", "missing-2"):
        assert client.get(tenant.url(f"/{instance_id}"), headers=tenant.headers).status_code == 404
    client.get("/no/such/path")
    found = samples(client)
    assert (
        value(
            found, "nextoffer_http_requests_total", method="GET", route=INSTANCE_ROUTE, status="404"
        )
        == 2
    )
    assert (
        value(
            found,
            "nextoffer_http_request_duration_seconds_count",
            method="GET",
            route=INSTANCE_ROUTE,
        )
        == 2
    )
    assert (
        value(
            found, "nextoffer_http_requests_total", method="GET", route="<unmatched>", status="404"
        )
        == 1
    )
    assert not any("missing-1" in dict(labels).get("route", "") for _, labels in found)


def test_edge_decisions_are_counted_apart_from_the_decisioning_api_s(observed):
    client, tenant = observed
    shop = Library(client, tenant.headers, tenant.container, [])
    body = {"events": [{"xdm": {}, "query": {"personalization": {"decisionScopes": [shop.scope]}}}]}
    for _ in range(2):
        response = client.post(
            "/ee/v1/interact",
            params={"configId": tenant.creds.datastream_id},
            content=orjson.dumps(body),
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 200, response.text
    found = samples(client)
    edge = {"name": "nextoffer_decision_propositions_total", "api": "edge"}
    assert value(found, **edge, outcome="options") == 2
    assert (
        value(found, "nextoffer_decision_propositions_total", api="decisioning", outcome="options")
        == 0
    )


def test_decisions_are_counted_by_outcome_and_rebuilds_are_counted(observed):
    client, tenant = observed
    ids = library(tenant)
    client.post(
        "/data/core/nextoffer/profiles",
        json={"identityMap": {"Email": [{"id": "gold@x"}]}, "profile": {"tier": "gold"}},
        headers=tenant.headers,
    )
    decide(client, tenant, ids, "gold@x")
    decide(client, tenant, ids, "gold@x")
    decide(client, tenant, ids, "silver@x")
    found = samples(client)
    counted = {"name": "nextoffer_decision_propositions_total", "api": "decisioning"}
    assert value(found, **counted, outcome="options") == 2
    assert value(found, **counted, outcome="fallback") == 1
    assert (
        value(
            found,
            "nextoffer_http_requests_total",
            method="POST",
            route=DECISIONS_ROUTE,
            status="200",
        )
        == 3
    )
    assert value(found, "nextoffer_catalog_rebuilds_total") >= 1


def test_cap_reservation_refusals_are_counted(tmp_path):
    metrics = Metrics()
    no = NextOffer.open(
        Settings(db_url=f"sqlite:///{tmp_path / 'caps.db'}", freeze_heap=False),
        on_rebuild=metrics.catalog_rebuilt,
        on_refused=metrics.cap_refused,
    )
    creds = no.bootstrap(org="A@AdobeOrg", sandbox="prod")
    principal = creds.principal
    repo = no.repository

    def make(kind, body):
        return repo.create(principal, creds.container_id, SchemaRef(kind, None, ""), body).at_id

    placement = make(PLACEMENT, {"xdm:name": "p", "xdm:channel": WEB, "xdm:componentType": HTML})
    reps = [
        {"xdm:placement": placement, "xdm:components": [{"@type": HTML, "dc:format": "text/html"}]}
    ]
    offer = make(
        PERSONALIZED_OFFER,
        {
            "xdm:name": "o",
            "xdm:status": "approved",
            "xdm:representations": reps,
            "xdm:rank": {"xdm:priority": 1},
            "xdm:cappingConstraint": {"xdm:globalCap": 1},
        },
    )
    fallback = make(
        FALLBACK_OFFER, {"xdm:name": "f", "xdm:status": "approved", "xdm:representations": reps}
    )
    collection = make(COLLECTION, {"xdm:name": "c", "xdm:filterType": "offers", "xdm:ids": [offer]})
    decision = make(
        DECISION,
        {
            "xdm:name": "d",
            "xdm:status": "live",
            "xdm:fallback": fallback,
            "xdm:criteria": [{"xdm:optionSelection": {"xdm:filter": collection}}],
        },
    )
    call = DecisionCall(
        propositions=(PropositionRequest(decision, placement, 1),), identities=[("Email", "a@x")]
    )
    try:
        first = no.decide(principal, creds.container_id, call)
        # Proposes the offer again (a reservation checks the cap, not a read), is refused,
        # falls back.
        second = no.decide(principal, creds.container_id, call)
    finally:
        no.close()
    assert [o.offer_id for o in first.result.propositions[0].options] == [offer]
    assert second.result.propositions[0].options == ()
    assert second.result.propositions[0].fallback is not None
    found = {
        s.name: s.value
        for f in text_string_to_metric_families(metrics.render().decode())
        for s in f.samples
    }
    assert found["nextoffer_cap_reservation_refusals_total"] == 1
    assert found["nextoffer_catalog_rebuilds_total"] >= 1


def test_metrics_can_be_switched_off(tmp_path):
    client, _ = app_client(tmp_path, metrics=False)
    with client:
        assert client.get("/metrics").status_code == 404


def access_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [
        orjson.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")
    ]


def test_access_log_writes_one_json_line_per_request_with_the_request_id(tmp_path, capsys):
    client, db_url = app_client(tmp_path, access_log=True)
    with client:
        tenant = make_tenant(client, db_url, "ACME@AdobeOrg", "prod")
        capsys.readouterr()
        response = client.get(
            tenant.url("/nope"), headers={**tenant.headers, "x-request-id": "req-42"}
        )
        assert response.headers["x-request-id"] == "req-42"
        fresh = client.get("/healthz")
        again = client.get("/healthz")
    first, second, third = access_lines(capsys)
    assert first["method"] == "GET" and first["route"] == INSTANCE_ROUTE and first["status"] == 404
    assert first["request_id"] == "req-42" and first["path"] == tenant.url("/nope")
    assert isinstance(first["duration_ms"], float) and str(first["time"]).endswith("Z")
    assert second["route"] == "/healthz" and second["status"] == 200
    assert second["request_id"] == fresh.headers["x-request-id"] != again.headers["x-request-id"]
    assert third["request_id"] == again.headers["x-request-id"]


def test_access_log_can_be_switched_off(tmp_path, capsys):
    client, _ = app_client(tmp_path, access_log=False)
    with client:
        assert client.get("/healthz").status_code == 200
    assert access_lines(capsys) == []


def healthz_count(http: httpx.Client) -> float:
    families = text_string_to_metric_families(http.get("/metrics").text)
    return next(
        s.value
        for f in families
        for s in f.samples
        if s.name == "nextoffer_http_requests_total" and s.labels.get("route") == "/healthz"
    )


def test_metrics_add_up_every_worker_of_serve_workers_2(tmp_path):
    db_url = f"sqlite:///{tmp_path / 'workers.db'}"
    Store.open(db_url).close()
    with (
        serve(db_url, workdir=tmp_path, extra=("--workers", "2")) as base,
        httpx.Client(base_url=base) as http,
    ):
        time.sleep(2.5)  # each worker folds its observations in within a second
        before = healthz_count(http)  # the start-up probes
        for _ in range(40):  # new connections: uvicorn's workers share the socket, both answer
            assert httpx.get(f"{base}/healthz").status_code == 200
        time.sleep(2.5)
        # Whichever worker answers a scrape sees all 40.
        seen = {healthz_count(http) - before for _ in range(4)}
    assert seen == {40.0}


def rebuilds_after_start(tmp_path: Path, *, warm: bool) -> float:
    """Catalog rebuilds a freshly started app made before any decision (a library exists)."""
    client, _ = app_client(tmp_path, warm_catalogs=warm)
    with client:
        if not warm:
            time.sleep(0.5)  # what a background build would have done by now
            return value(samples(client), "nextoffer_catalog_rebuilds_total")
        deadline = time.monotonic() + 10
        while True:
            found = value(samples(client), "nextoffer_catalog_rebuilds_total")
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)


def test_a_starting_worker_builds_every_snapshot_before_the_first_decision(tmp_path):
    client, db_url = app_client(tmp_path)
    with client:  # a first life: one tenant with a library
        tenant = make_tenant(client, db_url, "ACME@AdobeOrg", "prod")
        library(tenant)
    assert rebuilds_after_start(tmp_path, warm=True) == 1
    assert rebuilds_after_start(tmp_path, warm=False) == 0


class CountingStdout(io.StringIO):
    """An unbuffered stdout (as ``PYTHONUNBUFFERED=1`` makes it): each ``write`` a syscall."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def test_access_lines_wait_in_the_log_and_go_out_in_few_writes(monkeypatch):
    stdout = CountingStdout()
    monkeypatch.setattr("sys.stdout", stdout)
    monkeypatch.setattr(access_log, "FLUSH_SECONDS", 3600.0)  # a slow machine's second
    log = AccessLog()
    for n in range(100):
        log.write("GET", "/healthz", "/healthz", 200, 0.001, f"req-{n}")
    assert stdout.writes == []  # an unbuffered stream would have taken 100
    log.flush()
    size = len(stdout.getvalue().encode())
    assert len(stdout.writes) == -(-size // WRITE_BYTES)  # as few as whole lines allow
    lines = [orjson.loads(line) for line in stdout.getvalue().splitlines()]
    assert [line["request_id"] for line in lines] == [f"req-{n}" for n in range(100)]
    written = len(stdout.writes)
    log.flush()
    assert len(stdout.writes) == written  # nothing waits: nothing written


def test_access_lines_go_out_when_the_buffer_is_full(monkeypatch):
    stdout = CountingStdout()
    monkeypatch.setattr("sys.stdout", stdout)
    monkeypatch.setattr(access_log, "FLUSH_SECONDS", 3600.0)  # only the size can flush
    log = AccessLog()
    long_path = "/p" * 500  # each line over 1,000 bytes
    n = 0
    while not stdout.writes and n < 1000:
        log.write("GET", "<unmatched>", long_path, 404, 0.001, f"req-{n}")
        n += 1
    lines = stdout.getvalue().encode().splitlines(keepends=True)
    assert len(lines) == n  # every line so far, none held back
    # Written by the line that filled the buffer, not later.
    assert len(b"".join(lines[:-1])) < FLUSH_CHARS <= len(b"".join(lines))


def test_access_lines_are_written_whole_in_writes_a_pipe_keeps_whole(monkeypatch):
    """Workers share stdout: a pipe write over PIPE_BUF can be split and interleaved with
    another worker's (seen: 248 of 6,001 lines cut in two, 2 workers, a slow reader)."""
    stdout = CountingStdout()
    monkeypatch.setattr("sys.stdout", stdout)
    monkeypatch.setattr(access_log, "FLUSH_SECONDS", 3600.0)
    log = AccessLog()
    paths = ["/short", "/p" * 100_000, "/\x01" * 5_000, "/é€𝄞" * 3_000, "/short"]
    for n, path in enumerate(paths * 20):
        log.write("GET", "<unmatched>", path, 404, 0.001, f"req-{n}")
    log.flush()
    assert len(stdout.writes) > 1
    for chunk in stdout.writes:
        assert len(chunk.encode()) <= WRITE_BYTES and chunk.endswith("\n")
    lines = [orjson.loads(line) for line in stdout.getvalue().splitlines()]
    assert [line["request_id"] for line in lines] == [f"req-{n}" for n in range(100)]
    assert lines[0]["path"] == "/short"
    cut = lines[1]["path"]
    assert cut.endswith("…") and len(cut) == PATH_CHARS + 1 and cut.startswith("/p/p")
    assert lines[2]["path"].endswith("…") and lines[3]["path"].endswith("…")


def test_a_method_no_route_knows_is_counted_as_other_not_by_its_name(observed):
    client, _ = observed
    for invented in ("FOO1", "FOO2", "BREW"):  # granian hands the app any method
        assert client.request(invented, "/healthz").status_code == 405
    found = samples(client)
    assert (
        value(
            found, "nextoffer_http_requests_total", method="<other>", route="/healthz", status="405"
        )
        == 3
    )
    assert not any(dict(labels).get("method", "").startswith("FOO") for _, labels in found)


def test_mounted_routes_are_counted_with_their_mount_prefix(observed):
    client, _ = observed
    assert client.get("/console/login").status_code == 200
    client.get("/console/static/no-such-file.css")
    found = samples(client)
    assert (
        value(
            found,
            "nextoffer_http_requests_total",
            method="GET",
            route="/console/login",
            status="200",
        )
        == 1
    )
    routes = {dict(labels).get("route") for _, labels in found}
    assert "/console/static" in routes
    assert "/login" not in routes and "/static" not in routes


def test_counts_still_waiting_are_written_when_the_app_stops(tmp_path):
    """A worker stopped by SIGTERM (uvicorn restarts it; SIGHUP restarts all) kept up to a
    second of counts in its buffer: with workers, the others went on reporting without."""
    client, _ = app_client(tmp_path)
    with client:
        for _ in range(5):
            assert client.get("/healthz").status_code == 200
    metrics = client.app.state.metrics
    written = {  # what prometheus-client holds, without the flush a scrape makes
        (s.name, s.labels.get("route")): s.value
        for f in text_string_to_metric_families(generate_latest(metrics.registry).decode())
        for s in f.samples
    }
    assert written[("nextoffer_http_requests_total", "/healthz")] == 5


def run_cancelled(path: str, *, start_first: bool = False) -> tuple[list[dict], bool]:
    """A request to ``Observe`` whose app waits forever, cancelled as uvicorn cancels the
    requests still running when its graceful shutdown times out: the messages sent, and
    whether the cancellation came out of the app."""
    sent: list[dict] = []

    async def waits_forever(scope, receive, send):
        if start_first:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.Event().wait()

    async def receive():
        await asyncio.Event().wait()

    async def send(message):
        sent.append(message)

    observe = Observe(waits_forever, metrics=Metrics(), access_log=None)
    scope = {"type": "http", "method": "POST", "path": path, "headers": [], "query_string": b""}

    async def main() -> bool:
        task = asyncio.ensure_future(observe(scope, receive, send))
        await asyncio.sleep(0.01)
        task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
        try:
            await task
        except asyncio.CancelledError:
            return True
        return False

    return sent, asyncio.run(main())


def test_a_request_cancelled_at_shutdown_is_answered_503_not_a_traceback_and_500():
    """uvicorn cancels what still runs NEXTOFFER_SHUTDOWN_TIMEOUT after SIGTERM; the
    cancellation reached it: "Exception in ASGI application", a traceback, a bare 500."""
    sent, raised = run_cancelled("/data/core/ode/c/decisions")
    assert not raised
    start, body = sent
    headers = dict(start["headers"])
    assert start["status"] == 503 and headers[b"retry-after"] == b"1"
    assert headers[b"content-type"] == b"application/problem+json"
    assert headers[b"connection"] == b"close" and b"x-request-id" in headers
    assert orjson.loads(body["body"])["detail"] == "the server is stopping; retry the request"
    edge, raised = run_cancelled("/ee/v2/interact")  # the Edge Network's error shape
    assert not raised and edge[0]["status"] == 503
    assert orjson.loads(edge[1]["body"])["type"].endswith("/problems/edge/unavailable")
    # A response already started cannot be replaced: the cancellation goes on.
    started, raised = run_cancelled("/data/core/ode/c/decisions", start_first=True)
    assert raised and [m["status"] for m in started] == [200]
