"""Datastreams (Adobe's ``configId``): the public key of the Edge Network endpoints.

A datastream names one org, sandbox and decisioning container, the browser origins that
may call the Edge endpoints with it (``allowedOrigins``, CORS with credentials) and the
requests per second it takes (``rateLimit``). The management endpoints are authenticated
and scoped like every API call; the Edge endpoints look a datastream up by its id alone
(:meth:`Datastreams.resolve`, cached) and meter it (:meth:`Datastreams.admit`): in Redis
when the deployment has one (``serve --redis``: one bucket per datastream for every
process and node), else in each process.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import struct
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import idna
from jsonpointer import escape

from nextoffer.errors import (
    BadRequest,
    NotFound,
    TooManyRequests,
    Unavailable,
    Unprocessable,
)
from nextoffer.ids import format_datetime
from nextoffer.service.auth import Principal
from nextoffer.service.repository import Repository
from nextoffer.storage.locks import Lock
from nextoffer.storage.session import DatastreamRecord, Session
from nextoffer.storage.store import Store

__all__ = ["DEFAULT_RATE_LIMIT", "DatastreamRecord", "Datastreams", "datastream_json"]

#: Requests per second a datastream takes when its ``rateLimit`` is not given.
DEFAULT_RATE_LIMIT = 2000
MAX_RATE_LIMIT = 1_000_000
MAX_ORIGINS = 100
#: The longest datastream id (a UUID's 36 characters; the column's width): a longer
#: ``configId`` names none, and is neither looked up nor remembered.
MAX_ID = 36
#: How long a resolved datastream is trusted before it is read again (other processes'
#: changes; this process's own changes apply at once).
CACHE_SECONDS = 5.0
_FIELDS = frozenset({"name", "containerId", "allowedOrigins", "rateLimit"})

log = logging.getLogger("nextoffer.edge")


class SharedRates(Protocol):
    """Token buckets every process shares (``storage.redis_rates.RedisRates``)."""

    async def take(self, name: str, rate: int) -> float:
        """``0.0`` when one request of ``rate`` a second is taken from ``name``'s bucket,
        else the seconds until one would be; :class:`Unavailable` when out of reach."""
        ...


def datastream_json(record: DatastreamRecord) -> dict[str, Any]:
    return {
        "datastreamId": record.datastream_id,
        "name": record.name,
        "containerId": record.container_id,
        "allowedOrigins": list(record.allowed_origins),
        "rateLimit": record.rate_limit,
        "sandboxName": record.sandbox,
        "createdDate": record.created,
        "lastModifiedDate": record.modified,
    }


#: The port a browser leaves out of ``Origin`` for each scheme (RFC 6454, section 6.2).
_DEFAULT_PORTS = {"http": 80, "https": 443}


#: Characters no host in an ``Origin`` header holds (the URL standard's forbidden domain
#: code points); ``*`` too: a wildcard would match no origin, so it is refused, not kept.
_FORBIDDEN_HOST = frozenset(" #%/:<>?@[\\]^|*\x7f") | frozenset(map(chr, range(0x20)))


def _quoted(value: str) -> str:
    """A refused value as the JSON it was sent in (as validation messages quote it)."""
    return json.dumps(value, ensure_ascii=False)


def _origin(value: Any, pointer: str) -> str:
    """``scheme://host[:port]`` as a browser sends it in ``Origin`` (RFC 6454, section
    6.2, with the URL standard's host serializer): scheme and host lower-cased, a host
    name outside ASCII in its IDNA form (UTS #46), an IPv6 address in brackets as the URL
    standard writes it, and no port where it is the scheme's default. Compared as text
    with the header, so a host no browser could send (a wildcard, a ``%`` escape) is
    refused rather than stored to match nothing."""
    if not isinstance(value, str) or not value:
        raise Unprocessable(
            "an origin is a string such as https://www.example.com", pointer=pointer
        )
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError as exc:  # an unclosed ``[``, a port out of range
        detail = f"{_quoted(value)} has an invalid host or port"
        raise Unprocessable(detail, pointer=pointer) from exc
    if (
        parts.scheme not in _DEFAULT_PORTS
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username is not None
    ):
        raise Unprocessable(
            f"{_quoted(value)} is not an origin (scheme://host[:port], no path)", pointer=pointer
        )
    host = _host(parts.hostname, bracketed="[" in parts.netloc, value=value, pointer=pointer)
    if port is not None and port != _DEFAULT_PORTS[parts.scheme]:
        host = f"{host}:{port}"
    return f"{parts.scheme}://{host}"


def _host(name: str, *, bracketed: bool, value: str, pointer: str) -> str:
    """The host as ``Origin`` writes it (``name`` is lower-cased by ``urlsplit``)."""
    if bracketed:
        return _ipv6(name, value=value, pointer=pointer)
    if "*" in name:
        raise Unprocessable(
            f"{_quoted(value)}: wildcards are not supported; list each origin", pointer=pointer
        )
    if any(c in _FORBIDDEN_HOST for c in name):
        raise Unprocessable(f"{_quoted(value)} has an invalid host name", pointer=pointer)
    if name.isascii():
        return name
    try:
        return idna.encode(name, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise Unprocessable(f"{_quoted(value)} has an invalid host name", pointer=pointer) from exc


def _ipv6(name: str, *, value: str, pointer: str) -> str:
    """``[address]`` as the URL standard serializes it: lower-case hex without leading
    zeros, the first longest run of two or more zero pieces as ``::`` (written by hand:
    Python's own form of an IPv4-mapped address differs between versions)."""
    try:
        if "%" in name:  # a zone id: no browser sends one
            raise ValueError(name)
        pieces = struct.unpack("!8H", ipaddress.IPv6Address(name).packed)
    except ValueError as exc:
        detail = f"{_quoted(value)} has an invalid IPv6 address"
        raise Unprocessable(detail, pointer=pointer) from exc
    start, length = -1, 1
    index = 0
    while index < 8:
        end = index
        while end < 8 and pieces[end] == 0:
            end += 1
        if end - index > length:
            start, length = index, end - index
        index = max(end, index + 1)
    hexes = [f"{piece:x}" for piece in pieces]
    if start < 0:
        return f"[{':'.join(hexes)}]"
    return f"[{':'.join(hexes[:start])}::{':'.join(hexes[start + length :])}]"


def _origins(value: Any) -> tuple[str, ...]:
    pointer = "/allowedOrigins"
    if not isinstance(value, list):
        raise Unprocessable("allowedOrigins must be an array of origins", pointer=pointer)
    if len(value) > MAX_ORIGINS:
        raise Unprocessable(f"at most {MAX_ORIGINS} origins", pointer=pointer)
    return tuple(
        dict.fromkeys(_origin(item, f"{pointer}/{index}") for index, item in enumerate(value))
    )


def _rate(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_RATE_LIMIT:
        raise Unprocessable(
            f"rateLimit must be an integer from 1 to {MAX_RATE_LIMIT} (requests per second)",
            pointer="/rateLimit",
        )
    return value


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 255:
        raise Unprocessable("name must be a string of 1 to 255 characters", pointer="/name")
    return value


class _Bucket:
    """A token bucket: ``rate`` tokens a second, at most one second's worth saved."""

    __slots__ = ("stamp", "tokens")

    def __init__(self, rate: int, now: float) -> None:
        self.tokens = float(rate)
        self.stamp = now


class Datastreams:
    def __init__(
        self,
        store: Store,
        *,
        repository: Repository,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float] = time.monotonic,
        shared: SharedRates | None = None,
    ) -> None:
        """``shared`` meters every process's requests together; without it (or while it
        is out of reach) each process keeps its own buckets."""
        self._store = store
        self._repository = repository
        self._clock = clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, DatastreamRecord | None]] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._shared = shared
        self._shared_lost = False

    # -- management (authenticated) ----------------------------------------------------

    def create(self, principal: Principal, body: Any) -> DatastreamRecord:
        fields = self._fields(body)
        stamp = format_datetime(self._clock())
        with self._store.session(write=True) as session:
            container_id = fields.get("containerId")
            if container_id is None:
                container_id = self._default_container(session, principal)
            else:
                self._repository.container(session, principal, container_id)
            record = DatastreamRecord(
                datastream_id=str(uuid.uuid4()),
                org_id=principal.org,
                sandbox=principal.sandbox,
                container_id=container_id,
                name=fields.get("name", "datastream"),
                allowed_origins=fields.get("allowedOrigins", ()),
                rate_limit=fields.get("rateLimit", DEFAULT_RATE_LIMIT),
                created=stamp,
                modified=stamp,
            )
            session.put_datastream(record)
        self._forget(record.datastream_id)
        return record

    def of_tenant(self, principal: Principal) -> list[DatastreamRecord]:
        with self._store.session() as session:
            return session.list_datastreams(org_id=principal.org, sandbox=principal.sandbox)

    def get(self, principal: Principal, datastream_id: str) -> DatastreamRecord:
        with self._store.session() as session:
            return self._owned(session, principal, datastream_id)

    def update(self, principal: Principal, datastream_id: str, body: Any) -> DatastreamRecord:
        """Replace the fields the body names (a JSON merge patch of the four fields)."""
        fields = self._fields(body)
        with self._store.session(write=True) as session:
            record = self._owned(session, principal, datastream_id, lock="no key update")
            if "containerId" in fields:
                self._repository.container(session, principal, fields["containerId"])
            record = DatastreamRecord(
                datastream_id=record.datastream_id,
                org_id=record.org_id,
                sandbox=record.sandbox,
                container_id=fields.get("containerId", record.container_id),
                name=fields.get("name", record.name),
                allowed_origins=fields.get("allowedOrigins", record.allowed_origins),
                rate_limit=fields.get("rateLimit", record.rate_limit),
                created=record.created,
                modified=format_datetime(self._clock()),
            )
            session.put_datastream(record)
        self._forget(record.datastream_id)
        return record

    def delete(self, principal: Principal, datastream_id: str) -> None:
        with self._store.session(write=True) as session:
            record = self._owned(session, principal, datastream_id, lock="update")
            session.delete_datastream(record.datastream_id)
        self._forget(record.datastream_id)

    @staticmethod
    def _owned(
        session: Session, principal: Principal, datastream_id: str, *, lock: Lock = None
    ) -> DatastreamRecord:
        """The tenant's datastream (404 for another's), its id in any case (a UUID, minted
        lower-case, as the Edge endpoints match it). An update or a delete holds it
        (``lock``) so that a concurrent one neither brings it back nor loses a field."""
        record = session.get_datastream(datastream_id.lower(), lock=lock)
        if record is None or (record.org_id, record.sandbox) != (principal.org, principal.sandbox):
            raise NotFound(f"datastream {datastream_id} does not exist")
        return record

    @staticmethod
    def _default_container(session: Session, principal: Principal) -> str:
        for container in session.list_containers(org_id=principal.org, sandbox=principal.sandbox):
            if container.container_type == "decisioning":
                return container.container_id
        raise Unprocessable(
            "the sandbox has no decisioning container; name one in containerId",
            pointer="/containerId",
        )

    @staticmethod
    def _fields(body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object", pointer="/")
        unknown = sorted(set(body) - _FIELDS)
        if unknown:
            raise Unprocessable(
                f"unknown member {_quoted(unknown[0])}; a datastream has"
                f" {json.dumps(sorted(_FIELDS))}",
                pointer=f"/{escape(unknown[0])}",
            )
        fields: dict[str, Any] = {}
        if "name" in body:
            fields["name"] = _name(body["name"])
        if "containerId" in body:
            if not isinstance(body["containerId"], str) or not body["containerId"]:
                raise Unprocessable("containerId must be a container id", pointer="/containerId")
            fields["containerId"] = body["containerId"]
        if "allowedOrigins" in body:
            fields["allowedOrigins"] = _origins(body["allowedOrigins"])
        if "rateLimit" in body:
            fields["rateLimit"] = _rate(body["rateLimit"])
        return fields

    # -- the Edge endpoints (public) ----------------------------------------------------

    def resolve(self, datastream_id: str) -> DatastreamRecord:
        """The datastream the id names, for anyone who knows the id; 404 otherwise. Misses
        are remembered too (a flood of unknown ids reads the database once a period each),
        so an id longer than any datastream's is refused first: the public could otherwise
        fill the cache with 10,000 ids as long as a URL holds. While the database is out
        of reach, the last answer read stands (decisions go on, as the Decisioning API's
        do: docs/deploy.md)."""
        if len(datastream_id) > MAX_ID:
            raise NotFound(f"datastream {datastream_id[:MAX_ID]}… does not exist")
        now = self._monotonic()
        cached = self._cache.get(datastream_id)
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            record = cached[1]
        else:
            try:
                with self._store.session() as session:
                    record = session.get_datastream(datastream_id)
            except Unavailable:
                if cached is None:
                    raise
                record = cached[1]  # the database is gone for now: the last answer stands
            else:
                with self._lock:
                    if len(self._cache) > 10_000:
                        self._cache.clear()
                    self._cache[datastream_id] = (now, record)
        if record is None:
            raise NotFound(f"datastream {datastream_id} does not exist")
        return record

    def cached(self, datastream_id: str) -> DatastreamRecord | None:
        """The datastream when :meth:`resolve` would answer without IO, else ``None``."""
        cached = self._cache.get(datastream_id)
        if cached is None or cached[1] is None or self._monotonic() - cached[0] >= CACHE_SECONDS:
            return None
        return cached[1]

    async def admit(self, record: DatastreamRecord) -> None:
        """Take one request from the datastream's rate; 429 when none is left. The rate is
        every process's together when they share a rate store; while it is out of reach,
        each process meters its own requests (a limit still holds, times the processes)."""
        rate = record.rate_limit
        shared = self._shared
        if shared is None:
            wait = self._take_here(record.datastream_id, rate)
        else:
            try:
                wait = await shared.take(record.datastream_id, rate)
                if self._shared_lost:
                    self._shared_lost = False
                    log.warning("the shared rate store is back: datastreams metered together")
            except Unavailable as exc:
                if not self._shared_lost:
                    self._shared_lost = True
                    log.error("%s; datastreams metered per process meanwhile", exc)
                wait = self._take_here(record.datastream_id, rate)
        if wait > 0:
            raise TooManyRequests(
                f"datastream {record.datastream_id} takes {rate} requests per second; retry later",
                retry_after=max(1, int(wait + 0.999)),
            )

    def _take_here(self, datastream_id: str, rate: int) -> float:
        """This process's bucket: ``0.0`` when a token was taken, else the seconds to wait."""
        now = self._monotonic()
        with self._lock:
            bucket = self._buckets.get(datastream_id)
            if bucket is None:
                bucket = self._buckets[datastream_id] = _Bucket(rate, now)
            bucket.tokens = min(float(rate), bucket.tokens + (now - bucket.stamp) * rate)
            bucket.stamp = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / rate

    def _forget(self, datastream_id: str) -> None:
        with self._lock:
            self._cache.pop(datastream_id, None)
            self._buckets.pop(datastream_id, None)
