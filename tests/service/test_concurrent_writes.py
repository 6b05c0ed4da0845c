"""Two writes racing on one key, on both backends.

**A new identity.** On PostgreSQL two writes both read the identity as free; the first to
commit claims it. The other used to skip its identity row and commit anyway: it
answered "created" with a profile no identity names, and its attributes (a profile
upsert) or its event (an event batch) went to that profile, where no read finds them.
Now it loses the claim (``IdentityClaimed``), its transaction is made again
(``Store.write``) and it writes to the profile that won.

**An event id.** Two batches holding an event with one ``_id``: on PostgreSQL the second
failed whole on the unique key (409, its other events not stored). Now its copy is a
duplicate, as if it had come after, and the rest of its batch is stored.

**A reference and a delete.** An offer created with a reference to a placement while
the placement is deleted: on PostgreSQL each checked before the other committed (the
placement exists; nothing references it), and both succeeded, leaving the offer naming
a placement that is gone. Now a library write holds its container's row from its start
(``Repository.container(lock=True)``): the second waits, reads the first's outcome, and
is refused (the delete 409, or the create 422).

On SQLite a writer reads under the write lock, so the second write waits and reads what
the first wrote; the outcome is the same. Each test holds the first write's transaction
open until the other write is blocked by it (PostgreSQL: until the server shows that
backend waiting on a lock), so the race is taken, not hoped for.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import func, select, text

from nextoffer import NextOffer, Settings
from nextoffer.errors import Conflict, IdentityClaimed, NotFound
from nextoffer.repository.objects import (
    COLLECTION,
    DECISION,
    FALLBACK_OFFER,
    PERSONALIZED_OFFER,
    PLACEMENT,
)
from nextoffer.repository.records import InstanceRecord
from nextoffer.service.auth import Principal
from nextoffer.service.repository import Repository
from nextoffer.storage import tables as t
from nextoffer.storage.batch import BatchTables
from nextoffer.storage.runtime import Runtime
from nextoffer.storage.session import Session
from nextoffer.storage.store import WRITE_ATTEMPTS

T = TypeVar("T")
ORG, SANDBOX = "CLAIM@AdobeOrg", "prod"
IDENTITY = ("Email", "new@example.com")
HTML = "https://ns.adobe.com/experience/offer-management/content-component-html"
WEB = "https://ns.adobe.com/xdm/channel-types/web"
WINNER = "winner-profile"


@pytest.fixture
def no(db_url: str, tmp_path: Path) -> Iterator[NextOffer]:
    settings = Settings(db_url=db_url, warm_catalogs=False, datasets_dir=str(tmp_path / "data"))
    with NextOffer.open(settings) as opened:
        yield opened


@pytest.fixture
def principal(no: NextOffer) -> Principal:
    return no.bootstrap(org=ORG, sandbox=SANDBOX).principal


def behind(no: NextOffer, first: Callable[[Session], None], write: Callable[[], T]) -> T:
    """Run ``write`` in a thread while another transaction holds what ``first`` wrote,
    uncommitted; commit that one once ``write`` waits for it. Returns what ``write``
    answered."""
    done: Future[T] = Future()
    with no.store.session(write=True) as session:
        first(session)
        thread = threading.Thread(target=lambda: done.set_result(write()), daemon=True)
        thread.start()
        _wait_until_blocked(no)
        assert not done.done()
    thread.join(timeout=30)
    return done.result(timeout=0)


def claim(session: Session) -> None:
    """The first write: profile :data:`WINNER` with :data:`IDENTITY`."""
    session.runtime.insert_profile(ORG, SANDBOX, WINNER, {"won": True}, now="2026-01-01")
    session.runtime.add_identities(ORG, SANDBOX, WINNER, [IDENTITY])


def _wait_until_blocked(no: NextOffer, *, unless: Future[Any] | None = None) -> None:
    """Until another backend waits on a lock this transaction holds (PostgreSQL), or the
    write of ``unless`` finished without waiting; on SQLite the writer waits for the
    write lock held from a write's start, and a moment lets it reach that wait."""
    if no.store.dialect != "postgresql":
        time.sleep(0.3)
        return
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    )
    deadline = time.monotonic() + 20
    with no.store.engine.connect() as watcher:
        while watcher.execute(waiting).scalar() == 0 and not (unless and unless.done()):
            assert time.monotonic() < deadline, "the other write never waited for the claim"
            # Each look in a transaction of its own: PostgreSQL shows a transaction the
            # sessions' activity as it was at its first look, to the end (so a write that
            # came to its wait after that first look, on a loaded host, was never seen).
            watcher.rollback()
            time.sleep(0.02)


