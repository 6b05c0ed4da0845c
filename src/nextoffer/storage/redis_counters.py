"""Cap counters in Redis (``serve --redis redis://host:port/N``), shared by every node.

One Redis string per counter, named ``nextoffer:cap:{<container>}:<key>``: the braces
are a Redis Cluster hash tag, so every counter of a container lives in one slot and a
reservation (always within one container) can run as one script there.

Each operation is one round trip and atomic on the server:

* ``read``     ``MGET``
* ``reserve``  a Lua script: checks every key against its limit, then increments all of
               them or none (Redis runs a script alone, so no other client sees a half)
* ``reserve_many``  a batch job's records: one run of ``_RESERVE_MANY`` per :data:`RUN`
               reservations of a container (each all-or-nothing on its own, in order),
               every run in one pipeline
* ``release``  a Lua script decrementing each key once per listing
* ``add``      the same script, incrementing

Each reads, in the same round trip, the markers that say Redis still holds its
containers' counters (``redis_markers.py``): a Redis that lost them raises
:class:`~nextoffer.errors.CountersLost` instead of answering zeros.

That is the same contract as :class:`~nextoffer.storage.counters.SqlCounters`: caps stay
exact across processes and nodes. ``on_loop`` offers ``read``, ``reserve`` and ``release``
as coroutines through redis-py's asyncio client (one client per event loop: its
connections belong to the loop that opened them), the same commands and scripts, so a
decision on a loop awaits Redis there instead of in a thread; there, the reservations
queued in one pass of the loop go in one round trip, one run of ``_RESERVE_MANY`` per
container (each reservation all-or-nothing on its own, in order). A Redis that cannot
be reached raises :class:`~nextoffer.errors.Unavailable`; the decision service then
counts capped offers as capped (caps fail closed) rather than failing the request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import redis
import redis.asyncio
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError, ResponseError

from nextoffer.errors import BadRequest, NextOfferError, Unavailable
from nextoffer.storage.counter_moves import CounterMoves
from nextoffer.storage.counters import (
    CounterKey,
    LoopCounters,
    counter_needs,
    erased,
    is_erased,
)
from nextoffer.storage.errors import redis_unavailable
from nextoffer.storage.redis_markers import PREFIX, CounterMarkers, marker_key
from nextoffer.storage.session import Session
from nextoffer.storage.store import Store

#: The scripts' first lines: ARGV[1] markers lead KEYS; -1 (nothing done) if one is gone.
_MARKERS = """
local m = tonumber(ARGV[1])
for i = 1, m do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    return -1
  end
