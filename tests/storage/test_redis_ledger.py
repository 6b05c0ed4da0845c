"""A Spark job's ledger of reservations in Redis, its script against a real Redis server
(``storage/redis_ledger.py``): a later attempt's record of a profile releases what the
earlier one reserved as it takes its own, an older attempt's changes nothing, a refused
one leaves the earlier reservation released, and no counter goes below zero."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import orjson
import pytest
import redis
from redis.crc import key_slot

from nextoffer.errors import Conflict, CountersLost
from nextoffer.storage import redis_ledger
from nextoffer.storage.counters import CounterKey
from nextoffer.storage.decision_path import DecisionRecord
from nextoffer.storage.group_commit import Outcome
from nextoffer.storage.redis_counters import RedisCounters, redis_key
from nextoffer.storage.redis_ledger import EXPIRY, LedgerGone, RedisLedger, ledger_key
from nextoffer.storage.redis_markers import marker_key


@pytest.fixture
def container() -> str:
    """A container of its own (the Redis server is shared by the run)."""
    return f"c-{uuid.uuid4().hex}"


@pytest.fixture
def ledger(counters: RedisCounters, container: str) -> RedisLedger:
    made = RedisLedger(counters, container, "job-1")
    made.open("run")
    return made


def everyone(container: str) -> CounterKey:
    return CounterKey(container, "offer-a", "globalCap")


def own(container: str, profile: str) -> CounterKey:
    return CounterKey(container, "offer-a", "profileCap", scope=profile)


def record(profile: str, reserve: Sequence[tuple[CounterKey, int]]) -> DecisionRecord:
    return DecisionRecord(
        proposition_id=str(uuid.uuid4()),
        container_id=reserve[0][0].container_id if reserve else "c",
        created="2026-06-01T12:00:00Z",
        created_us=0,
        profile_key=profile,
        body=None,
        day="2026-06-01",
        proposed_offers=["offer-a"] if reserve else [],
        reserve=reserve,
    )


def offer_a(container: str, profile: str, limit: int = 10) -> DecisionRecord:
    """Offer A for ``profile``: everyone's counter (``limit``) and its own (1)."""
    return record(profile, [(everyone(container), limit), (own(container, profile), 1)])


def one(ledger: RedisLedger, rec: DecisionRecord, attempt: str) -> Outcome:
    [outcome] = ledger.reserve([rec], [attempt])
    return outcome


def count(raw: redis.Redis, key: CounterKey) -> int | None:
    value = raw.get(redis_key(key))
    return None if value is None else int(value)


def field(raw: redis.Redis, ledger: RedisLedger, profile: str) -> list[object] | None:
    value = raw.hget(ledger.key, profile)
    return None if value is None else orjson.loads(value)


def test_a_later_attempt_supersedes_an_earlier_ones_reservation(
    ledger: RedisLedger, container: str, raw: redis.Redis
) -> None:
    assert one(ledger, offer_a(container, "p1"), "1") == []
    assert one(ledger, offer_a(container, "p2"), "1") == []
    assert (count(raw, everyone(container)), count(raw, own(container, "p1"))) == (2, 1)
    # Attempt 2 decides p1 again: attempt 1's reservation released, its own taken (a
    # profile's own cap of 1 has room again), the field names attempt 2.
    assert one(ledger, offer_a(container, "p1"), "2") == []
    assert (count(raw, everyone(container)), count(raw, own(container, "p1"))) == (2, 1)
    assert field(raw, ledger, "p1") == [
        "2",
        everyone(container).code,
        1,
        own(container, "p1").code,
        1,
    ]
    # A later record reserving nothing (no capped offer) releases it all the same.
    assert one(ledger, record("p1", []), "3") == []
    assert (count(raw, everyone(container)), count(raw, own(container, "p1"))) == (1, 0)
    assert field(raw, ledger, "p1") == ["3"]