def _profiles(no: NextOffer) -> int:
    with no.store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(t.profiles)).scalar() or 0)


def test_an_upsert_that_loses_a_new_identity_updates_the_profile_that_claimed_it(
    no: NextOffer, principal: Principal
) -> None:
    body = {"identityMap": {IDENTITY[0]: [{"id": IDENTITY[1]}]}, "profile": {"late": 1}}
    record, created = behind(no, claim, lambda: no.profiles.upsert(principal, body))
    assert (record.profile_id, created) == (WINNER, False)
    assert no.profiles.get(principal, *IDENTITY).attributes == {"late": 1}
    assert _profiles(no) == 1


def test_an_event_that_loses_a_new_identity_is_stored_under_the_profile_that_claimed_it(
    no: NextOffer, principal: Principal
) -> None:
    event = {
        "_id": "late-event",
        "eventType": "web.webpagedetails.pageViews",
        "timestamp": "2026-01-01T00:00:00Z",
        "identityMap": {IDENTITY[0]: [{"id": IDENTITY[1]}]},
    }
    outcomes = behind(no, claim, lambda: no.events.append(principal, {"events": [event]}))
    assert [o.status for o in outcomes] == ["stored"]
    with no.store.session() as session:
        assert [e["_id"] for e in session.runtime.recent_events(WINNER, limit=10)] == ["late-event"]
    assert _profiles(no) == 1


def test_a_write_that_keeps_losing_claims_is_made_three_times_then_answers_503(
    no: NextOffer,
) -> None:
    attempts: list[int] = []

    def write(session: Any) -> str:
        attempts.append(len(attempts))
        session.runtime.insert_profile(ORG, SANDBOX, f"p{len(attempts)}", {}, now="2026-01-01")
        if len(attempts) < WRITE_ATTEMPTS + 1:
            raise IdentityClaimed("claimed meanwhile")
        return "written"

    with pytest.raises(IdentityClaimed) as refused:
        no.store.write(write)
    assert refused.value.status == 503 and refused.value.retry_after == 1
    assert len(attempts) == WRITE_ATTEMPTS
    assert _profiles(no) == 0  # every attempt rolled back
    assert no.store.write(write) == "written"  # the fourth call's first attempt
    assert _profiles(no) == 1


def test_an_event_id_stored_meanwhile_is_a_duplicate_and_the_rest_of_the_batch_is_stored(
    no: NextOffer, principal: Principal
) -> None:
    no.profiles.upsert(principal, {"identityMap": {IDENTITY[0]: [{"id": IDENTITY[1]}]}})
    profile_id = no.profiles.get(principal, *IDENTITY).profile_id

    def event(event_id: str) -> dict[str, Any]:
        return {
            "_id": event_id,
            "eventType": "web.webpagedetails.pageViews",
            "timestamp": "2026-01-01T00:00:00Z",
            "identityMap": {IDENTITY[0]: [{"id": IDENTITY[1]}]},
        }

    def first(session: Session) -> None:
        session.runtime.insert_event(
            ORG,
            SANDBOX,
            profile_id,
            event_id="shared",
            event_type="web.webpagedetails.pageViews",
            timestamp="2026-01-01T00:00:00.000000Z",
            timestamp_us=0,
            body=event("shared"),
        )

    batch = {"events": [event("shared"), event("own")]}
    outcomes = behind(no, first, lambda: no.events.append(principal, batch))
    assert [o.status for o in outcomes] == ["duplicate", "stored"]
    with no.store.session() as session:
        stored = [e["_id"] for e in session.runtime.recent_events(profile_id, limit=10)]
    assert sorted(stored) == ["own", "shared"]