end
"""

#: A Lua function every reservation script shares: ``take(k, a, n)`` checks the ``n``
#: counters ``KEYS[k + 1 .. k + n]``, counter ``i`` needing ``ARGV[a + 2i - 2]`` within
#: the limit ``ARGV[a + 2i - 1]``, and increments all of them or none; it returns the
#: 1-based positions of those without room ({} when it took them). Here and in the job
#: ledger's script (``redis_ledger.py``).
TAKE = """
local function take(k, a, n)
  local refused = {}
  for i = 1, n do
    local count = tonumber(redis.call('GET', KEYS[k + i]) or '0')
    if count + tonumber(ARGV[a + 2 * i - 2]) > tonumber(ARGV[a + 2 * i - 1]) then
      refused[#refused + 1] = i
    end
  end
  if #refused == 0 then
    for i = 1, n do
      redis.call('INCRBY', KEYS[k + i], ARGV[a + 2 * i - 2])
    end
  end
  return refused
end
"""

#: KEYS: the markers of the counters' containers (``redis_markers.py``), then the counters;
#: ARGV: how many markers, then for each counter how many it needs and its limit. Returns
#: -1 when a marker is gone (nothing changed), else the 1-based positions of the counters
#: without room (nothing changed), or {}.
_RESERVE = _MARKERS + TAKE + "return take(m, 2, #KEYS - m)\n"

#: Many reservations of one container in one run, each all-or-nothing on its own, in
#: order (a later one sees the increments of an earlier one). KEYS: the container's marker,
#: then every reservation's counters, one after another. ARGV: how many reservations; then
#: for each, its number of counters and, per counter, how many it needs and its limit.
#: Returns -1 when the marker is gone (nothing changed), else per reservation the 1-based
#: positions of its counters without room ({} when it was taken).
_RESERVE_MANY = (
    """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
"""
    + TAKE
    + """
local out = {}
local a = 2
local k = 1
for j = 1, tonumber(ARGV[1]) do
  local n = tonumber(ARGV[a])
  a = a + 1
  out[j] = take(k, a, n)
  k = k + n
  a = a + 2 * n
end
return out
"""
)

#: KEYS: the markers of the counters' containers, then the counters; ARGV: how many
#: markers, then how much to add to each counter (negative to take). Returns -1 when a
#: marker is gone (nothing changed), else 0.
_ADD = (
    _MARKERS
    + """
for i = m + 1, #KEYS do
  redis.call('INCRBY', KEYS[i], ARGV[i - m + 1])
end
return 0
"""
)

#: What the scripts answer when a marker is gone.
MISSING = -1
#: A queued reservation's answer when its container's marker was gone.
_GONE = object()
#: Reservations per run of a script that takes many (:meth:`RedisCounters.reserve_many`,
#: a Spark job's ledger): a run holds Redis, which serves nothing else meanwhile (online
#: reservations wait), for a time that grows with its reservations.
RUN = 64


#: Names one ``SCAN`` of an erasure asks for: Redis serves nothing else meanwhile, and a
#: thousand keep that near a millisecond among a million counters (docs/benchmarks.md,
#: "Erasures: a deleted profile's cap counters").
REDIS_ERASE_SCAN = 1_000


def redis_key(key: CounterKey) -> str:
    return f"{PREFIX}{{{key.container_id}}}:{key.encode()}"


def _code_of(name: bytes) -> str:
    """The counter code a :func:`redis_key` names (a marker's name gives no code of a
    counter: ``marker``)."""
    return name.decode("utf-8", "surrogateescape").partition("}:")[2]


def _reserve_args(wanted: Sequence[tuple[CounterKey, int]]) -> tuple[list[CounterKey], list[int]]:
    """The reservation script's counters and, per counter, how many it needs and its limit."""
    needs = counter_needs(wanted)
    keys = list(needs)
    args: list[int] = []
    for key in keys:
        n, limit = needs[key]
        args += [n, limit]
    return keys, args


def _release_args(keys: Sequence[CounterKey]) -> dict[CounterKey, int]:
    """What a release adds to each counter: minus one per listing."""
    counts: dict[CounterKey, int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) - 1
    return counts


def _containers(keys: Iterable[CounterKey]) -> list[str]:
    return sorted({key.container_id for key in keys})


def _by_container(counts: dict[CounterKey, int]) -> dict[str, dict[CounterKey, int]]:
    parts: dict[str, dict[CounterKey, int]] = {}
    for key, n in counts.items():
        parts.setdefault(key.container_id, {})[key] = n
    return parts


def _script_keys(containers: Sequence[str], keys: Iterable[CounterKey]) -> list[str]:
    """A script's KEYS: the containers' markers, then the counters."""
    return [marker_key(c) for c in containers] + [redis_key(k) for k in keys]


def _counts(values: Sequence[Any], unique: Sequence[CounterKey]) -> dict[CounterKey, int]:
    """The counts of an ``MGET`` of ``unique``'s counters (its markers after them)."""
    counted = values[: len(unique)]
    return {
        key: int(value) for key, value in zip(unique, counted, strict=True) if value is not None
    }


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisCounters:
    """Counters in Redis; thread-safe (redis-py pools its connections). Every operation
    checks, in its round trip, that Redis still holds its containers' counters
    (``redis_markers.py``)."""

    outside_database = True

    def __init__(
        self,
        client: redis.Redis,
        *,
        markers: CounterMarkers,
        url: str | None = None,
        **options: Any,
    ) -> None:
        """``url`` and ``options`` open the asynchronous clients of :attr:`on_loop` (none
        without a URL: then a caller on a loop reaches Redis from a thread)."""
        self._client = self.client = client
        self.markers = markers
        #: Moves of the counters between the database and Redis (``admin counters``).
        self.moves = CounterMoves(markers)
        self._reserve = client.register_script(_RESERVE)
        self._reserve_many = client.register_script(_RESERVE_MANY)
        self._add = client.register_script(_ADD)
        self.on_loop: LoopCounters | None = (
            LoopRedis(url, options, markers) if url is not None else None
        )

    @classmethod
    def from_url(
        cls, url: str, *, store: Store, max_connections: int = 50, timeout: float = 2.0
    ) -> RedisCounters:
        """Counters in the Redis at ``url``; ``store`` is the database that lists the
        containers whose counters Redis holds."""
        options: dict[str, Any] = {
            "max_connections": max_connections,
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "health_check_interval": 30,
        }
        try:
            client = redis.Redis.from_url(url, **options)
        except ValueError as exc:
            raise BadRequest(f"not a Redis URL: {url!r} ({exc})") from exc
        return cls(client, markers=CounterMarkers(store, client), url=url, **options)

    def ping(self) -> None:
        """Raise :class:`Unavailable` unless the server answers."""
        self.call(self._client.ping)

    def persistence_warning(self) -> str | None:
        """What a restart or a full memory of this Redis would lose of what nextoffer
        keeps there, read from its configuration (docs/deploy.md); ``None`` when it keeps
        it all, or when the server does not say (managed services often refuse
        ``CONFIG``). Every risk found, in one text."""
        try:
            config = self._client.config_get("append*")
        except RedisError:
            return None
        read = {_text(k): _text(v) for k, v in config.items()}
        try:
            found = self._client.config_get("maxmemory-policy").get("maxmemory-policy")
        except RedisError:
            found = None
        policy = _text(found) if found is not None else ""
        warnings: list[str] = []
        if policy.startswith("allkeys-"):
            warnings.append(
                f"Redis evicts any key when it is full (maxmemory-policy {policy}): cap "
                "counters can vanish (offers served past their caps) or a container's marker "
                "(its caps closed as lost); set maxmemory-policy noeviction (docs/deploy.md)"
            )
        elif policy.startswith("volatile-"):
            warnings.append(
                f"Redis evicts keys that carry an expiry when it is full (maxmemory-policy "
                f"{policy}): a Spark job's ledger of reservations can vanish while the job "
                "runs (its tasks then fail and the job ends in error) and a rate limit's "
                "bucket can refill early; cap counters and markers, which never expire, "
                "stay; set maxmemory-policy noeviction (docs/deploy.md)"
            )
        if read.get("appendonly") != "yes":
            warnings.append(
                "Redis keeps no append-only file (appendonly no): a restart of it loses the "
                "cap counters written since its last snapshot, and offers are then served "
                "past their caps; set appendonly yes and appendfsync always (docs/deploy.md)"
            )
        elif read.get("appendfsync") != "always":
            warnings.append(
                f"Redis syncs its append-only file {read.get('appendfsync')!r}, not 'always': "
                "a crash of its host can lose the last second of cap reservations, and "
                "offers are then served past their caps (docs/deploy.md)"
            )
        return "; ".join(warnings) or None

    def loop_client(self) -> redis.asyncio.Redis:
        """The running event loop's asynchronous client (opened at its first use), for
        other state kept beside the counters (``redis_rates``)."""
        if not isinstance(self.on_loop, LoopRedis):
            raise RuntimeError("these counters were opened without a URL: no loop client")
        return self.on_loop.here().client

    def read(self, keys: Sequence[CounterKey]) -> dict[CounterKey, int]:
        if not keys:
            return {}
        unique = list(dict.fromkeys(keys))
        containers = _containers(unique)
        names = [redis_key(k) for k in unique] + [marker_key(c) for c in containers]
        while True:  # the markers in the same MGET; at most twice (redis_markers.py)
            values = self.call(self._client.mget, names)
            marks = values[len(unique) :]
            absent = [c for c, v in zip(containers, marks, strict=True) if v is None]
            if not absent:
                return _counts(values, unique)
            self.markers.missing(absent)

    def reserve(self, wanted: Sequence[tuple[CounterKey, int]]) -> list[CounterKey]:
        keys, args = _reserve_args(wanted)
        if not keys:
            return []
        containers = _containers(keys)
        refused = self.checked(
            containers, self._reserve, _script_keys(containers, keys), [len(containers), *args]
        )
        return [keys[int(i) - 1] for i in refused]

    def reserve_many(
        self, wanted: Sequence[Sequence[tuple[CounterKey, int]]]
    ) -> list[list[CounterKey] | NextOfferError]:
        """Many reservations in one round trip (a batch job's records, handed over
        together): each all-or-nothing on its own, in order, as :meth:`reserve` would
        take them one after another. Per reservation, the counters without room (``[]``
        when taken), or the error of its container (:class:`CountersLost`).

        A run of ``_RESERVE_MANY`` per :data:`RUN` reservations of one container (their
        keys share its hash tag), every run written in one pipeline (not a transaction:
        each run stands alone). Raises :class:`Unavailable` when Redis cannot be
        reached; then some runs may have been taken, as a lost answer to :meth:`reserve`
        may have been."""
        out: list[list[CounterKey] | NextOfferError] = [[] for _ in wanted]
        runs: list[tuple[str, list[int], list[list[CounterKey]], list[str], list[int]]] = []
        open_runs: dict[str, int] = {}
        for i, one in enumerate(wanted):
            keys, args = _reserve_args(one)
            if not keys:
                continue
            container = keys[0].container_id
            if any(key.container_id != container for key in keys):
                raise ValueError("a reservation's counters belong to one container")
            at = open_runs.get(container)
            if at is None or len(runs[at][1]) >= RUN:
                at = open_runs[container] = len(runs)
                runs.append((container, [], [], [marker_key(container)], [0]))
            _, members, spans, names, run_args = runs[at]
            members.append(i)
            spans.append(keys)
            names += [redis_key(k) for k in keys]
            run_args[0] += 1
            run_args += [len(keys), *args]
        todo = list(range(len(runs)))
        while todo:  # as ``checked``: a run that found its marker gone is sent again
            pipe = self._client.pipeline(transaction=False)
            for r in todo:
                self._reserve_many(keys=runs[r][3], args=runs[r][4], client=pipe)
            answers = self.call(pipe.execute)
            again = []
            for r, answer in zip(todo, answers, strict=True):
                container, members, spans, _, _ = runs[r]
                if answer != MISSING:
                    for i, keys, refused in zip(members, spans, answer, strict=True):
                        out[i] = [keys[int(n) - 1] for n in refused]
                    continue
                try:
                    self.markers.missing([container])
                    again.append(r)
                except NextOfferError as exc:
                    for i in members:
                        out[i] = exc
            todo = again
        return out

    def release(self, keys: Sequence[CounterKey]) -> None:
        self._add_counts(_release_args(keys))

    def add(self, keys: Iterable[CounterKey], amount: int = 1) -> None:
        counts: dict[CounterKey, int] = {}
        for key in keys:
            counts[key] = counts.get(key, 0) + amount
        self._add_counts(counts)

    def _add_counts(self, counts: dict[CounterKey, int]) -> None:
        """One container at a time: one whose counters Redis lost keeps no other's counts
        out (an event counts in every container of its tenant); the first error is
        raised once every container was tried."""
        failed: NextOfferError | None = None
        for container, part in _by_container(counts).items():
            try:
                self.checked(
                    [container], self._add, _script_keys([container], part), [1, *part.values()]
                )
            except NextOfferError as exc:
                failed = failed or exc
        if failed is not None:
            raise failed

    def checked(
        self, containers: Sequence[str], script: Any, keys: list[str], args: Sequence[Any]
    ) -> Any:
        """``script``'s answer (a script of this client that leads its KEYS with the
        containers' markers and answers :data:`MISSING` when one is gone, as this module's
        and ``redis_ledger.py``'s do). A marker gone: :class:`CountersLost`, or (a
        container's first count) its marker placed and the script run again."""
        while True:
            answer = self.call(script, keys=keys, args=args)
            if answer != MISSING:
                return answer
            self.markers.missing(containers)

    def add_in(self, session: Session, keys: Sequence[CounterKey]) -> bool:
        return False  # not rows of the store's database: added after its commit

    def erase(
        self, scopes: Mapping[str, Iterable[str]], *, scan: int = REDIS_ERASE_SCAN
    ) -> Iterator[int]:
        """One ``SCAN`` of the counters' names a step, ``scan`` its count (it never blocks
        the server as ``KEYS`` would), those erased unlinked. Markers stay: the
        containers' other counters are still held."""
        wanted = erased(scopes)
        cursor = 0
        while wanted:
            cursor, names = self.call(self._client.scan, cursor, match=f"{PREFIX}*", count=scan)
            doomed = [name for name in names if is_erased(_code_of(name), wanted)]
            # Counted as unlinked: a SCAN may name a key twice, another walk take it first.
            yield int(self.call(self._client.unlink, *doomed)) if doomed else 0
            if cursor == 0:
                return

    def close(self) -> None:
        self._client.close()

    @staticmethod
    def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, a Redis error raised as :class:`Unavailable`."""
        try:
            return fn(*args, **kwargs)
        except RedisError as exc:
            raise redis_unavailable(exc) from exc


#: A reservation waiting for its loop's next run of ``_RESERVE_MANY``: its container (a
#: run's keys must share a hash tag), the script's keys and arguments, and the future its
#: caller awaits (the refused positions).
_Queued = tuple[str, list[str], list[int], "asyncio.Future[list[Any]]"]


class _LoopClient:
    """One event loop's asynchronous client and its scripts, and the reservations queued
    for its next round trip."""

    def __init__(self, url: str, options: dict[str, Any]) -> None:
        # A decision waits for a free connection (at most the socket timeout) rather than
        # failing when more are in flight than the pool holds.
        options = dict(options)
        timeout = options.get("socket_timeout")
        pool = redis.asyncio.BlockingConnectionPool.from_url(url, timeout=timeout, **options)
        self.client: redis.asyncio.Redis = redis.asyncio.Redis.from_pool(pool)  # closes it
        self.reserve_many: AsyncScript = self.client.register_script(_RESERVE_MANY)
        self.add: AsyncScript = self.client.register_script(_ADD)
        self.queued: list[_Queued] = []
        self.sending: asyncio.Task[None] | None = None
        #: The connection the reservations go through, taken from the pool at the first
        #: and kept: one batch at a time uses it (``sending``), so a batch needs no pool
        #: checkout, pipeline or script object (redis-py's ``Pipeline`` does the same
        #: inside, around them).
        self.connection: AbstractConnection | None = None

    async def round_trip(self, commands: list[list[Any]]) -> list[Any]:
        """``commands`` written at once and their replies read in order, an error reply
        (such as ``NOSCRIPT``) in its place; on a lost connection, retried as redis-py's
        pipeline is (its retry policy), raising :class:`RedisError` when that fails."""
        pool = self.client.connection_pool
        conn = self.connection
        if conn is None:
            conn = self.connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        else:
            # The pool's own check at a checkout: one the server closed meanwhile (a
            # restart, a timeout) is opened again before anything is sent on it.
            await pool.ensure_connection(conn)
        packed = conn.pack_commands(commands)

        async def once() -> list[Any]:
            await conn.send_packed_command(packed)
            replies: list[Any] = []
            try:
                for _ in commands:
                    try:
                        replies.append(await conn.read_response())
                    except ResponseError as exc:
                        replies.append(exc)
            except BaseException:
                # Replies still on the socket must not reach the next batch.
                await conn.disconnect(nowait=True)
                raise
            return replies

        async def lost(error: Exception) -> None:
            await conn.disconnect()

        replies: list[Any] = await conn.retry.call_with_retry(once, lost)
        return replies

    async def aclose(self) -> None:
        if self.connection is not None:
            await self.client.connection_pool.release(self.connection)
            self.connection = None
        await self.client.aclose()


class LoopRedis:
    """:class:`RedisCounters`' ``read``, ``reserve`` and ``release`` as coroutines of the
    running loop (``CapCounterStore.on_loop``), through one asyncio client per loop."""

    def __init__(self, url: str, options: dict[str, Any], markers: CounterMarkers) -> None:
        self._url = url
        self._options = options
        self._markers = markers
        self._clients: dict[asyncio.AbstractEventLoop, _LoopClient] = {}

    def here(self) -> _LoopClient:
        """The running loop's client, opened at its first use."""
        loop = asyncio.get_running_loop()
        found = self._clients.get(loop)
        if found is None:
            for gone in [other for other in self._clients if other.is_closed()]:
                del self._clients[gone]
            found = self._clients[loop] = _LoopClient(self._url, self._options)
        return found

    async def read(self, keys: Sequence[CounterKey]) -> dict[CounterKey, int]:
        if not keys:
            return {}
        unique = list(dict.fromkeys(keys))
        containers = _containers(unique)
        names = [redis_key(k) for k in unique] + [marker_key(c) for c in containers]
        while True:  # as RedisCounters.read
            values = await _awaited(self.here().client.mget(names))
            marks = values[len(unique) :]
            absent = [c for c, v in zip(containers, marks, strict=True) if v is None]
            if not absent:
                return _counts(values, unique)
            await asyncio.to_thread(self._markers.missing, absent)

    async def reserve(self, wanted: Sequence[tuple[CounterKey, int]]) -> list[CounterKey]:
        """Queue the reservation for this loop's next run and await its answer: the
        reservations of every decision that reached this point in one pass of the loop go
        to Redis in one round trip and one script run per container, each all-or-nothing
        on its own (as alone)."""
        keys, args = _reserve_args(wanted)
        if not keys:
            return []
        here = self.here()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        here.queued.append((keys[0].container_id, [redis_key(k) for k in keys], args, future))
        if here.sending is None:
            # Started for the next pass of the loop: reservations queued in this one join.
            here.sending = loop.create_task(self._send(here))
        refused = await future
        return [keys[int(i) - 1] for i in refused]

    async def _send(self, here: _LoopClient) -> None:
        """Send queued reservations, one round trip at a time (the script is loaded again
        if the server lost it), until none is queued."""
        try:
            while here.queued:
                batch, here.queued = here.queued, []
                batch = [item for item in batch if not item[3].done()]  # not given up
                if not batch:
                    continue
                try:
                    answers = await self._send_batch(here, batch)
                except RedisError as exc:
                    error = redis_unavailable(exc)
                    for *_, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for (*_, future), answer in zip(batch, answers, strict=True):
                    if future.done():
                        continue
                    if isinstance(answer, Exception):
                        future.set_exception(
                            redis_unavailable(answer) if isinstance(answer, RedisError) else answer
                        )
                    else:
                        future.set_result(answer)
        finally:
            here.sending = None

    async def _send_batch(self, here: _LoopClient, batch: list[_Queued]) -> list[Any]:
        """Per reservation of ``batch``, its refused positions (or the error of its run)."""
        answers = await _reserve_all(here, batch)
        for _ in range(3):
            again = [i for i, a in enumerate(answers) if isinstance(a, NoScriptError) or a is _GONE]
            if not again:
                break
            if any(isinstance(answers[i], NoScriptError) for i in again):
                # The server lost its scripts (a restart, SCRIPT FLUSH): a refused EVALSHA
                # ran nothing, so load the script and send those again.
                await here.client.script_load(_RESERVE_MANY)
            for container in {batch[i][0] for i in again if answers[i] is _GONE}:
                try:  # a first count: marked, then sent again; else Redis lost them
                    await asyncio.to_thread(self._markers.missing, [container])
                except NextOfferError as exc:
                    for i in again:
                        if batch[i][0] == container:
                            answers[i] = exc
            again = [i for i in again if not isinstance(answers[i], NextOfferError)]
            if again:
                sent = await _reserve_all(here, [batch[i] for i in again])
                for i, answer in zip(again, sent, strict=True):
                    answers[i] = answer
        return [
            Unavailable("the cap counters' markers keep disappearing") if a is _GONE else a
            for a in answers
        ]

    async def release(self, keys: Sequence[CounterKey]) -> None:
        """As ``RedisCounters.release``: one container at a time."""
        failed: NextOfferError | None = None
        for container, part in _by_container(_release_args(keys)).items():
            names = _script_keys([container], part)
            try:
                while True:  # as RedisCounters.checked
                    answer = await _awaited(self.here().add(keys=names, args=[1, *part.values()]))
                    if answer != MISSING:
                        break
                    await asyncio.to_thread(self._markers.missing, [container])
            except NextOfferError as exc:
                failed = failed or exc
        if failed is not None:
            raise failed

    async def aclose(self) -> None:
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()


async def _reserve_all(here: _LoopClient, batch: list[_Queued]) -> list[Any]:
    """``batch``'s reservations in one round trip: one run of ``_RESERVE_MANY`` per
    container (its keys share one hash tag), written together on the loop's reservation
    connection (not a transaction: each run, and each reservation in it, is
    all-or-nothing on its own). An answer per item: its refused positions, or its run's
    error."""
    groups: dict[str, list[int]] = {}
    for i, (container, *_) in enumerate(batch):
        groups.setdefault(container, []).append(i)
    sha = here.reserve_many.sha
    commands: list[list[Any]] = []
    for container, members in groups.items():
        keys: list[str] = [marker_key(container)]
        args: list[int] = [len(members)]
        for i in members:
            _, item_keys, item_args, _ = batch[i]
            keys += item_keys
            args.append(len(item_keys))
            args += item_args
        commands.append(["EVALSHA", sha, len(keys), *keys, *args])
    runs = await here.round_trip(commands)
    answers: list[Any] = [None] * len(batch)
    for members, run in zip(groups.values(), runs, strict=True):
        for n, i in enumerate(members):
            if isinstance(run, Exception):
                answers[i] = run
            elif run == MISSING:
                answers[i] = _GONE
            else:
                answers[i] = run[n]
    return answers


async def _awaited(call: Awaitable[Any]) -> Any:
    try:
        return await call
    except RedisError as exc:
        raise redis_unavailable(exc) from exc
