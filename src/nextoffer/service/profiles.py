"""Profiles, scoped to an org and sandbox.

Adobe reads profiles from its profile service; nextoffer keeps its own. A profile has one
or more identities (namespace + id) and a JSON object of attributes (``segmentMembership``
included). Experience events live in ``events.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from nextoffer.errors import BadRequest, Conflict, NextOfferError, NotFound, Unprocessable
from nextoffer.ids import format_datetime
from nextoffer.service.auth import Principal
from nextoffer.service.identities import parse_identity_map
from nextoffer.storage.runtime import ProfileRecord, Runtime

#: ``ProfileRecord`` is what these use cases answer with (routes take it from here).
__all__ = ["ProfileRecord", "Profiles", "resolve_profile_id"]
from nextoffer.storage.store import Store


def resolve_profile_id(
    runtime: Runtime, principal: Principal, identities: list[tuple[str, str]]
) -> str | None:
    """The one profile the identities name; 409 when they name two different profiles."""
    found = {
        pid
        for ns, identity in identities
        if (pid := runtime.find_profile_id(principal.org, principal.sandbox, ns, identity))
        is not None
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


def _write(
    runtime: Runtime,
    principal: Principal,
    identities: list[tuple[str, str]],
    attributes: dict[str, Any],
    stamp: str,
) -> tuple[str, bool]:
    """Upsert one parsed profile in the caller's transaction: its id, and whether new."""
    profile_id = resolve_profile_id(runtime, principal, identities)
    created = profile_id is None
    if profile_id is None:
        profile_id = str(uuid.uuid4())
        runtime.insert_profile(principal.org, principal.sandbox, profile_id, attributes, now=stamp)
    else:
        runtime.update_profile(profile_id, attributes, now=stamp)
    runtime.add_identities(principal.org, principal.sandbox, profile_id, identities)
    return profile_id, created


class Profiles:
    def __init__(self, store: Store, *, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._clock = clock

    def upsert(self, principal: Principal, body: Any) -> tuple[ProfileRecord, bool]:
        """Create or update the profile any of the identities names; True when created.

        The body's ``profile`` object replaces the stored attributes; identities are added.
        """
        identities, attributes = _parsed(body)
        stamp = format_datetime(self._clock())
        with self._store.session(write=True) as session:
            profile_id, created = _write(session.runtime, principal, identities, attributes, stamp)
            record = session.runtime.get_profile(profile_id)
        assert record is not None  # written in the same transaction
        return record, created

    def upsert_many(self, principal: Principal, bodies: list[Any]) -> list[NextOfferError | None]:
        """:meth:`upsert` for many bodies in one transaction (the bulk loader): per body,
        ``None`` when written, or the error that refused it (nothing of it written)."""
        stamp = format_datetime(self._clock())
        outcomes: list[NextOfferError | None] = []
        with self._store.session(write=True) as session:
            for body in bodies:
                try:
                    identities, attributes = _parsed(body)
                    _write(session.runtime, principal, identities, attributes, stamp)
                except (BadRequest, Unprocessable, Conflict) as exc:
                    outcomes.append(exc)  # refused before any write of this body
                    continue
                outcomes.append(None)
        return outcomes

    def get(self, principal: Principal, namespace: str, identity: str) -> ProfileRecord:
        with self._store.session() as session:
            record = self._find(session.runtime, principal, namespace, identity)
        return record

    def delete(self, principal: Principal, namespace: str, identity: str) -> ProfileRecord:
        with self._store.session(write=True) as session:
            record = self._find(session.runtime, principal, namespace, identity)
            session.runtime.delete_profile(record.profile_id)
        return record

    @staticmethod
    def _find(
        runtime: Runtime, principal: Principal, namespace: str, identity: str
    ) -> ProfileRecord:
        profile_id = runtime.find_profile_id(principal.org, principal.sandbox, namespace, identity)
        record = runtime.get_profile(profile_id) if profile_id else None
        if record is None:
            raise NotFound(f"no profile with identity {namespace}:{identity}")
        return record
