"""Request rates in Redis: one token bucket per name, shared by every process and node
that reaches the server (the Edge endpoints' per-datastream limit, ``serve --redis``).

A bucket is a Redis hash ``nextoffer:rate:{<name>}`` of its tokens and the time they were
counted at. Taking one is a Lua script, so atomic on the server; the time is the server's
(``TIME``), so nodes whose clocks differ share one bucket all the same. A bucket holds one
second's worth of tokens, refills at ``rate`` a second, and expires two seconds after its
last use: a full bucket is what a missing one stands for. The script's writes replicate as
effects (Redis 7 always; 5 and 6 with ``redis.replicate_commands``, called first), so
reading ``TIME`` before them is allowed.

It goes through the loop's asynchronous client of the cap counters
(:meth:`~nextoffer.storage.redis_counters.RedisCounters.loop_client`): one pool of
connections per event loop for both.
"""

from __future__ import annotations

import hashlib

from redis.exceptions import NoScriptError, RedisError

from nextoffer.storage.errors import redis_unavailable
from nextoffer.storage.redis_counters import RedisCounters

PREFIX = "nextoffer:rate:"

#: KEYS[1]: the bucket; ARGV[1]: its rate a second. Returns "0" when a token was taken,
#: else the seconds until one is there (a string: Lua numbers become integer replies).
_TAKE = """
if redis.replicate_commands then redis.replicate_commands() end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local rate = tonumber(ARGV[1])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(state[1]) or rate
local stamp = tonumber(state[2]) or now
if now > stamp then
  tokens = math.min(rate, tokens + (now - stamp) * rate)
else
  tokens = math.min(rate, tokens)
  now = stamp
end
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
           'stamp', string.format('%.17g', now))
redis.call('EXPIRE', KEYS[1], 2)
return string.format('%.17g', wait)
"""
_TAKE_SHA = hashlib.sha1(_TAKE.encode()).hexdigest()


class RedisRates:
    """Token buckets in Redis, taken from on the running event loop."""

    def __init__(self, counters: RedisCounters) -> None:
        self._counters = counters

    async def take(self, name: str, rate: int) -> float:
        """Take one request from ``name``'s bucket of ``rate`` a second: ``0.0`` when it
        is admitted, else the seconds until one would be (nothing taken). Raises
        :class:`~nextoffer.errors.Unavailable` when Redis cannot be reached."""
        client = self._counters.loop_client()
        key = f"{PREFIX}{{{name}}}"
        try:
            try:
                reply = await client.evalsha(_TAKE_SHA, 1, key, rate)
            except NoScriptError:  # a restarted server, or the first call: load it
                reply = await client.eval(_TAKE, 1, key, rate)
        except RedisError as exc:
            raise redis_unavailable(exc, "the rate store") from exc
        return float(reply)
