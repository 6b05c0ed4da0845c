"""The profile cache (``service/profile_cache.py``), on real SQLite and PostgreSQL.

* decisions see a profile written through the same ``NextOffer`` at once;
* a profile written by another ``NextOffer`` on the same database is seen within the bound;
* the change log drops exactly the profiles written, deleted or trimmed past;
* a read begun before a drop is not kept;
* without a thread (SQLite's default), decisions read the log every half bound;
* the memory the cache holds stays within its bound (tracemalloc);
* what it keeps is out of the cyclic garbage collector's sight, and a hit answers a dict
  of its own.
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from nextoffer import DecisionCall, NextOffer, PropositionRequest, Settings
from nextoffer.errors import Unavailable
from nextoffer.ids import utcnow
from nextoffer.repository.objects import (
    COLLECTION,
    DECISION,
    FALLBACK_OFFER,
    PERSONALIZED_OFFER,
    PLACEMENT,
    RULE,
)
from nextoffer.service.profile_cache import ProfileCache
from nextoffer.storage.store import Store

HTML = "https://ns.adobe.com/experience/offer-management/content-component-html"
WEB = "https://ns.adobe.com/xdm/channel-types/web"
ORG, SANDBOX = "P@AdobeOrg", "prod"


def _profile(store: Store, identity: str, attributes: dict[str, Any]) -> str:
    """Create or replace a profile through another store (another process or node)."""
    with store.session(write=True) as session:
        runtime = session.runtime
        found = runtime.find_profile_id(ORG, SANDBOX, "Email", identity)
        if found is None:
            found = f"profile-{identity}"
            runtime.insert_profile(ORG, SANDBOX, found, attributes, now=utcnow().isoformat())
            runtime.add_identities(ORG, SANDBOX, found, [("Email", identity)])
        else:
            runtime.update_profile(found, attributes, now=utcnow().isoformat())
    return found


def _read(cache: ProfileCache, store: Store, identity: str) -> tuple[str, dict[str, Any]] | None:
    """What the decision path does: the kept answer, or a read that is then kept."""
    key = (ORG, SANDBOX, "Email", identity)
    found = cache.get(key)
    if found is None:
        ticket = cache.ticket()
        with store.session() as session:
            found = session.runtime.profile_by_identity(*key)
        if found is not None:
            cache.put(key, ticket, found)
    return found


def test_the_change_log_drops_what_another_store_wrote(db_url: str) -> None:
    store, other = Store.open(db_url), Store.open(db_url)
    try:
        cache = ProfileCache(store, max_bytes=10**6, bound=60, start=False)
        a = _profile(other, "a@example.com", {"tier": "gold"})
        _profile(other, "b@example.com", {"tier": "gold"})
        cache.follow_once()
        assert _read(cache, store, "a@example.com") == (a, {"tier": "gold"})
        assert _read(cache, store, "b@example.com") is not None
        assert cache.size[0] == 2
        _profile(other, "a@example.com", {"tier": "silver"})
        # Not followed yet: the kept answer (what the bound allows).
        assert _read(cache, store, "a@example.com") == (a, {"tier": "gold"})
        cache.follow_once()
        assert cache.size[0] == 1  # only the written profile was dropped
        assert _read(cache, store, "a@example.com") == (a, {"tier": "silver"})
        with other.session(write=True) as session:
            session.runtime.delete_profile(a)
        cache.follow_once()
        assert _read(cache, store, "a@example.com") is None
    finally:
        store.close()
        other.close()


def test_a_change_log_trimmed_past_what_a_process_knew_empties_its_cache(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        cache = ProfileCache(store, max_bytes=10**6, bound=60, start=False)
        cache.follow_once()
        _profile(store, "a@example.com", {"tier": "gold"})
        _profile(store, "b@example.com", {"tier": "gold"})
        assert _read(cache, store, "b@example.com") is not None
        _profile(store, "a@example.com", {"tier": "silver"})  # logged, then trimmed
        with store.session(write=True) as session:
            assert session.runtime.trim_profile_changes(time.time_ns() // 1000 + 1) == 1
        cache.follow_once()
        assert cache.size[0] == 0  # it cannot tell what changed: nothing is kept
    finally:
        store.close()


def test_a_read_begun_before_a_drop_is_not_kept(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        cache = ProfileCache(store, max_bytes=10**6, bound=60, start=False)
        cache.follow_once()
        key = (ORG, SANDBOX, "Email", "a@example.com")
        ticket = cache.ticket()
        cache.invalidate(["someone-else"])  # a drop while the read was in flight
        cache.put(key, ticket, ("p", {"tier": "gold"}))
        assert cache.get(key) is None
        cache.put(key, cache.ticket(), ("p", {"tier": "gold"}))
        assert cache.get(key) == ("p", {"tier": "gold"})
    finally:
        store.close()


def test_a_read_begun_before_the_first_read_of_the_log_is_not_kept(tmp_path: Path) -> None:
    # A write committed between that read and the log's first read has a number the
    # process will never read past: the read it made must not be kept.
    store = Store.open(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        cache = ProfileCache(store, max_bytes=10**6, bound=60, start=False)
        key = (ORG, SANDBOX, "Email", "a@example.com")
        ticket = cache.ticket()
        cache.follow_once()
        cache.put(key, ticket, ("p", {"tier": "gold"}))
        assert cache.get(key) is None
    finally:
        store.close()


def test_nothing_is_served_unless_the_log_was_read_within_the_bound(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'p.db'}")
    now = [100.0]
    try:
        cache = ProfileCache(store, max_bytes=10**6, bound=1.0, clock=lambda: now[0], start=False)
        key = (ORG, SANDBOX, "Email", "a@example.com")
        cache.put(key, cache.ticket(), ("p", {}))  # never read the log: not kept
        cache.follow_once()
        cache.put(key, cache.ticket(), ("p", {}))
        assert cache.get(key) == ("p", {})
        now[0] += 1.01  # no read of the log since: the kept answer may be stale
        assert cache.get(key) is None
    finally:
        store.close()


def test_following_inline_reads_the_log_from_get_every_half_bound(db_url: str) -> None:
    # No thread: the first get() after bound / 2 reads the log, then answers.
    store, other = Store.open(db_url), Store.open(db_url)
    now = [100.0]
    try:
        cache = ProfileCache(store, max_bytes=10**6, bound=1.0, clock=lambda: now[0], inline=True)
        assert cache._thread is None
        a = _profile(other, "a@example.com", {"tier": "gold"})
        assert _read(cache, store, "a@example.com") == (a, {"tier": "gold"})  # log read first
        assert cache.size[0] == 1
        _profile(other, "a@example.com", {"tier": "silver"})
        now[0] += 0.4  # not due yet: the kept answer (what the bound allows)
        assert _read(cache, store, "a@example.com") == (a, {"tier": "gold"})
        now[0] += 0.2  # due: this get() reads the log, which drops the written profile
        assert _read(cache, store, "a@example.com") == (a, {"tier": "silver"})
        with other.session(write=True) as session:
            session.runtime.delete_profile(a)
        now[0] += 0.6
        assert _read(cache, store, "a@example.com") is None
    finally:
        store.close()
        other.close()


def test_following_inline_serves_nothing_while_the_log_cannot_be_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'p.db'}")
    now = [100.0]
    try:
        cache = ProfileCache(store, max_bytes=10**6, bound=1.0, clock=lambda: now[0], inline=True)
        key = (ORG, SANDBOX, "Email", "a@example.com")
        assert cache.get(key) is None  # reads the log
        cache.put(key, cache.ticket(), ("p", {}))
        assert cache.get(key) == ("p", {})

        def unreachable(**_: Any) -> Any:
            raise Unavailable("the database is unreachable")

        monkeypatch.setattr(store, "session", unreachable)  # the log cannot be read now
        now[0] += 0.6
        assert cache.get(key) == ("p", {})  # the failed read is logged; still fresh
        now[0] += 0.5  # past the bound since the last read that succeeded
        assert cache.get(key) is None
    finally:
        monkeypatch.undo()
        store.close()


def test_the_memory_held_stays_within_the_bound() -> None:
    bound = 2_000_000
    cache = ProfileCache(None, max_bytes=bound, start=False)  # type: ignore[arg-type]
    cache._fresh_until = float("inf")  # served without a store: only the map is measured
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(20_000):  # ~10× what fits
            attributes = {
                "age": n % 70,
                "country": "US",
                "tier": "gold",
                "loyaltyPoints": n,
                "optIn": True,
                "segments": {f"seg-{i}": {"status": "realized"} for i in range(n % 8)},
            }
            cache.put((ORG, SANDBOX, "Email", f"u{n}@example.com"), 0, (f"p{n}", attributes))
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    entries, counted = cache.size
    assert counted <= bound
    assert 500 < entries < 20_000  # evicted, least recently used first
    assert cache.get((ORG, SANDBOX, "Email", "u19999@example.com")) is not None
    assert cache.get((ORG, SANDBOX, "Email", "u0@example.com")) is None
    assert len(cache._keys) == entries  # the index by profile follows evictions
    assert held <= 1.1 * bound, f"{held} bytes held for a bound of {bound}"


def test_kept_profiles_are_out_of_the_collectors_sight() -> None:
    # Nested attributes (dicts, lists) parsed are containers the cyclic collector tracks;
    # what the cache keeps of them must not be: a full collection would walk it all.
    cache = ProfileCache(None, max_bytes=64_000_000, start=False)  # type: ignore[arg-type]
    cache._fresh_until = float("inf")
    gc.collect()
    before = len(gc.get_objects())
    for n in range(2_000):
        attributes = {
            "person": {"name": {"firstName": f"A{n}"}, "age": n % 90},
            "segments": [{"id": f"seg-{i}", "status": "realized"} for i in range(n % 4)],
        }
        cache.put((ORG, SANDBOX, "Email", f"u{n}@example.com"), 0, (f"p{n}", attributes))
        if n % 2:  # a second identity of the same profile
            cache.put((ORG, SANDBOX, "Phone", f"+1{n}"), 0, (f"p{n}", attributes))
    del attributes
    gc.collect()
    assert cache.size[0] == 3_000
    assert len(gc.get_objects()) - before < 100  # not one (or more) per profile kept


def test_a_hit_answers_the_attributes_kept_in_a_dict_of_its_own() -> None:
    cache = ProfileCache(None, max_bytes=1_000_000, start=False)  # type: ignore[arg-type]
    cache._fresh_until = float("inf")
    key = (ORG, SANDBOX, "Email", "a@example.com")
    attributes = {"tier": "gold", "person": {"age": 41}, "segments": [{"id": "s"}]}
    cache.put(key, cache.ticket(), ("p1", attributes))
    kept = ("p1", {"tier": "gold", "person": {"age": 41}, "segments": [{"id": "s"}]})
    found = cache.get(key)
    assert found == kept
    assert found is not None
    found[1]["tier"] = "silver"  # a caller's change stays its own
    found[1]["person"]["age"] = 7
    assert cache.get(key) == kept


def test_a_profile_dropped_by_id_drops_every_identity_that_named_it() -> None:
    cache = ProfileCache(None, max_bytes=1_000_000, start=False)  # type: ignore[arg-type]
    cache._fresh_until = float("inf")
    email, phone = (ORG, SANDBOX, "Email", "a@example.com"), (ORG, SANDBOX, "Phone", "+1")
    other = (ORG, SANDBOX, "Email", "b@example.com")
    cache.put(email, cache.ticket(), ("p1", {"tier": "gold"}))
    cache.put(phone, cache.ticket(), ("p1", {"tier": "gold"}))
    cache.put(email, cache.ticket(), ("p1", {"tier": "gold"}))  # kept again: still one key
    cache.put(other, cache.ticket(), ("p2", {"tier": "silver"}))
    assert sorted(cache._keys["p1"]) == sorted([email, phone])
    cache.invalidate(["p1"])
    assert cache.get(email) is None and cache.get(phone) is None
    assert cache.get(other) == ("p2", {"tier": "silver"})
    assert "p1" not in cache._keys


# -- through NextOffer (both databases: the root keeps profiles in memory) -------------


def _library(no: NextOffer) -> tuple[Any, str, str, str, str]:
    """A decision whose one offer needs ``tier = "gold"``, else its fallback."""
    tenant = no.bootstrap(org=ORG, sandbox=SANDBOX)
    who, container = tenant.principal, tenant.container_id

    def create(object_type: Any, body: dict[str, Any]) -> str:
        return no.create(who, container, object_type, body).at_id

    placement = create(PLACEMENT, {"xdm:name": "P", "xdm:channel": WEB, "xdm:componentType": HTML})
    reps = [
        {
            "xdm:placement": placement,
            "xdm:channel": WEB,
            "xdm:components": [{"@type": HTML, "dc:format": "text/html", "xdm:content": "<p/>"}],
        }
    ]
    rule = create(
        RULE,
        {
            "xdm:name": "gold",
            "xdm:condition": {
                "xdm:type": "PQL",
                "xdm:format": "pql/text",
                "xdm:value": 'tier = "gold"',
            },
        },
    )
    offer = create(
        PERSONALIZED_OFFER,
        {
            "xdm:name": "O",
            "xdm:status": "approved",
            "xdm:representations": reps,
            "xdm:rank": {"xdm:priority": 1},
            "xdm:selectionConstraint": {"xdm:eligibilityRule": rule},
        },
    )
    fallback = create(
        FALLBACK_OFFER, {"xdm:name": "F", "xdm:status": "approved", "xdm:representations": reps}
    )
    offers = create(COLLECTION, {"xdm:name": "C", "xdm:filterType": "offers", "xdm:ids": [offer]})
    activity = create(
        DECISION,
        {
            "xdm:name": "D",
            "xdm:status": "live",
            "xdm:fallback": fallback,
            "xdm:criteria": [
                {"xdm:placements": [placement], "xdm:optionSelection": {"xdm:filter": offers}}
            ],
        },
    )
    return tenant, container, placement, activity, offer


def _gold(no: NextOffer, tenant: Any, container: str, placement: str, activity: str) -> bool:
    """Whether a recorded decision on the loop (the server's path) saw tier gold."""
    call = DecisionCall(
        propositions=(PropositionRequest(activity, placement),),
        identities=[("Email", "a@example.com")],
    )
    outcome = asyncio.run(no.decide_async(tenant.principal, container, call))
    return outcome.result.propositions[0].fallback is None


def _upsert(no: NextOffer, tenant: Any, tier: str) -> None:
    body = {"identityMap": {"Email": [{"id": "a@example.com"}]}, "profile": {"tier": tier}}
    no.profiles.upsert(tenant.principal, body)


def test_the_cache_is_on_by_default_and_off_at_zero(db_url: str) -> None:
    with NextOffer.open(Settings(db_url=db_url, freeze_heap=False)) as no:
        assert no.profile_cache is not None
    with NextOffer.open(Settings(db_url=db_url, freeze_heap=False, profile_cache_mb=0)) as no:
        assert no.profile_cache is None


def test_stored_profile_answers_one_identity_and_keeps_what_it_read(db_url: str) -> None:
    """``Decisions.stored_profile``: what a decision's profile lookup (and the benchmark's
    IO floor) calls — the cache, else one read of the path, then kept."""
    with NextOffer.open(Settings(db_url=db_url, freeze_heap=False, profile_cache_mb=64)) as no:
        assert no.profile_cache is not None
        tenant = _library(no)[0]
        _upsert(no, tenant, "gold")
        who = tenant.principal
        assert no.decisions.stored_profile(who, "Email", "nobody@example.com") is None
        key = (ORG, SANDBOX, "Email", "a@example.com")
        deadline = time.monotonic() + 5
        while no.profile_cache.get(key) is None:
            read = no.decisions.stored_profile(who, "Email", "a@example.com")
            assert read is not None and read[1]["tier"] == "gold"
            assert time.monotonic() < deadline, "the read was never kept"
        kept = no.decisions.stored_profile(who, "Email", "a@example.com")
        assert kept is not None and kept[0] == read[0] and kept[1]["tier"] == "gold"


def test_decisions_see_a_profile_written_through_the_same_nextoffer_at_once(db_url: str) -> None:
    # Switched on explicitly (it is the default), so the test does not rest on it.
    with NextOffer.open(Settings(db_url=db_url, freeze_heap=False, profile_cache_mb=64)) as no:
        assert no.profile_cache is not None
        tenant, container, placement, activity, _ = _library(no)
        _upsert(no, tenant, "gold")
        deadline = time.monotonic() + 5
        while no.profile_cache.get((ORG, SANDBOX, "Email", "a@example.com")) is None:
            assert _gold(no, tenant, container, placement, activity)  # read, then kept
            assert time.monotonic() < deadline, "the cache never started serving"
        for tier in ("silver", "gold", "silver", "gold"):
            _upsert(no, tenant, tier)
            assert _gold(no, tenant, container, placement, activity) == (tier == "gold")


def test_a_profile_written_by_another_nextoffer_is_seen_within_the_bound(db_url: str) -> None:
    bound = 1.0
    settings = Settings(
        db_url=db_url, freeze_heap=False, profile_cache_seconds=bound, profile_cache_mb=64
    )
    with NextOffer.open(settings) as a, NextOffer.open(settings) as b:
        tenant, container, placement, activity, _ = _library(a)
        _upsert(a, tenant, "gold")
        key = (ORG, SANDBOX, "Email", "a@example.com")
        assert b.profile_cache is not None
        deadline = time.monotonic() + 5
        while b.profile_cache.get(key) is None:  # B keeps the profile in memory
            assert _gold(b, tenant, container, placement, activity)
            assert time.monotonic() < deadline, "B's cache never started serving"
        for tier in ("silver", "gold"):
            _upsert(a, tenant, tier)
            written = time.monotonic()
            while True:
                # The bound holds for a decision that starts after it: under load the
                # decision itself may take long, so its start is what is checked.
                asked = time.monotonic()
                if _gold(b, tenant, container, placement, activity) == (tier == "gold"):
                    break
                assert asked - written < bound + 0.1, "B still serves the old profile"
                time.sleep(0.01)
