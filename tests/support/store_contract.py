"""The storage contract: one suite every backend runs (subclass it and give a ``store``)."""

from __future__ import annotations

import threading

import pytest

from nextoffer.errors import Conflict
from nextoffer.repository.records import Audit, ContainerRecord, InstanceRecord
from nextoffer.storage.library_read import LibraryReader
from nextoffer.storage.store import Store

STAMP = "2026-01-01T00:00:00.000000Z"
AUDIT = Audit(STAMP, STAMP, "u", "u", "c", "c")
TAG = "https://ns.adobe.com/experience/offer-management/tag"


def container(
    store: Store, org: str = "O@AdobeOrg", sandbox: str = "prod", cid: str = "c-1"
) -> ContainerRecord:
    record = ContainerRecord(cid, org, sandbox, "decisioning", "n", ["acp"], 1, AUDIT)
    with store.session(write=True) as session:
        session.ensure_org(org, now=STAMP)
        session.ensure_sandbox(org, sandbox, now=STAMP)
        session.insert_container(record)
    return record


def instance(cid: str, n: int, body: dict | None = None, etag: int = 1) -> InstanceRecord:
    return InstanceRecord(
        instance_id=f"i-{n}",
        container_id=cid,
        schema_id=TAG,
        at_id=f"xcore:tag:{n:x}",
        etag=etag,
        audit=AUDIT,
        body=body or {"xdm:name": f"tag {n}", "@id": f"xcore:tag:{n:x}"},
        created_us=n,
        modified_us=n,
    )