def test_a_placement_deleted_while_an_offer_naming_it_is_created_is_refused(
    no: NextOffer, principal: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    container, placement, offer = _placement_and_offer(no, principal)
    # The create stops after its checks, before it writes, until the delete has begun.
    created, deleted = paused_race(
        no,
        monkeypatch,
        (Session, "insert_instance"),
        lambda: no.create(principal, container, PERSONALIZED_OFFER, offer),
        lambda: no.repository.delete(principal, container, placement.instance_id, if_match=None),
    )
    assert type(created).__name__ == "InstanceRecord"
    assert isinstance(deleted, Conflict)  # the delete reads the new reference


@pytest.mark.parametrize("delete_first", [False, True], ids=["import first", "delete first"])
def test_a_placement_deleted_while_an_import_references_it_leaves_no_reference_to_it(
    no: NextOffer, principal: Principal, monkeypatch: pytest.MonkeyPatch, delete_first: bool
) -> None:
    # An import checks everything first, then writes in chunks: each chunk now holds the
    # container and finds again what it references outside the import.
    container, placement, offer = _placement_and_offer(no, principal)
    outcome, deleted = paused_race(
        no,
        monkeypatch,
        # Before the chunk's transaction (the delete goes first), or in it, after its
        # checks (the delete waits for it).
        (Repository, "_write_chunk") if delete_first else (Session, "insert_instances"),
        lambda: no.repository.create_many(
            principal, container, [(PERSONALIZED_OFFER, offer)], keep_ids=False
        ),
        lambda: no.repository.delete(principal, container, placement.instance_id, if_match=None),
    )
    if delete_first:
        assert not isinstance(deleted, Exception), deleted
        assert isinstance(outcome, Conflict), outcome
        assert outcome.detail == (
            f"{placement.at_id} referenced by the import was deleted while it ran; "
            "0 of 1 instances were imported"
        )
        assert no.repository.names(principal, container, PERSONALIZED_OFFER, limit=5) == []
    else:
        assert not isinstance(outcome, Exception), outcome
        assert isinstance(deleted, Conflict)


def test_a_profile_deleted_while_an_upsert_adds_to_it_goes_with_what_the_upsert_added(
    no: NextOffer, principal: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    email = {IDENTITY[0]: [{"id": IDENTITY[1]}]}
    no.profiles.upsert(principal, {"identityMap": email, "profile": {"v": 0}})
    body = {"identityMap": {**email, "Phone": [{"id": "555"}]}, "profile": {"v": 1}}
    # The upsert stops after it found the profile, before it writes, until the delete
    # has begun. It used to add its identity to a profile the delete removed: an
    # identity naming no profile, which every later upsert of it failed on (a 500).
    upserted, deleted = paused_race(
        no,
        monkeypatch,
        (Runtime, "update_profiles"),
        lambda: no.profiles.upsert(principal, body),
        lambda: no.profiles.delete(principal, *IDENTITY),
    )
    assert not isinstance(upserted, Exception), upserted
    assert upserted[1] is False and deleted.profile_id == upserted[0].profile_id
    with pytest.raises(NotFound):
        no.profiles.get(principal, "Phone", "555")
    with no.store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.profile_identities)).scalar() == 0
    again, created = no.profiles.upsert(principal, {"identityMap": {"Phone": [{"id": "555"}]}})
    assert created and no.profiles.get(principal, "Phone", "555").profile_id == again.profile_id


