"""Cap counters in Redis (``serve --redis redis://host:port/N``), shared by every node.

One Redis string per counter, named ``nextoffer:cap:{<container>}:<key>``: the braces
are a Redis Cluster hash tag, so every counter of a container lives in one slot and a
reservation (always within one container) can run as one script there.

Each operation is one round trip and atomic on the server:

* ``read``     ``MGET``
* ``reserve``  a Lua script: checks every key against its limit, then increments all of
               them or none (Redis runs a script alone, so no other client sees a half)
* ``release``  a Lua script decrementing each key once per listing
* ``add``      ``INCRBY`` per key in a ``MULTI`` transaction

That is the same contract as :class:`~nextoffer.storage.counters.SqlCounters`: caps stay
exact across processes and nodes. A Redis that cannot be reached raises
:class:`~nextoffer.errors.Unavailable`; the decision service then counts capped offers as
capped (caps fail closed) rather than failing the request.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import redis
from redis.exceptions import RedisError

from nextoffer.errors import BadRequest, Unavailable
from nextoffer.storage.counters import CounterKey, counter_needs

PREFIX = "nextoffer:cap:"

#: KEYS: the counters; ARGV: for each key, how many it needs and its limit.
#: Returns the 1-based positions of the keys without room (nothing changed), or {}.
_RESERVE = """
local refused = {}
for i, key in ipairs(KEYS) do
  local count = tonumber(redis.call('GET', key) or '0')
  if count + tonumber(ARGV[2 * i - 1]) > tonumber(ARGV[2 * i]) then
    refused[#refused + 1] = i
  end
end
if #refused > 0 then
  return refused
end
for i, key in ipairs(KEYS) do
  redis.call('INCRBY', key, ARGV[2 * i - 1])
end
return refused
"""

#: KEYS: the counters; ARGV: how much to take from each.
_RELEASE = """
for i, key in ipairs(KEYS) do
  redis.call('DECRBY', key, ARGV[i])
end
return 0
"""


def redis_key(key: CounterKey) -> str:
    return f"{PREFIX}{{{key.container_id}}}:{key.encode()}"


class RedisCounters:
    """Counters in Redis; thread-safe (redis-py pools its connections)."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._reserve = client.register_script(_RESERVE)
        self._release = client.register_script(_RELEASE)

    @classmethod
    def from_url(
        cls, url: str, *, max_connections: int = 50, timeout: float = 2.0
    ) -> RedisCounters:
        try:
            client = redis.Redis.from_url(
                url,
                max_connections=max_connections,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                health_check_interval=30,
            )
        except ValueError as exc:
            raise BadRequest(f"not a Redis URL: {url!r} ({exc})") from exc
        return cls(client)

    def ping(self) -> None:
        """Raise :class:`Unavailable` unless the server answers."""
        self._call(self._client.ping)

    def read(self, keys: Sequence[CounterKey]) -> dict[CounterKey, int]:
        if not keys:
            return {}
        unique = list(dict.fromkeys(keys))
        values = self._call(self._client.mget, [redis_key(k) for k in unique])
        return {
            key: int(value) for key, value in zip(unique, values, strict=True) if value is not None
        }

    def reserve(self, wanted: Sequence[tuple[CounterKey, int]]) -> list[CounterKey]:
        needs = counter_needs(wanted)
        if not needs:
            return []
        keys = list(needs)
        args: list[int] = []
        for key in keys:
            n, limit = needs[key]
            args += [n, limit]
        refused = self._call(self._reserve, keys=[redis_key(k) for k in keys], args=args)
        return [keys[int(i) - 1] for i in refused]

    def release(self, keys: Sequence[CounterKey]) -> None:
        counts: dict[CounterKey, int] = {}
        for key in keys:
            counts[key] = counts.get(key, 0) + 1
        if counts:
            self._call(
                self._release, keys=[redis_key(k) for k in counts], args=list(counts.values())
            )

    def add(self, keys: Iterable[CounterKey], amount: int = 1) -> None:
        counts: dict[CounterKey, int] = {}
        for key in keys:
            counts[key] = counts.get(key, 0) + amount
        if not counts:
            return
        pipe = self._client.pipeline(transaction=True)
        for key, n in counts.items():
            pipe.incrby(redis_key(key), n)
        self._call(pipe.execute)

    def close(self) -> None:
        self._client.close()

    @staticmethod
    def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RedisError as exc:
            raise Unavailable(
                f"the cap counter store (Redis) is unavailable: {exc}", retry_after=1
            ) from exc