class StoreContract:
    def test_migrate_is_idempotent(self, store: Store) -> None:
        store.migrate()
        store.migrate()

    def test_container_is_scoped_to_org_and_sandbox(self, store: Store) -> None:
        container(store)
        with store.session() as session:
            assert session.get_container("c-1", org_id="O@AdobeOrg", sandbox="prod") is not None
            assert session.get_container("c-1", org_id="O@AdobeOrg", sandbox="dev") is None
            assert session.get_container("c-1", org_id="X@AdobeOrg", sandbox="prod") is None
            assert [
                c.container_id for c in session.list_containers(org_id="O@AdobeOrg", sandbox="prod")
            ] == ["c-1"]

    def test_instance_round_trip_keeps_the_body(self, store: Store) -> None:
        container(store)
        body = {"xdm:name": "ü", "@id": "xcore:tag:1", "nested": {"list": [1, 2.5, None, True]}}
        with store.session(write=True) as session:
            session.insert_instance(instance("c-1", 1, body), [])
        with store.session() as session:
            got = session.get_instance("c-1", "i-1")
        assert got is not None and got.body == body and got.etag == 1 and got.audit == AUDIT

    def test_update_with_a_stale_etag_writes_nothing(self, store: Store) -> None:
        container(store)
        with store.session(write=True) as session:
            session.insert_instance(instance("c-1", 1), [])
        newer = instance("c-1", 1, {"xdm:name": "new", "@id": "xcore:tag:1"}, etag=2)
        with store.session(write=True) as session:
            assert session.update_instance(newer, [], expected_etag=1)
        with store.session(write=True) as session:
            assert not session.update_instance(instance("c-1", 1, etag=3), [], expected_etag=1)
        with store.session() as session:
            got = session.get_instance("c-1", "i-1")
        assert got is not None and got.etag == 2 and got.body["xdm:name"] == "new"

    def test_duplicate_at_id_in_a_container_is_a_conflict(self, store: Store) -> None:
        container(store)
        with store.session(write=True) as session:
            session.insert_instance(instance("c-1", 1), [])
        clash = instance("c-1", 1)
        clash = InstanceRecord(
            **{**{f: getattr(clash, f) for f in clash.__slots__}, "instance_id": "i-other"}
        )
        with pytest.raises(Conflict), store.session(write=True) as session:
            session.insert_instance(clash, [])

    def test_references_are_tracked_and_replaced(self, store: Store) -> None:
        container(store)
        with store.session(write=True) as session:
            session.insert_instance(instance("c-1", 1), [])
            session.insert_instance(instance("c-1", 2), ["xcore:tag:1"])
        with store.session() as session:
            assert [r.instance_id for r in session.referrers("c-1", "xcore:tag:1")] == ["i-2"]
        with store.session(write=True) as session:
            assert session.update_instance(instance("c-1", 2, etag=2), [], expected_etag=1)
        with store.session() as session:
            assert session.referrers("c-1", "xcore:tag:1") == []

    def test_an_update_keeps_unchanged_references_and_replaces_changed_ones(
        self, store: Store
    ) -> None:
        container(store)
        with store.session(write=True) as session:
            session.insert_instance(instance("c-1", 1), [])
            session.insert_instance(instance("c-1", 2), ["xcore:tag:1"])
        with store.session(write=True) as session:
            assert session.update_instance(
                instance("c-1", 2, etag=2),
                ["xcore:tag:1"],
                expected_etag=1,
                previous_refs=["xcore:tag:1"],
            )
        with store.session() as session:
            assert [r.instance_id for r in session.referrers("c-1", "xcore:tag:1")] == ["i-2"]
        with store.session(write=True) as session:
            assert session.update_instance(
                instance("c-1", 2, etag=3),
                ["xcore:tag:3", "xcore:tag:3"],
                expected_etag=2,
                previous_refs=["xcore:tag:1"],
            )
        with store.session() as session:
            assert session.referrers("c-1", "xcore:tag:1") == []
            assert [r.instance_id for r in session.referrers("c-1", "xcore:tag:3")] == ["i-2"]

    def test_delete_removes_the_instance_and_its_references(self, store: Store) -> None:
        container(store)
        with store.session(write=True) as session:
            session.insert_instance(instance("c-1", 1), [])
            session.insert_instance(instance("c-1", 2), ["xcore:tag:1"])
        with store.session(write=True) as session:
            record = session.get_instance("c-1", "i-2")
            assert record is not None and session.delete_instance(record)
        with store.session() as session:
            assert session.get_instance("c-1", "i-2") is None
            assert session.referrers("c-1", "xcore:tag:1") == []
            assert session.count_instances("c-1") == 1

    def test_a_failed_session_rolls_back(self, store: Store) -> None:
        container(store)
        with pytest.raises(RuntimeError), store.session(write=True) as session:
            session.insert_instance(instance("c-1", 1), [])
            raise RuntimeError("boom")
        with store.session() as session:
            assert session.get_instance("c-1", "i-1") is None

    def test_library_version_moves_on_every_write(self, store: Store) -> None:
        container(store)
        with store.session() as session:
            start = session.library_version("c-1")
        with store.session(write=True) as session:
            session.insert_instance(instance("c-1", 1), [])
        with store.session(write=True) as session:
            assert session.update_instance(instance("c-1", 1, etag=2), [], expected_etag=1)
        with store.session() as session:
            assert session.library_version("c-1") == start + 2

    def test_changes_since_reads_the_writes_after_a_version_and_no_others(
        self, store: Store
    ) -> None:
        container(store)
        container(store, org="P@AdobeOrg", cid="c-2")
        with store.session(write=True) as session:
            session.insert_instance(instance("c-1", 1), [])
            session.insert_instance(instance("c-1", 2), [])
            session.insert_instance(instance("c-2", 3), [])  # another container's
        with store.session() as session:
            seen = session.library_version("c-1")
            assert session.changes_since("c-1", seen) == (seen, [])
        with store.session(write=True) as session:
            body = {"xdm:name": "renamed", "@id": "xcore:tag:1"}
            assert session.update_instance(instance("c-1", 1, body, etag=2), [], expected_etag=1)
            record = session.get_instance("c-1", "i-2")
            assert record is not None
            assert session.delete_instance(record)
            session.insert_instance(instance("c-1", 4), [])
            session.insert_instance(instance("c-2", 5), [])
        with store.session() as session:
            version, written = session.changes_since("c-1", seen)
            assert version == seen + 3 == session.library_version("c-1")
            assert sorted(written, key=lambda row: row[0]) == [
                ("xcore:tag:1", TAG, "i-1", 2, body),
                ("xcore:tag:2", None, None, None, None),  # deleted
                ("xcore:tag:4", TAG, "i-4", 1, instance("c-1", 4).body),
            ]
            # From the version between the update and the delete: the delete and the insert.
            assert sorted(row[0] for row in session.changes_since("c-1", seen + 1)[1]) == [
                "xcore:tag:2",
                "xcore:tag:4",
            ]
            assert session.changes_since("c-1", version) == (version, [])
            assert session.changes_since("no-such-container", 0) == (0, [])

    def test_changes_read_while_writers_race_miss_nothing(self, store: Store) -> None:
        """Reading what changed after the last version read, while four writers commit
        (on PostgreSQL, concurrently): every write is read, each once it has committed."""
        container(store)
        errors: list[BaseException] = []

        def write(n: int) -> None:
            try:
                for k in range(15):
                    with store.session(write=True) as session:
                        session.insert_instance(instance("c-1", n * 100 + k), [])
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)

        seen: set[str] = set()
        version = 0
        threads = [threading.Thread(target=write, args=(n,)) for n in range(1, 5)]
        for thread in threads:
            thread.start()
        while True:
            finished = not any(thread.is_alive() for thread in threads)
            with store.session() as session:
                version, written = session.changes_since("c-1", version)
            seen.update(row[0] for row in written)
            if finished:
                break
        for thread in threads:
            thread.join()
        assert errors == []
        with store.session() as session:
            version, written = session.changes_since("c-1", version)
            stored = {r.at_id for r in session.all_instances("c-1")}
        assert written == []  # the last read (after every writer ended) had them all
        assert seen == stored and len(stored) == 60

    def test_instances_by_at_id_stays_in_its_container(self, store: Store) -> None:
        container(store)
        container(store, org="P@AdobeOrg", cid="c-2")
        with store.session(write=True) as session:
            session.insert_instance(instance("c-1", 1), [])
            session.insert_instance(instance("c-2", 2), [])
        with store.session() as session:
            assert list(session.instances_by_at_id("c-1", ["xcore:tag:1", "xcore:tag:2"])) == [
                "xcore:tag:1"
            ]

    def test_concurrent_writers_both_commit(self, store: Store) -> None:
        container(store)
        errors: list[BaseException] = []

        def write(n: int) -> None:
            try:
                for k in range(20):
                    with store.session(write=True) as session:
                        session.insert_instance(instance("c-1", n * 100 + k), [])
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(n,)) for n in range(1, 5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        with store.session() as session:
            assert session.count_instances("c-1") == 80

    def test_clients_and_signing_keys(self, store: Store) -> None:
        with store.session(write=True) as session:
            session.ensure_org("O@AdobeOrg", now=STAMP)
            assert session.ensure_client("k", "O@AdobeOrg", now=STAMP)
            assert not session.ensure_client("k", "X@AdobeOrg", now=STAMP)
            session.grant_sandbox("k", "prod")
            session.grant_sandbox("k", "prod")
            session.add_signing_key("kid", "secret", now=STAMP)
        with store.session() as session:
            client = session.get_client("k")
            assert client is not None and client.sandboxes == frozenset({"prod"})
            assert session.signing_keys() == {"kid": "secret"}
            assert session.get_client("missing") is None

    def test_counts_follow_inserts_and_deletes(self, store: Store) -> None:
        container(store)
        with store.session(write=True) as session:
            for n in range(1, 4):
                session.insert_instance(instance("c-1", n), [])
        with store.session(write=True) as session:
            record = session.get_instance("c-1", "i-2")
            assert record is not None and session.delete_instance(record)
        with store.session() as session:
            assert session.count_instances("c-1", TAG) == 2
            assert session.count_instances("c-1") == 2
            assert session.count_instances("c-1", "other") == 0

    def test_insert_instances_writes_what_one_by_one_inserts_write(self, store: Store) -> None:
        container(store)
        with store.session() as session:
            start = session.library_version("c-1")
        with store.session(write=True) as session:
            session.insert_instances(
                [(instance("c-1", n), ["xcore:tag:1"] if n > 1 else []) for n in range(1, 5)]
            )
        with store.session() as session:
            assert session.library_version("c-1") == start + 1  # one bump for the batch
            assert session.count_instances("c-1", TAG) == 4
            assert [r.instance_id for r in session.referrers("c-1", "xcore:tag:1")] == [
                "i-2",
                "i-3",
                "i-4",
            ]
            version, written = session.changes_since("c-1", start)
            assert version == start + 1
            assert sorted(written) == [
                (f"xcore:tag:{n:x}", TAG, f"i-{n}", 1, instance("c-1", n).body) for n in range(1, 5)
            ]
        reader = LibraryReader(store)  # what a snapshot's first build reads
        try:
            rows = {row[0]: row for row in reader.everything("c-1").written}
        finally:
            reader.close()
        assert rows["xcore:tag:3"] == ("xcore:tag:3", TAG, "i-3", 1, instance("c-1", 3).body)