def test_a_profile_deleted_while_an_event_is_stored_for_it_takes_the_event_with_it(
    no: NextOffer, principal: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    email = {IDENTITY[0]: [{"id": IDENTITY[1]}]}
    no.profiles.upsert(principal, {"identityMap": email, "profile": {}})
    event = {"_id": "e1", "timestamp": "2026-01-01T00:00:00Z", "identityMap": email}
    # The event stops after it found its profile, before it is stored, until the delete
    # has begun. It used to be stored under the profile the delete removed: an event of
    # no profile, kept for ever and read by nothing.
    appended, deleted = paused_race(
        no,
        monkeypatch,
        (Runtime, "insert_event"),
        lambda: no.events.append(principal, {"events": [event]}),
        lambda: no.profiles.delete(principal, *IDENTITY),
    )
    assert not isinstance(appended, Exception), appended
    assert [o.status for o in appended] == ["stored"] and not isinstance(deleted, Exception)
    with no.store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.experience_events)).scalar() == 0


def test_an_upsert_does_not_wait_for_an_event_stored_under_its_profile(
    no: NextOffer, principal: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An event holds its profile only against a delete ("key share"); an upsert's lock
    # ("no key update") passes it. When both held the profile whole, event batches and
    # bulk upserts naming several profiles in different orders deadlocked (PostgreSQL
    # aborted one of them: a 503).
    email = {IDENTITY[0]: [{"id": IDENTITY[1]}]}
    no.profiles.upsert(principal, {"identityMap": email, "profile": {}})
    event = {"_id": "e1", "timestamp": "2026-01-01T00:00:00Z", "identityMap": email}
    done: list[str] = []

    def append() -> Any:
        answer = no.events.append(principal, {"events": [event]})
        done.append("event")
        return answer

    def upsert() -> Any:
        answer = no.profiles.upsert(principal, {"identityMap": email, "profile": {"v": 1}})
        done.append("upsert")
        return answer

    appended, upserted = paused_race(no, monkeypatch, (Runtime, "insert_event"), append, upsert)
    assert not isinstance(appended, Exception) and not isinstance(upserted, Exception)
    expected = ["upsert", "event"] if no.store.dialect == "postgresql" else ["event", "upsert"]
    assert done == expected  # on SQLite every writer waits for the write lock


def test_a_datastream_deleted_while_it_is_updated_stays_deleted(
    no: NextOffer, principal: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An update wrote the whole row back: after a delete it brought the datastream back,
    # a configId its owner had revoked answering again.
    stream = no.datastreams.create(principal, {"name": "web"})
    updated, deleted = paused_race(
        no,
        monkeypatch,
        (Session, "put_datastream"),
        lambda: no.datastreams.update(principal, stream.datastream_id, {"name": "renamed"}),
        lambda: no.datastreams.delete(principal, stream.datastream_id),
    )
    assert not isinstance(updated, Exception) and deleted is None
    with pytest.raises(NotFound):
        no.datastreams.get(principal, stream.datastream_id)


def test_two_updates_of_a_datastream_each_keep_the_other_s_field(
    no: NextOffer, principal: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = no.datastreams.create(principal, {"name": "web"})
    first, second = paused_race(
        no,
        monkeypatch,
        (Session, "put_datastream"),
        lambda: no.datastreams.update(principal, stream.datastream_id, {"name": "renamed"}),
        lambda: no.datastreams.update(principal, stream.datastream_id, {"rateLimit": 7}),
    )
    assert not isinstance(first, Exception) and not isinstance(second, Exception)
    now = no.datastreams.get(principal, stream.datastream_id)
    assert (now.name, now.rate_limit) == ("renamed", 7)


def test_a_segment_deleted_while_a_job_naming_it_is_submitted_is_refused(
    no: NextOffer, principal: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    container, activity, placement = _decision(no, principal)
    segment = no.segments.create(
        principal,
        {"name": "all", "expression": {"type": "PQL", "format": "pql/text", "value": "true"}},
    )
    dataset = no.datasets.create(principal, {"name": "out"})
    job = {
        "xdm:segmentIds": [segment.segment_id],
        "xdm:dataSetId": dataset.dataset_id,
        "xdm:propositionRequests": [
            {"xdm:activityId": activity, "xdm:placementId": placement, "xdm:itemCount": 1}
        ],
    }
    submitted, deleted = paused_race(
        no,
        monkeypatch,
        (BatchTables, "insert_job"),
        lambda: no.batch.submit(principal, job, container_id=container),
        lambda: no.segments.delete(principal, segment.segment_id),
    )
    assert not isinstance(submitted, Exception), submitted
    assert isinstance(deleted, Conflict)  # the delete sees the queued job


def paused_race(
    no: NextOffer,
    monkeypatch: pytest.MonkeyPatch,
    pause_at: tuple[type, str],
    first: Callable[[], Any],
    second: Callable[[], Any],
) -> tuple[Any, Any]:
    """Run ``first`` in a thread until it calls the method ``pause_at`` names (after its
    checks, before its write), then ``second`` in another (which the method does not
    pause); let ``first`` go on once ``second`` waits for it or finished without
    waiting. What each answered or raised."""
    reached, go = threading.Event(), threading.Event()
    owner, name = pause_at
    method = getattr(owner, name)

    def paused(self: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is threads[0]:
            reached.set()
            assert go.wait(30)
        return method(self, *args, **kwargs)

    monkeypatch.setattr(owner, name, paused)
    answers: tuple[Future[Any], Future[Any]] = (Future(), Future())
    threads: list[threading.Thread] = []

    def run(future: Future[Any], work: Callable[[], Any]) -> None:
        try:
            future.set_result(work())
        except Exception as exc:
            future.set_result(exc)

    threads.append(threading.Thread(target=run, args=(answers[0], first), daemon=True))
    threads[0].start()
    assert reached.wait(30)
    threads.append(threading.Thread(target=run, args=(answers[1], second), daemon=True))
    threads[1].start()
    _wait_until_blocked(no, unless=answers[1])
    go.set()
    for thread in threads:
        thread.join(30)
    return answers[0].result(0), answers[1].result(0)


def _placement_and_offer(
    no: NextOffer, principal: Principal
) -> tuple[str, InstanceRecord, dict[str, Any]]:
    """The tenant's container, a placement in it, and an offer body naming it."""
    container = no.bootstrap(org=ORG, sandbox=SANDBOX).container_id
    placement = no.create(
        principal,
        container,
        PLACEMENT,
        {"xdm:name": "p", "xdm:channel": WEB, "xdm:componentType": HTML},
    )
    offer = {
        "xdm:name": "o",
        "xdm:status": "draft",
        "xdm:representations": [
            {
                "xdm:placement": placement.at_id,
                "xdm:components": [{"@type": HTML, "dc:format": "text/html"}],
            }
        ],
    }
    return container, placement, offer


def _decision(no: NextOffer, principal: Principal) -> tuple[str, str, str]:
    """A decision with one offer and a fallback: (container, its @id, its placement's)."""
    container, placement, offer = _placement_and_offer(no, principal)
    offer["xdm:status"] = "approved"
    made = no.create(principal, container, PERSONALIZED_OFFER, offer)
    fallback = no.create(
        principal,
        container,
        FALLBACK_OFFER,
        {**offer, "xdm:name": "f"},
    )
    collection = no.create(
        principal,
        container,
        COLLECTION,
        {"xdm:name": "c", "xdm:filterType": "offers", "xdm:ids": [made.at_id]},
    )
    decision = no.create(
        principal,
        container,
        DECISION,
        {
            "xdm:name": "d",
            "xdm:status": "live",
            "xdm:fallback": fallback.at_id,
            "xdm:criteria": [
                {
                    "xdm:placements": [placement.at_id],
                    "xdm:optionSelection": {"xdm:filter": collection.at_id},
                }
            ],
        },
    )
    return container, decision.at_id, placement.at_id
