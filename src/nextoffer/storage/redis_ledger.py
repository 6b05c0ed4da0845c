"""The ledger of a Spark job's reservations in Redis: with Redis counters, each profile's
reservations count once however many attempts of its task decided it (docs/batch.md).

A reservation commits in Redis before its record's database transaction, so the database
ledger (``ledger.DecisionLedger``) cannot release an earlier attempt's reservation: the
release must commit where the reservation did, in the same step. So Redis keeps a ledger
of its own per job, a hash beside the container's counters,
``nextoffer:cap:{<container>}:ledger:<job>`` (the counters' hash tag: one script reads
and writes it with them; no ``|`` in its name, which every counter's has, so erasures and
moves of counters pass it by). A field per profile holds the attempt that recorded it
last and the counters that record reserved, and a writer batch's records are taken in
order by runs of one script (:data:`_RESERVE`, :data:`RUN` records a run, every run of
the batch in one round trip):

* a record of an attempt older than the field's (a zombie executor) is refused and
  changes nothing;
* any other (a later attempt, or the same one recording the profile again) releases what
  the field's record reserved, then reserves its own counters — all within their limits,
  or none — and rewrites the field with its attempt and what it reserved (nothing, when
  refused: the earlier reservation stays released, and the field still names the attempt,
  so a zombie older than it cannot reserve in the gap before its next record).

A release takes from a counter at most what it holds, and skips a counter that is gone
(erased with its profile): a counter never goes below zero nor comes back.

The runner makes the hash (:meth:`RedisLedger.open`, its ``""`` field) before Spark
decides, and deletes it when the run ends (:meth:`RedisLedger.drop`). A run that finds it
gone refuses every record (:class:`LedgerGone`): a zombie still writing after the run
ended counts nothing, and a hash lost while the job runs fails its tasks rather than
count a profile twice. One its runner left (killed before ``drop``) expires
:data:`EXPIRY` seconds after the job's last record (every run renews it): the hashes are
spread over every container's slot, so nothing could list them but a ``SCAN`` of every
counter's name. A Redis that lost its data is still a loss: the container's marker
(``redis_markers.py``) is checked first, in the same run, as every counter operation does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nextoffer.errors import Conflict, Unavailable
from nextoffer.storage.counters import CounterKey, counter_needs
from nextoffer.storage.decision_path import DecisionRecord
from nextoffer.storage.group_commit import Outcome
from nextoffer.storage.redis_counters import MISSING, RUN, TAKE, RedisCounters, redis_key
from nextoffer.storage.redis_markers import PREFIX, marker_key

#: Seconds a job's hash outlives its last record (renewed by every run): long past any
#: job, so only a hash its runner left behind ever expires.
EXPIRY = 7 * 24 * 3600

#: What the scripts answer when the job's hash is gone (its marker is there).
GONE = -2

#: KEYS: the container's marker, the job's hash. ARGV: the hash's expiry, the run (its
#: ``""`` field). Returns -1 when the marker is gone (nothing changed), else 0.
_OPEN = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
redis.call('HSET', KEYS[2], '', ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 0
"""

#: KEYS: the container's marker, the job's hash, then every record's counters, one record
#: after another. ARGV: the counters' name prefix (``nextoffer:cap:{<container>}:``), the
#: hash's expiry, how many records; then per record its profile, its attempt, its number
#: of counters and, per counter, how many it needs and its limit. Returns -1 when the
#: marker is gone, -2 when the hash is (nothing changed either way), else per record: 0
#: when an attempt later than its own holds the profile (nothing changed), or the 1-based
#: positions of its counters without room ({} when it reserved them all): ``take``
#: (``redis_counters.TAKE``), the plain reservation's own check and increments.
#: A field is JSON, ``[attempt, code, n, code, n, ...]``: a release names its counters
#: from their codes, under the prefix — in the declared keys' slot (the hash tag), where
#: Redis lets a script reach keys it did not declare.
_RESERVE = (
    """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  return -2
end
"""
    + TAKE
    + """
-- Whether attempt a sorts before b, byte by byte (Lua's own < follows the server's
-- locale; Python's, which orders the database ledger, follows the bytes).
local function before(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then
      return x < y
    end
  end
  return #a < #b
end
local prefix = ARGV[1]
local records = tonumber(ARGV[3])
-- The records' fields in one read, and written back in one write: a field read again in
-- the run (a profile twice) is the value the run gave it.
local profiles = {}
local a = 4
for j = 1, records do
  profiles[j] = ARGV[a]
  a = a + 3 + 2 * tonumber(ARGV[a + 2])
end
local stored = redis.call('HMGET', KEYS[2], unpack(profiles))
local fields = {}
for j = 1, records do
  if stored[j] and fields[profiles[j]] == nil then
    fields[profiles[j]] = stored[j]
  end
end
local written, seen = {}, {}
local out = {}
a = 4
local k = 2
for j = 1, records do
  local profile, attempt, n = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  a = a + 3
  local held = fields[profile]
  local prior = held and cjson.decode(held)
  if prior and before(attempt, prior[1]) then
    out[j] = 0
  else
    if prior then
      for i = 2, #prior, 2 do
        local name = prefix .. prior[i]
        local count = tonumber(redis.call('GET', name) or '0')
        if count > 0 then
          redis.call('DECRBY', name, math.min(count, prior[i + 1]))
        end
      end
    end
    local refused = take(k, a, n)
    local field = {attempt}
    if #refused == 0 then
      for i = 1, n do
        field[#field + 1] = string.sub(KEYS[k + i], #prefix + 1)
        field[#field + 1] = tonumber(ARGV[a + 2 * i - 2])
      end
    end
    if not seen[profile] then
      seen[profile] = true
      written[#written + 1] = profile
    end
    fields[profile] = cjson.encode(field)
    out[j] = refused
  end
  k = k + n
  a = a + 2 * n
end
if #written > 0 then
  local pairs_ = {}
  for _, profile in ipairs(written) do
    pairs_[#pairs_ + 1] = profile
    pairs_[#pairs_ + 1] = fields[profile]
  end
  redis.call('HSET', KEYS[2], unpack(pairs_))
end
redis.call('EXPIRE', KEYS[2], ARGV[2])
return out
"""
)


