"""The decision path through the store's sessions (PostgreSQL): a write transaction per
record, reads in a read transaction each (``decision_path.py`` says why per backend)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from nextoffer.errors import NextOfferError
from nextoffer.repository.records import InstanceRecord
from nextoffer.storage.counters import CounterKey, SqlCounters
from nextoffer.storage.decision_path import DecisionRecord
from nextoffer.storage.session import Session
from nextoffer.storage.store import Store


def write_record(session: Session, record: DecisionRecord) -> None:
    """The decision event and its report increments, in the caller's transaction."""
    runtime = session.runtime
    runtime.insert_decision_event(
        record.proposition_id,
        record.container_id,
        created=record.created,
        created_us=record.created_us,
        profile_key=record.profile_key,
        body=record.body,
    )
    for offer_id in record.proposed_offers:
        runtime.add_daily(record.container_id, record.day, offer_id, propositions=1)


class SessionPath:
    """Through the store's sessions; a write transaction per record."""

    #: Every call is a database round trip.
    inline = False

    def __init__(self, store: Store) -> None:
        self._store = store
        self._counters = SqlCounters(store)

    def profile(
        self, org: str, sandbox: str, namespace: str, identity: str
    ) -> tuple[str, dict[str, Any]] | None:
        with self._store.session() as session:
            return session.runtime.profile_by_identity(org, sandbox, namespace, identity)

    def events(self, profile_id: str, *, limit: int) -> list[dict[str, Any]]:
        with self._store.session() as session:
            return session.runtime.recent_events(profile_id, limit=limit)

    def library_version(self, container_id: str) -> int:
        with self._store.session() as session:
            return session.library_version(container_id)

    def counts(self, keys: Sequence[CounterKey]) -> dict[CounterKey, int]:
        return self._counters.read(keys)

    def instance(
        self, org: str, sandbox: str, container_id: str, instance_id: str
    ) -> tuple[bool, InstanceRecord | None]:
        with self._store.session() as session:
            if session.get_container(container_id, org_id=org, sandbox=sandbox) is None:
                return False, None
            return True, session.get_instance(container_id, instance_id)

    def record(self, record: DecisionRecord) -> Future[list[CounterKey]]:
        future: Future[list[CounterKey]] = Future()
        try:
            future.set_result(
                self._counters.reserve_then(record.reserve, lambda s: write_record(s, record))
            )
        except NextOfferError as exc:
            future.set_exception(exc)
        return future

    def close(self) -> None:
        """Nothing of its own: the store's connections."""
