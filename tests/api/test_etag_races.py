"""Etag races across processes: N concurrent writes holding the same ``If-Match``, sent to
two ``nextoffer serve`` processes on one SQLite file, give exactly one success; the rest
are 409 and change nothing."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from support.live import PATCH_TYPE, LiveServer, headers_of, make_tenant

N = 12
CREATE = (
    'application/schema-instance+json; version=1; schema="https://ns.adobe.com/experience/'
    'offer-management/offer-placement;version=0.4"'
)
PLACEMENT = {
    "xdm:name": "raced",
    "xdm:channel": "https://ns.adobe.com/xdm/channel-types/web",
    "xdm:componentType": "https://ns.adobe.com/experience/offer-management/content-component-html",
}


@pytest.fixture(scope="module")
def two_servers(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("races")
    db_url = f"sqlite:///{workdir / 'races.db'}"
    creds, _ = make_tenant(db_url, "RACE@AdobeOrg", "prod")
    servers = [LiveServer(db_url, workdir=workdir).start() for _ in range(2)]
    try:
        yield servers, creds
    finally:
        for server in servers:
            server.stop()


def race(servers, creds, send):
    """``send(client, i)`` from N threads at once, alternating servers; the statuses."""
    barrier = threading.Barrier(N)
    statuses: list[int] = [0] * N
    clients = [
        httpx.Client(base_url=s.base, headers=headers_of(creds), timeout=30) for s in servers
    ]

    def one(i):
        client = clients[i % len(clients)]
        barrier.wait()
        statuses[i] = send(client, i).status_code

    threads = [threading.Thread(target=one, args=(i,)) for i in range(N)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for client in clients:
        client.close()
    return sorted(statuses)


def test_concurrent_patches_with_the_same_if_match_have_one_winner(two_servers):
    servers, creds = two_servers
    base = f"/data/core/xcore/{creds.container_id}/instances"
    with httpx.Client(base_url=servers[0].base, headers=headers_of(creds)) as client:
        created = client.post(
            base, content=json.dumps(PLACEMENT), headers={"Content-Type": CREATE}
        ).json()
    path = f"{base}/{created['instanceId']}"
    for etag in (1, 2, 3):

        def send(client, i, etag=etag):
            ops = [{"op": "replace", "path": "/_instance/xdm:name", "value": f"writer {i}"}]
            return client.patch(
                path,
                content=json.dumps(ops),
                headers={"Content-Type": PATCH_TYPE, "If-Match": f'"{etag}"'},
            )

        assert race(servers, creds, send) == [200] + [409] * (N - 1)
        with httpx.Client(base_url=servers[1].base, headers=headers_of(creds)) as client:
            assert client.get(path).json()["repo:etag"] == etag + 1


def test_concurrent_puts_and_deletes_with_the_same_if_match_have_one_winner(two_servers):
    servers, creds = two_servers
    base = f"/data/core/xcore/{creds.container_id}/instances"
    with httpx.Client(base_url=servers[0].base, headers=headers_of(creds)) as client:
        created = client.post(
            base, content=json.dumps(PLACEMENT), headers={"Content-Type": CREATE}
        ).json()
    path = f"{base}/{created['instanceId']}"

    def put(client, i):
        return client.put(
            path,
            content=json.dumps({**PLACEMENT, "xdm:name": f"put {i}"}),
            headers={"Content-Type": CREATE, "If-Match": '"1"'},
        )

    assert race(servers, creds, put) == [200] + [409] * (N - 1)

    def delete(client, i):
        return client.delete(path, headers={"If-Match": '"2"'})

    statuses = race(servers, creds, delete)
    # One delete wins; the others find a stale etag or, once it is gone, nothing.
    assert statuses.count(202) == 1 and all(s in (404, 409) for s in statuses if s != 202), statuses
