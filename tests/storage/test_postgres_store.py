"""The storage contract on PostgreSQL: a real server, a fresh database per test."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from nextoffer.errors import Unavailable
from nextoffer.repository.records import InstanceRecord
from nextoffer.storage.store import Store
from support.backends import fresh_database
from support.store_contract import AUDIT, TAG, StoreContract, container, instance


@pytest.fixture
def store() -> Iterator[Store]:
    with fresh_database() as url:
        opened = Store.open(url, pool_size=8)
        yield opened
        opened.close()


class TestPostgresStore(StoreContract):
    def test_it_is_postgresql(self, store: Store) -> None:
        assert store.dialect == "postgresql"

    def test_racing_first_writes_of_a_schema_count_every_instance(self, store: Store) -> None:
        # No database-wide write lock here: the first insert of a schema in each of many
        # transactions at once must still end with one counts row holding all of them.
        container(store)
        barrier = threading.Barrier(8)
        errors: list[BaseException] = []

        def write(n: int) -> None:
            try:
                with store.session(write=True) as session:
                    barrier.wait(timeout=10)
                    session.insert_instance(instance("c-1", n), [])
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(n,)) for n in range(1, 9)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        with store.session() as session:
            assert session.count_instances("c-1", TAG) == 8

    def test_one_of_many_writers_with_the_same_etag_wins(self, store: Store) -> None:
        container(store)
        with store.session(write=True) as session:
            session.insert_instance(instance("c-1", 1), [])
        barrier = threading.Barrier(6)
        wins: list[bool] = []

        def write(n: int) -> None:
            body = {"xdm:name": f"writer {n}", "@id": "xcore:tag:1"}
            record = InstanceRecord("i-1", "c-1", TAG, "xcore:tag:1", 2, AUDIT, body, 1, 1)
            with store.session(write=True) as session:
                barrier.wait(timeout=10)
                wins.append(session.update_instance(record, [], expected_etag=1))

        threads = [threading.Thread(target=write, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(wins) == [False] * 5 + [True]

    def test_racing_bootstraps_of_one_tenant_both_succeed(self, store: Store) -> None:
        barrier = threading.Barrier(4)
        errors: list[BaseException] = []

        def bootstrap() -> None:
            try:
                with store.session(write=True) as session:
                    barrier.wait(timeout=10)
                    session.ensure_org("O@AdobeOrg", now="t")
                    session.ensure_sandbox("O@AdobeOrg", "prod", now="t")
                    assert session.ensure_client("k", "O@AdobeOrg", now="t")
                    session.grant_sandbox("k", "prod")
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=bootstrap) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []

    def test_report_rows_in_any_order_do_not_deadlock(self, store: Store) -> None:
        # Decisions propose several offers in any order; each adds to the offers' report
        # rows in its transaction. Written in key order at commit, they queue, not deadlock.
        offers = [f"xcore:offer:{n}" for n in range(6)]
        errors: list[BaseException] = []

        def record(n: int) -> None:
            order = offers[n:] + offers[:n]
            try:
                for _ in range(15):
                    with store.session(write=True) as session:
                        for offer in reversed(order) if n % 2 else order:
                            session.runtime.add_daily("c-1", "2026-01-01", offer, propositions=1)
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=record, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        with store.session() as session:
            report = session.runtime.offer_report(
                "c-1", first_day="2026-01-01", last_day="2026-01-31"
            )
        assert {row["offerId"]: row["propositions"] for row in report} == {o: 90 for o in offers}

    def test_cap_epochs_count_up(self, store: Store) -> None:
        container(store)
        for _ in range(3):
            with store.session(write=True) as session:
                session.bump_cap_epoch("c-1", "xcore:offer:1")
        with store.session() as session:
            assert session.cap_epochs("c-1") == {"xcore:offer:1": 3}


def test_an_unreachable_server_is_unavailable() -> None:
    with pytest.raises(Unavailable):
        Store.open("postgresql://nobody@127.0.0.1:1/none")


def test_a_postgres_scheme_url_opens_the_same_server() -> None:
    # libpq's "postgres://", which psql and hosting platforms hand out, as "postgresql://".
    with fresh_database(migrated=False) as url:
        assert url.startswith("postgresql://")
        store = Store.open("postgres://" + url.removeprefix("postgresql://"))
        try:
            assert store.dialect == "postgresql"
            with store.session(write=True) as session:  # migrated on open: the schema is there
                session.runtime.insert_profile(
                    "O", "prod", "p-1", {"tier": "gold"}, now="2026-03-04T10:00:00.000Z"
                )
        finally:
            store.close()
