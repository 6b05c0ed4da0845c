"""The cap-counter contract (``storage/counters.py``): one suite every implementation
passes. Subclass it and give a ``counters`` fixture (a fresh, empty store per test)."""

from __future__ import annotations

import threading

from nextoffer.storage.counters import CapCounterStore, CounterKey

A = CounterKey("c-1", "xcore:offer:1", "globalCap")
B = CounterKey("c-1", "xcore:offer:2", "globalCap")
P = CounterKey(
    "c-1", "xcore:offer:1", "profileCap", scope="p|1%", placement="xcore:placement:9", period=7
)


class CounterContract:
    def test_missing_counters_read_as_absent(self, counters: CapCounterStore) -> None:
        assert counters.read([A, B]) == {}
        assert counters.read([]) == {}

    def test_reserve_increments_every_key(self, counters: CapCounterStore) -> None:
        assert counters.reserve([(A, 5), (B, 5)]) == []
        assert counters.reserve([(A, 5)]) == []
        assert counters.read([A, B]) == {A: 2, B: 1}

    def test_reserve_is_all_or_nothing(self, counters: CapCounterStore) -> None:
        assert counters.reserve([(A, 1)]) == []
        assert counters.reserve([(A, 1), (B, 1)]) == [A]
        assert counters.read([A, B]) == {A: 1}

    def test_a_key_listed_twice_needs_room_for_two(self, counters: CapCounterStore) -> None:
        assert counters.reserve([(A, 1), (A, 1)]) == [A]
        assert counters.read([A]) == {}
        assert counters.reserve([(A, 2), (A, 2)]) == []
        assert counters.read([A]) == {A: 2}

    def test_release_undoes_a_reservation(self, counters: CapCounterStore) -> None:
        assert counters.reserve([(A, 1), (B, 3)]) == []
        counters.release([A, B])
        assert counters.read([A, B]) == {A: 0, B: 0}
        assert counters.reserve([(A, 1)]) == []

    def test_add_counts_past_any_limit(self, counters: CapCounterStore) -> None:
        counters.add([A, A, B], 2)
        assert counters.read([A, B]) == {A: 4, B: 2}
        assert counters.reserve([(A, 4)]) == [A]

    def test_keys_differ_by_every_part(self, counters: CapCounterStore) -> None:
        counters.add([P])
        assert counters.read(
            [P, CounterKey("c-1", "xcore:offer:1", "profileCap", scope="p|1%")]
        ) == {P: 1}

    def test_concurrent_reservations_meet_the_limit_exactly(
        self, counters: CapCounterStore
    ) -> None:
        limit, threads, attempts = 25, 8, 10
        granted: list[int] = []

        def take() -> None:
            mine = 0
            for _ in range(attempts):
                if counters.reserve([(A, limit), (B, 1000)]) == []:
                    mine += 1
            granted.append(mine)

        workers = [threading.Thread(target=take) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert sum(granted) == limit
        assert counters.read([A, B]) == {A: limit, B: limit}

    def test_erase_deletes_the_scopes_counters_of_each_container_only(
        self, counters: CapCounterStore
    ) -> None:
        def scoped(container: str, scope: str, **more: object) -> CounterKey:
            return CounterKey(container, "xcore:offer:1", "profileCap", scope=scope, **more)  # type: ignore[arg-type]

        doomed = [
            P,  # "p|1%": a scope holding the code's separator and its escape
            scoped("c-1", "identity:Email:Ann@x", period=3),
            scoped("c-1", "identity:Email:Ann@x", placement="xcore:placement:2"),
            scoped("c-2", "p-9"),
        ]
        kept = [
            A,  # everyone's
            scoped("c-1", "identity:Email:ann@x"),  # another identity by one letter's case
            scoped("c-1", "p|1"),  # a scope the erased one ends with
            scoped("c-2", "identity:Email:Ann@x"),  # erased in c-1, not in c-2
            scoped("c-3", "p-9"),
        ]
        counters.add([*doomed, *kept])
        steps = list(counters.erase({"c-1": {"p|1%", "identity:Email:Ann@x"}, "c-2": {"p-9"}}))
        assert sum(steps) == len(doomed)
        assert counters.read([*doomed, *kept]) == dict.fromkeys(kept, 1)
        assert list(counters.erase({})) == []  # nothing to erase: no walk

    def test_erase_walks_in_bounded_steps(self, counters: CapCounterStore) -> None:
        keys = [
            CounterKey("c-1", f"xcore:offer:{n}", "profileCap", scope=f"p-{n % 2}")
            for n in range(12)
        ]
        counters.add(keys)
        steps = list(counters.erase({"c-1": {"p-0"}}, scan=5))
        # A step reads five keys (Redis's SCAN five slots of its table, which holds at
        # least as many as it has keys).
        assert len(steps) >= 3
        assert sum(steps) == 6
        assert counters.read(keys) == {key: 1 for key in keys if key.scope == "p-1"}