def ledger_key(container_id: str, job_id: str) -> str:
    """The job's hash: in its container's counters' slot, with no ``|`` (no counter's
    name) and not the marker's, nor a counter move's."""
    return f"{PREFIX}{{{container_id}}}:ledger:{job_id}"


class LedgerGone(Unavailable):
    """The job's ledger is not in Redis (its run ended, or it was lost while the job ran):
    nothing is reserved; a task that meets it fails (``service/batch/spark.py``)."""


class RedisLedger:
    """One Spark job's ledger in Redis (see the module): reserves records' counters as a
    later attempt of their profiles, releasing what an earlier attempt reserved."""

    def __init__(self, counters: RedisCounters, container_id: str, job_id: str) -> None:
        self._counters = counters
        self._container = container_id
        self._job = job_id
        self.key = ledger_key(container_id, job_id)
        self._prefix = f"{PREFIX}{{{container_id}}}:"
        self._open = counters.client.register_script(_OPEN)
        self._reserve = counters.client.register_script(_RESERVE)
        #: Why a run found the hash gone (the task that meets it fails), once one did.
        self.gone: str | None = None

    def open(self, run: str) -> None:
        """Make the job's hash (the runner, before Spark decides)."""
        self._counters.checked(
            [self._container], self._open, [marker_key(self._container), self.key], [EXPIRY, run]
        )

    def drop(self) -> None:
        """Delete the job's hash (the runner, when its run ends): a record written later
        reserves nothing."""
        self._counters.call(self._counters.client.delete, self.key)

    def reserve(self, records: Sequence[DecisionRecord], attempts: Sequence[str]) -> list[Outcome]:
        """Each record's reservation as ``attempts``' (in order): ``[]`` taken, the
        counters without room (nothing reserved, the profile's earlier reservation
        released), or :class:`Conflict` when a later attempt holds the profile (nothing
        changed). Raises :class:`LedgerGone` when the hash is gone, and what the counters
        raise when Redis lost them or cannot be reached.

        One round trip: a script run per :data:`RUN` records, sent together. Each record
        is all-or-nothing on its own, so splitting a batch changes no outcome, and a run
        holds Redis (which serves nothing else meanwhile) for a bounded time."""
        runs: list[tuple[list[str], list[Any]]] = []
        spans: list[list[CounterKey]] = []
        for first in range(0, len(records), RUN):
            names = [marker_key(self._container), self.key]
            some = records[first : first + RUN]
            args: list[Any] = [self._prefix, EXPIRY, len(some)]
            for record, attempt in zip(some, attempts[first : first + RUN], strict=True):
                needs = counter_needs(record.reserve)
                own = list(needs)
                args += [record.profile_key, attempt, len(own)]
                for key in own:
                    if key.container_id != self._container:
                        raise ValueError(f"counter {key.code} is not container {self._container}'s")
                    args += list(needs[key])
                    names.append(redis_key(key))
                spans.append(own)
            runs.append((names, args))
        answers = [result for answer in self._run(runs) for result in answer]
        out: list[Outcome] = []
        for record, own, result in zip(records, spans, answers, strict=True):
            if isinstance(result, int):  # a later attempt's
                out.append(
                    Conflict(
                        f"profile {record.profile_key} of batch job {self._job} was decided"
                        " by a later attempt of its Spark task"
                    )
                )
            else:
                out.append([own[int(i) - 1] for i in result])
        return out

    def _run(self, runs: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """Every run's answer, the runs sent in one pipeline (not a transaction). A run
        that found the marker gone is sent again once the markers were told (a first
        count: placed), as ``RedisCounters.checked`` does; :class:`CountersLost` else."""
        answers: list[Any] = [None] * len(runs)
        todo = list(range(len(runs)))
        client = self._counters.client
        while todo:
            pipe = client.pipeline(transaction=False)
            for i in todo:
                names, args = runs[i]
                self._reserve(keys=names, args=args, client=pipe)
            for i, answer in zip(todo, self._counters.call(pipe.execute), strict=True):
                answers[i] = answer
            if any(answers[i] == GONE for i in todo):
                self.gone = (
                    f"the ledger of batch job {self._job} is gone from Redis ({self.key}):"
                    " its run ended, or Redis dropped it while the job ran (an eviction"
                    " policy other than noeviction, docs/deploy.md)"
                )
                raise LedgerGone(self.gone)
            todo = [i for i in todo if answers[i] == MISSING]
            if todo:
                self._counters.markers.missing([self._container])
        return answers
