"""Profiles, scoped to an org and sandbox.

Adobe reads profiles from its profile service; nextoffer keeps its own. A profile has one
or more identities (namespace + id) and a JSON object of attributes (``segmentMembership``
included). Experience events live in ``events.py``.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from nextoffer.errors import BadRequest, Conflict, NextOfferError, NotFound, Unprocessable
from nextoffer.ids import format_datetime
from nextoffer.service.auth import Principal
from nextoffer.service.identities import parse_identity_map
from nextoffer.storage.locks import Lock
from nextoffer.storage.runtime import ProfileRecord, Runtime
from nextoffer.storage.session import Session

#: ``ProfileRecord`` is what these use cases answer with (routes take it from here).
__all__ = ["ProfileRecord", "Profiles", "profile_key", "resolve_profile_id"]
from nextoffer.storage.store import Store


def resolve_profile_id(
    runtime: Runtime, principal: Principal, identities: list[tuple[str, str]], *, lock: Lock = None
) -> str | None:
    """The one profile the identities name; 409 when they name two different profiles.
    A write that adds to it passes ``lock="key share"`` (``Runtime.find_profile_id``)."""
    org, sandbox = principal.org, principal.sandbox
    found = {
        pid
        for ns, identity in identities
        if (pid := runtime.find_profile_id(org, sandbox, ns, identity, lock=lock)) is not None
    }
    if len(found) > 1:
        raise Conflict("the identities name more than one profile; send identities of one profile")
    return found.pop() if found else None


def _parsed(body: Any) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object with identityMap and profile", pointer="/")
    identities = parse_identity_map(body.get("identityMap"), pointer="/identityMap")
    attributes = body.get("profile", {})
    if not isinstance(attributes, dict):
        raise Unprocessable("profile must be a JSON object of attributes", pointer="/profile")
    return identities, attributes


#: One parsed body: identities and attributes, or the error that refused it.
_Parsed = tuple[list[tuple[str, str]], dict[str, Any]] | NextOfferError


def _write_many(
    runtime: Runtime, principal: Principal, parsed: list[_Parsed], stamp: str
) -> list[tuple[str, bool] | NextOfferError]:
    """Upsert parsed bodies in the caller's transaction, in order, as if one by one: per
    body its profile id and whether it is new, or its error (nothing of it written). The
    identities are read in one statement per namespace and the rows written with one
    ``executemany`` per table."""
    wanted = [i for p in parsed if not isinstance(p, NextOfferError) for i in p[0]]
    known = runtime.find_profile_ids(principal.org, principal.sandbox, wanted, lock="no key update")
    new: dict[str, dict[str, Any]] = {}
    changed: dict[str, dict[str, Any]] = {}
    identity_rows: list[tuple[str, str, str]] = []
    out: list[tuple[str, bool] | NextOfferError] = []
    for item in parsed:
        if isinstance(item, NextOfferError):
            out.append(item)
            continue
        identities, attributes = item
        found = {known[i] for i in identities if i in known}
        if len(found) > 1:
            out.append(
                Conflict(
                    "the identities name more than one profile; send identities of one profile"
                )
            )
            continue
        profile_id = found.pop() if found else None
        created = profile_id is None
        if profile_id is None:
            profile_id = str(uuid.uuid4())
            new[profile_id] = attributes
        elif profile_id in new:  # created earlier in this same batch
            new[profile_id] = attributes
        else:
            changed[profile_id] = attributes
        for identity in identities:
            if identity not in known:
                known[identity] = profile_id
                identity_rows.append((*identity, profile_id))
        out.append((profile_id, created))
    runtime.insert_profiles(principal.org, principal.sandbox, list(new.items()), now=stamp)
    runtime.update_profiles(list(changed.items()), now=stamp)
    runtime.add_identity_rows(principal.org, principal.sandbox, identity_rows)
    return out


def _parse(body: Any) -> _Parsed:
    try:
        return _parsed(body)
    except (BadRequest, Unprocessable) as exc:
        return exc


#: The longest identity counter scope kept as text; a longer one is named by its digest.
MAX_SCOPE_TEXT = 256


def profile_key(profile_id: str | None, identities: Sequence[tuple[str, str]]) -> str:
    """The counter scope of one profile: its id, or its first identity when unknown.

    An identity's scope is ``identity:<namespace>:<id>``; past :data:`MAX_SCOPE_TEXT`
    characters (a namespace may take 255 and an id 1,024) it is ``identity#`` and the
    SHA-256 of the two instead, so counter keys and decision events hold it within their
    columns' bounds and PostgreSQL's index entry size on every backend alike. ``#`` never
    follows ``identity`` in the text form, so the two forms cannot meet. A namespace with
    a ``:`` of its own is named by the digest too: in the text form, namespace ``a:b`` with
    id ``c`` would read as namespace ``a`` with id ``b:c``, another visitor."""
    if profile_id is not None:
        return profile_id
    if not identities:
        return "anonymous"
    namespace, identity = identities[0]
    key = f"identity:{namespace}:{identity}"
    if len(key) <= MAX_SCOPE_TEXT and ":" not in namespace:
        return key
    digest = hashlib.sha256(
        f"{namespace}\x00{identity}".encode("utf-8", "surrogatepass")
    ).hexdigest()
    return f"identity#{digest}"


class Profiles:
    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], datetime],
        on_change: Callable[[Iterable[str]], None] | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        #: Told the profiles each write changed, after its commit (the profile cache
        #: drops them: read-your-writes in this process).
        self._on_change = on_change

    def upsert(self, principal: Principal, body: Any) -> tuple[ProfileRecord, bool]:
        """Create or update the profile any of the identities names; True when created.

        The body's ``profile`` object replaces the stored attributes; identities are added.
        """
        parsed = _parsed(body)
        stamp = format_datetime(self._clock())

        def write(session: Session) -> tuple[ProfileRecord, bool]:
            (outcome,) = _write_many(session.runtime, principal, [parsed], stamp)
            if isinstance(outcome, NextOfferError):
                raise outcome
            profile_id, created = outcome
            record = session.runtime.get_profile(profile_id)
            assert record is not None  # written in the same transaction
            return record, created

        record, created = self._store.write(write)
        self._changed([record.profile_id])
        return record, created

    def upsert_many(self, principal: Principal, bodies: list[Any]) -> list[NextOfferError | None]:
        """:meth:`upsert` for many bodies in one transaction (the bulk loader): per body,
        ``None`` when written, or the error that refused it (nothing of it written)."""
        stamp = format_datetime(self._clock())
        parsed = [_parse(body) for body in bodies]
        outcomes = self._store.write(
            lambda session: _write_many(session.runtime, principal, parsed, stamp)
        )
        self._changed(o[0] for o in outcomes if not isinstance(o, NextOfferError))
        return [o if isinstance(o, NextOfferError) else None for o in outcomes]

    def get(self, principal: Principal, namespace: str, identity: str) -> ProfileRecord:
        with self._store.session() as session:
            record = self._find(session.runtime, principal, namespace, identity)
        return record

    def delete(self, principal: Principal, namespace: str, identity: str) -> ProfileRecord:
        """Delete a profile: its attributes, identities and experience events now, and the
        decision events and cap counters recorded for it — under its id, or under one of
        its identities before it had a profile — by the servers' next passes
        (``service/retention.py``)."""
        with self._store.session(write=True) as session:
            record = self._find(session.runtime, principal, namespace, identity, lock="update")
            session.runtime.delete_profile(record.profile_id)
            keys = [profile_key(None, [named]) for named in record.identities]
            session.erasures.request(
                principal.org,
                principal.sandbox,
                [record.profile_id, *keys],
                now=format_datetime(self._clock()),
            )
        self._changed([record.profile_id])
        return record

    def _changed(self, profile_ids: Iterable[str]) -> None:
        if self._on_change is not None:
            self._on_change(profile_ids)

    @staticmethod
    def _find(
        runtime: Runtime, principal: Principal, namespace: str, identity: str, *, lock: Lock = None
    ) -> ProfileRecord:
        profile_id = runtime.find_profile_id(
            principal.org, principal.sandbox, namespace, identity, lock=lock
        )
        record = runtime.get_profile(profile_id) if profile_id else None
        if record is None:
            raise NotFound(f"no profile with identity {namespace}:{identity}")
        return record
