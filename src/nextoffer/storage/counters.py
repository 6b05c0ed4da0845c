"""Cap counters behind one interface: read, reserve under limits, release, add.

A counter is named by a :class:`CounterKey`: the offer, the capping rule, the placement
(rules whose entity is the placement count each placement apart), the scope (everyone, or
one profile) and the period (repeating rules count per day/week/month period). The engine
never counts; the service reads counters before a decision and *reserves* the ones the
decision consumes: all keys are incremented together if every one stays within its limit,
otherwise none is and the service decides again with fresh counts. That makes caps exact
under any concurrency, across processes and nodes.

Implementations: :class:`SqlCounters` here (SQLite, PostgreSQL), ``RedisCounters`` in
``redis_counters.py``. ``tests/support/counter_contract.py`` is the suite both pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Connection, bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from nextoffer.errors import NextOfferError
from nextoffer.storage import tables as t
from nextoffer.storage.rows import json_text
from nextoffer.storage.session import Session
from nextoffer.storage.store import Store

#: The scope of counters that count propositions to everyone.
EVERYONE = ""


@dataclass(frozen=True, slots=True)
class CounterKey:
    container_id: str
    offer_id: str
    rule: str  # e.g. "globalCap", "profileCap", "f:<digest>"
    scope: str = EVERYONE  # EVERYONE or a profile key
    placement: str = ""  # "" unless the rule counts each placement apart
    period: int = 0  # 0 for rules that never reset
    #: :meth:`encode`'s string, made once: a key is encoded and hashed several times on
    #: its way through a decision and its batch.
    code: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "code",
            f"{self.container_id}|{self.offer_id}|{self.rule}|{self.placement}|{self.period}"
            f"|{scope_code(self.scope)}",
        )

    def __hash__(self) -> int:
        # Equal keys have equal codes (the code is a function of the fields), and a
        # string's hash is computed once: cheaper than hashing a tuple of six fields.
        return hash(self.code)

    def encode(self) -> str:
        """One string per counter; ``|`` cannot occur in ids, rule names or periods."""
        return self.code


#: Counter keys an erasure's step reads (``SqlCounters.erase``) or asks Redis to scan.
ERASE_SCAN = 5_000


def scope_code(scope: str) -> str:
    """A scope as it ends a counter's code: after the code's last ``|``, which it never
    holds."""
    return scope.replace("%", "%25").replace("|", "%7C")


#: Container and :func:`scope_code` pairs: the counters an erasure deletes.
Erased = Set[tuple[str, str]]


def erased(scopes: Mapping[str, Iterable[str]]) -> Erased:
    """The pairs :meth:`CapCounterStore.erase` matches codes against: ``scopes``' by
    container, coded."""
    return {(container, scope_code(s)) for container, named in scopes.items() for s in named}


def is_erased(code: str, wanted: Erased) -> bool:
    """Whether the counter of ``code`` (a :meth:`CounterKey.encode`) is one of ``wanted``."""
    return (code.partition("|")[0], code.rpartition("|")[2]) in wanted


class LoopCounters(Protocol):
    """A counter store's round trips as coroutines of the running event loop: awaiting
    one never blocks the loop (``CapCounterStore.on_loop``). Same contract as the
    synchronous methods of the same names."""

    async def read(self, keys: Sequence[CounterKey]) -> dict[CounterKey, int]: ...

    async def reserve(self, wanted: Sequence[tuple[CounterKey, int]]) -> list[CounterKey]: ...

    async def release(self, keys: Sequence[CounterKey]) -> None: ...

    async def aclose(self) -> None:
        """Close what the running loop holds."""
        ...


class CapCounterStore(Protocol):
    """Where cap counters live. Every method is atomic on its own."""

    #: The store's coroutine form, when it has one (Redis): a caller on an event loop
    #: then awaits its round trips instead of blocking the loop or a thread for them.
    on_loop: LoopCounters | None
    #: Whether the counters live outside the store's database (Redis). A process with the
    #: database's counters leaves the erasures of a container Redis counts for to a
    #: process with Redis (``service/retention.py``).
    outside_database: bool

    def read(self, keys: Sequence[CounterKey]) -> dict[CounterKey, int]:
        """Current counts (missing counters are 0)."""
        ...

    def reserve(self, wanted: Sequence[tuple[CounterKey, int]]) -> list[CounterKey]:
        """Add 1 to every key whose count is below its limit — all or nothing.

        Returns ``[]`` when all were incremented, else the keys already at their limit
        (and nothing changed). A key listed twice needs room for two.
        """
        ...

    def reserve_many(
        self, wanted: Sequence[Sequence[tuple[CounterKey, int]]]
    ) -> list[list[CounterKey] | NextOfferError]:
        """Many reservations (a batch job's records, handed over together), each
        all-or-nothing on its own, in order, as :meth:`reserve` would take them one after
        another: per reservation, the keys without room (``[]`` when taken), or the error
        of its counters alone. Raises when the store cannot be reached at all."""
        ...

    def release(self, keys: Sequence[CounterKey]) -> None:
        """Undo a reservation whose decision could not be recorded."""
        ...

    def add(self, keys: Iterable[CounterKey], amount: int = 1) -> None:
        """Count events that happened anyway (impressions, clicks): no limit applies."""
        ...

    def add_in(self, session: Session, keys: Sequence[CounterKey]) -> bool:
        """:meth:`add` 1 to each key in ``session``'s write transaction, when the counters
        are rows of that database: they are then counted once with what the transaction
        stores, or not at all. ``False`` (nothing added) when they live elsewhere: the
        caller adds them after its commit."""
        ...

    def erase(
        self, scopes: Mapping[str, Iterable[str]], *, scan: int = ERASE_SCAN
    ) -> Iterator[int]:
        """Delete every counter of ``scopes`` (by container: each container's scopes),
        whatever its offer, rule, placement and period: a deleted profile's. A step at a
        time, each bounded and in transactions of its own, yielding how many it deleted;
        the caller paces them and may stop between two (then a later call starts over)."""
        ...

    def close(self) -> None: ...


def counter_needs(wanted: Sequence[tuple[CounterKey, int]]) -> dict[CounterKey, tuple[int, int]]:
    """Per key: how many increments it needs, and its limit."""
    needs: dict[CounterKey, tuple[int, int]] = {}
    for key, limit in wanted:
        count, _ = needs.get(key, (0, limit))
        needs[key] = (count + 1, limit)
    return needs


#: One statement text for any number of keys (a JSON array on SQLite, an array parameter
#: on PostgreSQL), so the driver prepares it once and no placeholder list is built.
COUNTS_SQL = {
    "sqlite": "SELECT counter_key, count FROM cap_counters"
    " WHERE counter_key IN (SELECT value FROM json_each(?))",
    "postgresql": "SELECT counter_key, count FROM cap_counters WHERE counter_key = ANY(%s)",
}


def read_counts(
    execute: Callable[[str, tuple[Any, ...]], Iterable[Any]], dialect: str, codes: Sequence[str]
) -> dict[str, int]:
    """Stored counts by encoded key (missing counters are absent): the one way counters
    are read in SQL, on a driver connection (``execute`` is ``sqlite3.Connection.execute``)
    or a SQLAlchemy one (``Connection.exec_driver_sql``)."""
    if not codes:
        return {}
    return counts_from(execute(*counts_statement(dialect, codes)))


def counts_statement(dialect: str, codes: Sequence[str]) -> tuple[str, tuple[Any, ...]]:
    """The statement :func:`read_counts` runs, and its parameters (for a driver that
    awaits it: ``pg_path``'s asynchronous connections)."""
    keys: Any = json_text(list(codes)) if dialect == "sqlite" else list(codes)
    return COUNTS_SQL[dialect], (keys,)


def counts_from(rows: Iterable[Any]) -> dict[str, int]:
    """Counts by encoded key from the rows of :func:`counts_statement`."""
    return {code: int(count) for code, count in rows}


_BUMP_UNDER = (
    update(t.cap_counters)
    .where(
        t.cap_counters.c.counter_key == bindparam("k"),
        t.cap_counters.c.count + bindparam("n") <= bindparam("lim"),
    )
    .values(count=t.cap_counters.c.count + bindparam("n"))
)


class SqlCounters:
    """Counters in the ``cap_counters`` table of the main database."""

    #: Reads and reservations go through the store's sessions, in a thread.
    on_loop: LoopCounters | None = None
    outside_database = False

    def __init__(self, store: Store) -> None:
        self._store = store

    def read(self, keys: Sequence[CounterKey]) -> dict[CounterKey, int]:
        if not keys:
            return {}
        by_code = {key.encode(): key for key in keys}
        with self._store.session() as session:
            found = _read(session.conn, list(by_code))
        return {by_code[code]: count for code, count in found.items()}

    def reserve(self, wanted: Sequence[tuple[CounterKey, int]]) -> list[CounterKey]:
        needs = counter_needs(wanted)
        if not needs:
            return []
        failed: list[CounterKey] = []
        try:
            with self._store.session(write=True) as session:
                self._ensure(session.conn, needs)
                # Rows in one order in every transaction: two PostgreSQL reservations of
                # the same counters then queue instead of deadlocking.
                for key, (n, limit) in sorted(needs.items(), key=_code_of_item):
                    params = {"k": key.encode(), "n": n, "lim": limit}
                    if session.conn.execute(_BUMP_UNDER, params).rowcount != 1:
                        failed.append(key)
                if failed:
                    raise _Refused
        except _Refused:
            return failed
        return []

    def reserve_many(
        self, wanted: Sequence[Sequence[tuple[CounterKey, int]]]
    ) -> list[list[CounterKey] | NextOfferError]:
        """One :meth:`reserve` after another (the database's counters are written in the
        decision path's own transactions; nothing wraps them in another store)."""
        return [self.reserve(one) for one in wanted]

    def release(self, keys: Sequence[CounterKey]) -> None:
        self._bump(keys, -1)

    def add(self, keys: Iterable[CounterKey], amount: int = 1) -> None:
        self._bump(list(keys), amount)

    def add_in(self, session: Session, keys: Sequence[CounterKey]) -> bool:
        _bump_in(session.conn, keys, 1)
        return True

    def erase(
        self, scopes: Mapping[str, Iterable[str]], *, scan: int = ERASE_SCAN
    ) -> Iterator[int]:
        """The table in key order, ``scan`` keys a step, read in a read transaction (the
        scope, the key's last part, has no index: one on the hottest insert would cost
        every reservation), and those erased deleted by key in a write transaction."""
        wanted = erased(scopes)
        k = t.cap_counters.c
        after = ""
        while wanted:
            with self._store.session() as session:
                codes = (
                    session.conn.execute(
                        select(k.counter_key)
                        .where(k.counter_key > after)
                        .order_by(k.counter_key)
                        .limit(scan)
                    )
                    .scalars()
                    .all()
                )
            doomed = [code for code in codes if is_erased(code, wanted)]
            deleted = 0
            if doomed:  # counted as deleted, not as found: another walk may take some first
                with self._store.session(write=True) as session:
                    deleted = session.conn.execute(
                        delete(t.cap_counters).where(k.counter_key.in_(doomed))
                    ).rowcount
            yield deleted
            if len(codes) < scan:
                return
            after = codes[-1]

    def close(self) -> None:
        """The counters share the store's connections; nothing of their own to close."""

    def _bump(self, keys: Sequence[CounterKey], amount: int) -> None:
        if not keys:
            return
        with self._store.session(write=True) as session:
            _bump_in(session.conn, keys, amount)

    @staticmethod
    def _ensure(conn: Connection, keys: Iterable[CounterKey]) -> None:
        """Create missing counters at 0, so every increment is one conditional UPDATE.

        Two writers may create the same counter at once (PostgreSQL has no database-wide
        write lock), so the insert ignores rows that appeared in the meantime.
        """
        wanted = {key.encode(): key for key in sorted(keys, key=CounterKey.encode)}
        present = _read(conn, list(wanted))
        missing = [
            {"counter_key": code, "container_id": key.container_id, "count": 0}
            for code, key in wanted.items()
            if code not in present
        ]
        if missing:
            dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
            conn.execute(dialect.insert(t.cap_counters).on_conflict_do_nothing(), missing)


def _read(conn: Connection, codes: Sequence[str]) -> dict[str, int]:
    return read_counts(conn.exec_driver_sql, conn.dialect.name, codes)


def _code_of_item(item: tuple[CounterKey, object]) -> str:
    return item[0].encode()


class _Refused(Exception):
    """Raised inside the reserve transaction to roll it back."""


def _bump_in(conn: Connection, keys: Sequence[CounterKey], amount: int) -> None:
    """Add ``amount`` to each key (once per listing) in ``conn``'s write transaction: one
    upsert, rows in key order, the order every writer takes them in (a PostgreSQL
    decision batch locks its counters in it too), so writers of the same counters queue
    instead of deadlocking."""
    if not keys:
        return
    counts: dict[CounterKey, int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + amount
    rows = [
        {"counter_key": key.encode(), "container_id": key.container_id, "count": n}
        for key, n in sorted(counts.items(), key=_code_of_item)
    ]
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    upsert = dialect.insert(t.cap_counters)
    conn.execute(
        upsert.on_conflict_do_update(
            index_elements=[t.cap_counters.c.counter_key],
            set_={"count": t.cap_counters.c.count + upsert.excluded["count"]},
        ),
        rows,
    )
