"""The decision-path contract (``storage/decision_path.py``): one suite every implementation
passes. Subclass it and give a ``path`` fixture: ``(store, path)`` on a fresh, empty,
migrated database per test, the path reading and writing that store."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from nextoffer.errors import Conflict
from nextoffer.storage.counters import CounterKey, SqlCounters
from nextoffer.storage.decision_path import DecisionPath, DecisionRecord
from nextoffer.storage.sqlite_path import SqlitePath
from nextoffer.storage.store import Store
from support.store_contract import container, instance

CONTAINER = "c-1"
DAY = "2026-03-04"
NOW = "2026-03-04T10:00:00.000Z"
#: Counter keys in ``encode()`` order: ``Z`` < ``A`` < ``B``.
Z = CounterKey(CONTAINER, "xcore:offer:0", "globalCap")
A = CounterKey(CONTAINER, "xcore:offer:1", "globalCap")
B = CounterKey(CONTAINER, "xcore:offer:2", "globalCap")

Opened = tuple[Store, DecisionPath]


def record(
    proposition_id: str | None = None,
    *,
    offers: Sequence[str] = ("o-1",),
    reserve: Sequence[tuple[CounterKey, int]] = (),
    created_us: int = 1_772_618_400_000_000,
    container_id: str = CONTAINER,
    note: str = "",
) -> DecisionRecord:
    """A decision record; its body names its proposition id (and ``note``)."""
    proposition_id = proposition_id or str(uuid.uuid4())
    return DecisionRecord(
        proposition_id=proposition_id,
        container_id=container_id,
        created=NOW,
        created_us=created_us,
        profile_key="p-1",
        body={"propositionId": proposition_id, "note": note},
        day=DAY,
        proposed_offers=list(offers),
        reserve=list(reserve),
    )


def stored(store: Store, proposition_id: str) -> dict[str, Any] | None:
    """The stored body of a decision event, or None."""
    with store.session() as session:
        found = session.runtime.decision_event_anywhere(proposition_id)
    if found is None:
        return None
    container_id, body = found
    assert container_id == CONTAINER
    return body


def events_of(store: Store, container_id: str = CONTAINER) -> list[dict[str, Any]]:
    with store.session() as session:
        return session.runtime.decision_events(container_id, since_us=0, limit=10_000)


def fold(store: Store) -> None:
    """Fold the offers report from the decision events as another process reading it does:
    with a decision path of its own (``DecisionPath.fold``)."""
    folder: DecisionPath
    if store.sqlite_path:
        folder = SqlitePath(store)
    else:
        from nextoffer.storage.pg_path import PgPath

        folder = PgPath(store)
    try:
        folder.fold()
    finally:
        folder.close()


def report(store: Store, container_id: str = CONTAINER, *, folded: bool = True) -> dict[str, int]:
    """Propositions per offer on :data:`DAY` (impressions and clicks must be 0): folded
    first, as a report read through the service is, unless ``folded`` is false (then the
    report as it stands)."""
    if folded:
        fold(store)
    with store.session() as session:
        rows = session.runtime.offer_report(container_id, first_day=DAY, last_day=DAY)
    assert all(row["impressions"] == 0 and row["clicks"] == 0 for row in rows)
    return {row["offerId"]: row["propositions"] for row in rows}


def add_profile(
    store: Store,
    profile_id: str,
    identities: Sequence[tuple[str, str]],
    attributes: Mapping[str, Any],
    *,
    org: str = "O@AdobeOrg",
    sandbox: str = "prod",
) -> None:
    with store.session(write=True) as session:
        session.runtime.insert_profile(org, sandbox, profile_id, attributes, now=NOW)
        session.runtime.add_identities(org, sandbox, profile_id, identities)


def add_events(store: Store, profile_id: str, moments: Sequence[tuple[int, int]]) -> None:
    """Experience events of one profile, in the given order: (``n``, timestamp in µs)."""
    with store.session(write=True) as session:
        for n, moment in moments:
            session.runtime.insert_event(
                "O@AdobeOrg",
                "prod",
                profile_id,
                event_id=f"{profile_id}-e{n}",
                event_type="web.webpagedetails.pageViews",
                timestamp=NOW,
                timestamp_us=moment,
                body={"n": n, "profile": profile_id},
            )


def outcome(path: DecisionPath, rec: DecisionRecord) -> list[CounterKey]:
    return path.record(rec).result(timeout=30)


class DecisionPathContract:
    # -- reads -------------------------------------------------------------------------

    def test_profile_is_found_by_any_of_its_identities(self, path: Opened) -> None:
        store, p = path
        add_profile(store, "p-1", [("Email", "a@x"), ("ECID", "123")], {"tier": "gold"})
        add_profile(store, "p-2", [("Email", "b@x")], {"tier": "silver"})
        assert p.profile("O@AdobeOrg", "prod", "Email", "a@x") == ("p-1", {"tier": "gold"})
        assert p.profile("O@AdobeOrg", "prod", "ECID", "123") == ("p-1", {"tier": "gold"})
        assert p.profile("O@AdobeOrg", "prod", "Email", "b@x") == ("p-2", {"tier": "silver"})

    def test_profile_is_none_for_an_unknown_identity(self, path: Opened) -> None:
        store, p = path
        add_profile(store, "p-1", [("Email", "a@x")], {"tier": "gold"})
        assert p.profile("O@AdobeOrg", "prod", "Email", "nobody@x") is None
        assert p.profile("O@AdobeOrg", "prod", "ECID", "a@x") is None  # another namespace

    def test_profile_is_none_for_another_tenant(self, path: Opened) -> None:
        store, p = path
        add_profile(store, "p-1", [("Email", "a@x")], {"tier": "gold"})
        assert p.profile("Other@AdobeOrg", "prod", "Email", "a@x") is None
        assert p.profile("O@AdobeOrg", "dev", "Email", "a@x") is None

    def test_instance_is_read_whole_in_its_tenants_container(self, path: Opened) -> None:
        store, p = path
        container(store)
        written = instance("c-1", 7, {"xdm:name": "ü", "@id": "xcore:tag:7", "n": [1, None]})
        with store.session(write=True) as session:
            session.insert_instance(written, [])
        assert p.instance("O@AdobeOrg", "prod", "c-1", "i-7") == (True, written)
        # The same by @id (the dps form's key).
        assert p.instance("O@AdobeOrg", "prod", "c-1", "xcore:tag:7", by_at_id=True) == (
            True,
            written,
        )
        assert p.instance("O@AdobeOrg", "prod", "c-1", "xcore:tag:8", by_at_id=True) == (
            True,
            None,
        )
        assert p.instance("O@AdobeOrg", "dev", "c-1", "xcore:tag:7", by_at_id=True) == (
            False,
            None,
        )

    def test_instance_is_none_when_missing_from_an_owned_container(self, path: Opened) -> None:
        store, p = path
        container(store)
        assert p.instance("O@AdobeOrg", "prod", "c-1", "i-404") == (True, None)

    def test_instance_of_another_tenants_container_is_not_seen(self, path: Opened) -> None:
        store, p = path
        container(store)
        with store.session(write=True) as session:
            session.insert_instance(instance("c-1", 1), [])
        assert p.instance("O@AdobeOrg", "dev", "c-1", "i-1") == (False, None)
        assert p.instance("X@AdobeOrg", "prod", "c-1", "i-1") == (False, None)
        assert p.instance("O@AdobeOrg", "prod", "c-404", "i-1") == (False, None)

    def test_events_are_the_newest_limit_oldest_first(self, path: Opened) -> None:
        store, p = path
        # Inserted out of time order: the order is the events' time, not their insertion.
        add_events(store, "p-1", [(3, 3_000), (0, 0), (4, 4_000), (1, 1_000), (2, 2_000)])
        add_events(store, "p-2", [(9, 9_000)])  # newer, but another profile's
        assert [e["n"] for e in p.events("p-1", limit=3)] == [2, 3, 4]
        assert [e["n"] for e in p.events("p-1", limit=100)] == [0, 1, 2, 3, 4]
        assert p.events("p-1", limit=1) == [{"n": 4, "profile": "p-1"}]
        assert p.events("p-3", limit=10) == []

    def test_events_of_one_moment_keep_their_insertion_order(self, path: Opened) -> None:
        store, p = path
        add_events(store, "p-1", [(0, 5_000), (1, 5_000), (2, 5_000)])
        assert [e["n"] for e in p.events("p-1", limit=2)] == [1, 2]

    def test_counts_name_only_existing_counters(self, path: Opened) -> None:
        store, p = path
        assert p.counts([A, B]) == {}
        assert p.counts([]) == {}
        SqlCounters(store).add([A, A, B])
        per_profile = CounterKey(CONTAINER, A.offer_id, "profileCap", scope="p-1")
        assert p.counts([A, B, Z, per_profile]) == {A: 2, B: 1}
        assert p.counts([B]) == {B: 1}

    # -- records -----------------------------------------------------------------------

    def test_a_record_writes_its_event_and_report_increments(self, path: Opened) -> None:
        store, p = path
        first = record(offers=["o-1", "o-2", "o-1"], created_us=1, note="first")
        assert outcome(p, first) == []
        assert stored(store, first.proposition_id) == dict(first.body)
        assert report(store) == {"o-1": 2, "o-2": 1}
        second = record(offers=["o-1"], created_us=2, note="second")
        assert outcome(p, second) == []
        assert events_of(store) == [dict(first.body), dict(second.body)]
        assert report(store) == {"o-1": 3, "o-2": 1}
        assert report(store, "c-2") == {}

    def test_a_reservation_under_the_limits_increments_every_key(self, path: Opened) -> None:
        store, p = path
        assert outcome(p, record(reserve=[(A, 5), (B, 5)])) == []
        assert outcome(p, record(reserve=[(A, 5)])) == []
        assert p.counts([A, B]) == {A: 2, B: 1}
        assert len(events_of(store)) == 2
        assert report(store) == {"o-1": 2}

    def test_a_full_key_refuses_the_whole_record(self, path: Opened) -> None:
        store, p = path
        assert outcome(p, record(reserve=[(A, 5), (B, 1)])) == []  # B is now full
        refused = record(offers=["o-2"], reserve=[(Z, 5), (A, 5), (B, 1)])
        # Z and A come before B in key order: taken first, then given back.
        assert outcome(p, refused) == [B]
        assert stored(store, refused.proposition_id) is None
        assert report(store) == {"o-1": 1}
        counts = p.counts([Z, A, B])
        assert counts.get(Z, 0) == 0
        assert (counts[A], counts[B]) == (1, 1)

    def test_a_key_listed_twice_needs_room_for_two(self, path: Opened) -> None:
        store, p = path
        twice = record(reserve=[(A, 1), (A, 1)])
        assert outcome(p, twice) == [A]
        assert p.counts([A]).get(A, 0) == 0
        assert stored(store, twice.proposition_id) is None
        assert outcome(p, record(reserve=[(A, 2), (A, 2)])) == []
        assert p.counts([A]) == {A: 2}

    def test_a_duplicate_proposition_id_reserving_nothing_is_a_conflict(self, path: Opened) -> None:
        store, p = path
        first = record(note="first")
        assert outcome(p, first) == []
        with pytest.raises(Conflict):
            outcome(p, record(first.proposition_id, offers=["o-2"]))
        assert outcome(p, record(offers=["o-3"])) == []
        assert stored(store, first.proposition_id) == dict(first.body or {})
        assert report(store) == {"o-1": 1, "o-3": 1}

    def test_a_duplicate_proposition_id_is_a_conflict(self, path: Opened) -> None:
        store, p = path
        first = record(reserve=[(A, 5)], note="first")
        assert outcome(p, first) == []
        again = record(first.proposition_id, offers=["o-2"], reserve=[(A, 5), (B, 5)])
        with pytest.raises(Conflict):
            outcome(p, again)
        counts = p.counts([A, B])
        assert counts[A] == 1
        assert counts.get(B, 0) == 0
        assert stored(store, first.proposition_id) == dict(first.body)
        assert report(store) == {"o-1": 1}
