"""Organisations, sandboxes, containers, API clients and tokens: setting tenants up."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from nextoffer.errors import Conflict, NotFound
from nextoffer.ids import format_datetime, new_secret, parse_datetime
from nextoffer.repository.records import Audit, ContainerRecord
from nextoffer.service import tokens
from nextoffer.service.auth import Principal
from nextoffer.service.datastreams import DEFAULT_RATE_LIMIT
from nextoffer.storage.session import ClientRecord, DatastreamRecord, Session
from nextoffer.storage.store import Store

DEFAULT_TOKEN_TTL = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class Credentials:
    org: str
    sandbox: str
    container_id: str
    api_key: str
    access_token: str
    user: str
    #: The container's datastream: the key of the Edge endpoints (``service/datastreams``).
    datastream_id: str = ""

    @property
    def principal(self) -> Principal:
        """The caller these credentials authenticate as."""
        return Principal(self.org, self.sandbox, self.api_key, self.user)

    def as_json(self) -> dict[str, str]:
        return {
            "org": self.org,
            "sandbox": self.sandbox,
            "containerId": self.container_id,
            "apiKey": self.api_key,
            "accessToken": self.access_token,
            "datastreamId": self.datastream_id,
        }


def default_client_id(org: str) -> str:
    return "nextoffer-" + hashlib.sha256(org.encode()).hexdigest()[:12]


def bootstrap(
    store: Store,
    *,
    org: str,
    sandbox: str,
    now: datetime,
    client_id: str | None = None,
    user: str | None = None,
    ttl: timedelta = DEFAULT_TOKEN_TTL,
) -> Credentials:
    """Create (or reuse) the org, sandbox, decisioning container, client and a token."""
    client_id = client_id or default_client_id(org)
    user = user or f"admin@{org}"
    stamp = format_datetime(now)
    with store.session(write=True) as session:
        session.ensure_org(org, now=stamp)
        session.ensure_sandbox(org, sandbox, now=stamp)
        existing = [
            c
            for c in session.list_containers(org_id=org, sandbox=sandbox)
            if c.container_type == "decisioning"
        ]
        if existing:
            container = existing[0]
        else:
            container = ContainerRecord(
                container_id=str(uuid.uuid4()),
                org_id=org,
                sandbox=sandbox,
                container_type="decisioning",
                name=f"{sandbox} decisioning container",
                product_contexts=["acp"],
                etag=1,
                audit=Audit(stamp, stamp, user, user, client_id, client_id),
            )
            session.insert_container(container)
        datastream_id = _datastream(session, container.container_id, org, sandbox, stamp)
        if not session.ensure_client(client_id, org, now=stamp):
            raise Conflict(f"API client {client_id!r} belongs to another organisation")
        session.grant_sandbox(client_id, sandbox)
        client = session.get_client(client_id)
        made = client.created if client is not None else None
        keys = session.signing_keys()
        if not keys:
            kid = uuid.uuid4().hex[:16]
            secret = new_secret()
            session.add_signing_key(kid, secret, now=stamp)
        else:
            kid, secret = list(keys.items())[-1]  # the newest (``rotate_signing_key``)
    issued = int(now.timestamp())
    token = tokens.mint(
        tokens.Claims(
            user, client_id, org, issued, issued + int(ttl.total_seconds()), client_made=made
        ),
        kid=kid,
        secret=secret,
    )
    return Credentials(org, sandbox, container.container_id, client_id, token, user, datastream_id)


def _datastream(session: Session, container_id: str, org: str, sandbox: str, stamp: str) -> str:
    """The container's first datastream, created (no browser origins yet) when it has none."""
    for record in session.list_datastreams(org_id=org, sandbox=sandbox):
        if record.container_id == container_id:
            return record.datastream_id
    record = DatastreamRecord(
        datastream_id=str(uuid.uuid4()),
        org_id=org,
        sandbox=sandbox,
        container_id=container_id,
        name=f"{sandbox} datastream",
        allowed_origins=(),
        rate_limit=DEFAULT_RATE_LIMIT,
        created=stamp,
        modified=stamp,
    )
    session.put_datastream(record)
    return record.datastream_id


def clients(store: Store, *, org: str | None = None) -> list[ClientRecord]:
    """The API clients (of ``org``, or every one), by id, with their sandboxes."""
    with store.session() as session:
        return session.list_clients(org_id=org)


def revoke(store: Store, client_id: str, *, sandbox: str | None = None) -> None:
    """Take ``sandbox`` from the client, or delete the client with every grant. Each node
    refuses its tokens within ``auth.CLIENT_CACHE_SECONDS``; a client made again under
    the same id does not accept the tokens minted before (``Authenticator``)."""
    with store.session(write=True) as session:
        if sandbox is None:
            if not session.delete_client(client_id):
                raise NotFound(f"no API client {client_id!r}")
        elif not session.revoke_sandbox(client_id, sandbox):
            if session.get_client(client_id) is None:
                raise NotFound(f"no API client {client_id!r}")
            raise NotFound(f"API client {client_id!r} has no grant of sandbox {sandbox!r}")


def rotate_signing_key(store: Store, *, now: datetime) -> str:
    """Add a token signing key, which tokens minted from now on are signed with; tokens
    of the older keys stay valid until :func:`drop_old_signing_keys`. Returns its kid."""
    kid = uuid.uuid4().hex[:16]
    with store.session(write=True) as session:
        # Keys are ordered by when they were added, by each host's clock: a host whose
        # clock is behind the one that added the newest key still adds the newest.
        newest = session.newest_signing_key_time()
        if newest is not None:
            now = max(now, parse_datetime(newest) + timedelta(microseconds=1))
        session.add_signing_key(kid, new_secret(), now=format_datetime(now))
    return kid


def drop_old_signing_keys(store: Store) -> int:
    """Delete every signing key but the newest: every process refuses the tokens they
    signed within ``auth.KEY_CACHE_SECONDS``. Returns how many went."""
    with store.session(write=True) as session:
        keys = session.signing_keys()
        if not keys:
            raise NotFound("no signing key: nothing was bootstrapped")
        return session.delete_signing_keys(keep=list(keys)[-1])