def test_a_batchs_records_are_taken_in_order_across_its_runs(
    ledger: RedisLedger, container: str, raw: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One batch in runs of two records (one round trip): p1 by attempt 1, then by
    attempt 2 in the next run, releasing what the first reserved; p3 by attempt 3, then
    by the older attempt 2 in a later run, refused."""
    monkeypatch.setattr(redis_ledger, "RUN", 2)
    outcomes = ledger.reserve(
        [offer_a(container, p) for p in ("p1", "p2", "p1", "p3", "p3")],
        ["1", "1", "2", "3", "2"],
    )
    assert outcomes[:4] == [[], [], [], []]
    assert isinstance(outcomes[4], Conflict)
    assert count(raw, everyone(container)) == 3  # p1 once, p2, p3
    assert count(raw, own(container, "p1")) == 1
    assert [field(raw, ledger, p)[0] for p in ("p1", "p2", "p3")] == ["2", "1", "3"]  # type: ignore[index]


def test_an_older_attempts_record_is_refused_and_changes_nothing(
    ledger: RedisLedger, container: str, raw: redis.Redis
) -> None:
    assert one(ledger, offer_a(container, "p1"), "000000002.000000007") == []
    before = field(raw, ledger, "p1")
    # A zombie executor: an attempt launched before the one that holds the profile.
    zombie = one(ledger, offer_a(container, "p1"), "000000002.000000006")
    assert isinstance(zombie, Conflict)
    assert "later attempt" in str(zombie)
    assert (count(raw, everyone(container)), count(raw, own(container, "p1"))) == (1, 1)
    assert field(raw, ledger, "p1") == before
    # Nor does a zombie record reserving nothing release anything.
    assert isinstance(one(ledger, record("p1", []), "000000002.000000006"), Conflict)
    assert count(raw, own(container, "p1")) == 1


def test_a_refused_reservation_leaves_the_earlier_one_released(
    ledger: RedisLedger, container: str, raw: redis.Redis
) -> None:
    """Attempt 1 took everyone's last unit (a cap of 2) for p1 and p2; attempt 2's record
    of p1 wants a counter without room too: refused, nothing of it reserved, attempt 1's
    reservation of p1 released, and the field names attempt 2 with nothing, so the zombie
    attempt 1 cannot reserve p1 again."""
    full = CounterKey(container, "offer-b", "globalCap")
    raw.set(redis_key(full), 3)
    assert one(ledger, offer_a(container, "p1", limit=2), "1") == []
    assert one(ledger, offer_a(container, "p2", limit=2), "1") == []
    refused = one(ledger, record("p1", [(everyone(container), 2), (full, 3)]), "2")
    assert refused == [full]
    assert count(raw, everyone(container)) == 1  # p2's alone
    assert count(raw, own(container, "p1")) == 0
    assert count(raw, full) == 3
    assert field(raw, ledger, "p1") == ["2"]
    assert isinstance(one(ledger, offer_a(container, "p1", limit=2), "1"), Conflict)
    assert count(raw, everyone(container)) == 1
    # Attempt 2 decides p1 again (without B) and takes the unit its refusal freed.
    assert one(ledger, offer_a(container, "p1", limit=2), "2") == []
    assert count(raw, everyone(container)) == 2


def test_a_release_never_takes_a_counter_below_zero_nor_brings_one_back(
    ledger: RedisLedger, counters: RedisCounters, container: str, raw: redis.Redis
) -> None:
    """p1's own counter erased with the profile (``RedisCounters.erase``: the ledger's
    hash is no counter and stays), everyone's lowered meanwhile below what p1 reserved:
    superseding p1 takes each to zero at most, and leaves the erased one gone."""
    mine, all_ = own(container, "p1"), everyone(container)
    assert one(ledger, record("p1", [(all_, 10), (all_, 10), (mine, 5)]), "1") == []
    assert (count(raw, all_), count(raw, mine)) == (2, 1)
    assert sum(counters.erase({container: ["p1"]})) == 1
    assert raw.exists(ledger.key)
    raw.set(redis_key(all_), 1)
    assert one(ledger, record("p1", []), "2") == []
    assert count(raw, all_) == 0
    assert count(raw, mine) is None


def test_the_hash_lives_in_its_containers_slot_and_expires_long_after_its_last_record(
    ledger: RedisLedger, container: str, raw: redis.Redis
) -> None:
    assert ledger.key == ledger_key(container, "job-1")
    assert "|" not in ledger.key and ledger.key != marker_key(container)
    assert key_slot(ledger.key.encode()) == key_slot(redis_key(everyone(container)).encode())
    raw.expire(ledger.key, 60)
    assert one(ledger, offer_a(container, "p1"), "1") == []
    assert EXPIRY - 5 <= raw.ttl(ledger.key) <= EXPIRY


def test_a_gone_ledger_reserves_nothing(
    ledger: RedisLedger, container: str, raw: redis.Redis
) -> None:
    """Dropped when the run ended (or lost while the job ran): a record written after,
    by a zombie executor, reserves nothing, and the ledger says why."""
    assert one(ledger, offer_a(container, "p1"), "1") == []
    ledger.drop()
    assert not raw.exists(ledger.key)
    with pytest.raises(LedgerGone, match="is gone from Redis"):
        ledger.reserve([offer_a(container, "p2")], ["2"])
    assert ledger.gone is not None
    assert count(raw, everyone(container)) == 1
    assert count(raw, own(container, "p2")) is None


def test_a_redis_that_lost_its_counters_is_a_loss_not_a_first_count(
    ledger: RedisLedger, counters: RedisCounters, container: str, raw: redis.Redis
) -> None:
    """Redis restarted without its data (its counters, the marker and the job's hash
    gone): the marker is checked first, in the script's run, so the ledger neither takes
    the loss for a gone ledger nor reserves from zero; nor does the runner's open."""
    assert one(ledger, offer_a(container, "p1"), "1") == []
    names = list(raw.scan_iter(match=f"nextoffer:cap:{{{container}}}:*"))
    assert len(names) == 4  # the two counters, the marker and the hash
    raw.delete(*names)
    with pytest.raises(CountersLost):
        ledger.reserve([offer_a(container, "p2")], ["1"])
    with pytest.raises(CountersLost):
        RedisLedger(counters, container, "job-2").open("run")
    assert list(raw.scan_iter(match=f"nextoffer:cap:{{{container}}}:*")) == []
