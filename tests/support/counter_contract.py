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
