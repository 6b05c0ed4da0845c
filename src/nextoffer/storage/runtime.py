"""Runtime records in SQL: profiles and identities, experience events, decision events
and the offers report's daily counts (cap counters are ``counters.py``'s). Used through
``Session.runtime`` inside the service's transaction."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import (
    Connection,
    Select,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from nextoffer.errors import IdentityClaimed
from nextoffer.storage import tables as t
from nextoffer.storage.locks import Lock, locked
from nextoffer.storage.rows import json_text


@dataclass(frozen=True, slots=True)
class ProfileRecord:
    profile_id: str
    attributes: dict[str, Any]
    identities: tuple[tuple[str, str], ...]  # (namespace, id)
    created: str
    modified: str


#: The one row of ``profile_seq``.
PROFILE_SEQ = "profiles"

_IDENTITY = select(t.profile_identities.c.profile_id).where(
    t.profile_identities.c.org_id == bindparam("org"),
    t.profile_identities.c.sandbox == bindparam("sandbox"),
    t.profile_identities.c.namespace == bindparam("ns"),
    t.profile_identities.c.identity == bindparam("id"),
)
_IDENTITIES_IN = select(t.profile_identities.c.identity, t.profile_identities.c.profile_id).where(
    t.profile_identities.c.org_id == bindparam("org"),
    t.profile_identities.c.sandbox == bindparam("sandbox"),
    t.profile_identities.c.namespace == bindparam("ns"),
    t.profile_identities.c.identity.in_(bindparam("ids", expanding=True)),
)


def _locking(query: Select[Any]) -> dict[Lock, Select[Any]]:
    """``query`` as is, and joined to ``profiles`` with their rows locked in each mode: a
    write's identity lookup holds the profiles it finds until it commits (``"update"``
    for a delete, ``"no key update"`` for an upsert, ``"key share"`` for an event, which
    only adds a row under it; ``locks.py``). A profile deleted meanwhile is then not
    found, and none is deleted before the write commits, so no identity or event is
    written to a profile that is gone."""
    joined = query.join_from(
        t.profile_identities,
        t.profiles,
        t.profiles.c.profile_id == t.profile_identities.c.profile_id,
    )
    modes: tuple[Lock, ...] = ("key share", "no key update", "update")
    return {None: query, **{mode: locked(joined, mode, of=t.profiles) for mode in modes}}


_OWNER = _locking(_IDENTITY)
_OWNERS = _locking(_IDENTITIES_IN)
_PROFILE = select(t.profiles).where(t.profiles.c.profile_id == bindparam("pid"))
#: The decision path's profile read: identity to attributes in one indexed statement.
_PROFILE_BY_IDENTITY = (
    select(t.profiles.c.profile_id, t.profiles.c.attributes)
    .select_from(
        t.profile_identities.join(
            t.profiles, t.profiles.c.profile_id == t.profile_identities.c.profile_id
        )
    )
    .where(
        t.profile_identities.c.org_id == bindparam("org"),
        t.profile_identities.c.sandbox == bindparam("sandbox"),
        t.profile_identities.c.namespace == bindparam("ns"),
        t.profile_identities.c.identity == bindparam("id"),
    )
)
_EVENTS = (
    select(t.experience_events.c.body)
    .where(t.experience_events.c.profile_id == bindparam("pid"))
    .order_by(t.experience_events.c.timestamp_us.desc(), t.experience_events.c.seq.desc())
    .limit(bindparam("limit"))
)
_INSERT_PROFILE = insert(t.profiles)
_UPDATE_PROFILE = (
    update(t.profiles)
    .where(t.profiles.c.profile_id == bindparam("pid"))
    .values(attributes=bindparam("attributes"), modified=bindparam("now"))
)
#: Answers the rows it inserted: an identity it skipped was claimed by another
#: transaction since this one read it (:class:`~nextoffer.errors.IdentityClaimed`).
_ADD_IDENTITY = {
    dialect: dialect.insert(t.profile_identities)
    .on_conflict_do_nothing()
    .returning(t.profile_identities.c.namespace)
    for dialect in (sqlite, postgresql)
}
#: An event, unless one with its id is stored (then no row: a duplicate).
_INSERT_EVENT = {
    dialect: dialect.insert(t.experience_events)
    .on_conflict_do_nothing(index_elements=["org_id", "sandbox", "event_id"])
    .returning(t.experience_events.c.seq)
    for dialect in (sqlite, postgresql)
}
_ADD_DAILY = (
    update(t.offer_daily)
    .where(
        t.offer_daily.c.container_id == bindparam("cid"),
        t.offer_daily.c.day == bindparam("d"),
        t.offer_daily.c.offer_id == bindparam("oid"),
    )
    .values(
        propositions=t.offer_daily.c.propositions + bindparam("p"),
        impressions=t.offer_daily.c.impressions + bindparam("i"),
        clicks=t.offer_daily.c.clicks + bindparam("c"),
    )
)


def folded_seq() -> Any:
    """The offers report's watermark: every decision event at or below it is counted."""
    return (
        select(func.coalesce(func.max(t.report_folds.c.position), 0))
        .where(t.report_folds.c.name == "offers")
        .scalar_subquery()
    )


def newest_seq() -> Any:
    """The newest decision event's place."""
    return select(func.max(t.decision_events.c.seq)).scalar_subquery()


class Runtime:
    """Reads and writes of the runtime tables on one connection (one transaction)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        #: SQLAlchemy's dialect module of the connection (for its ``insert … ON CONFLICT``).
        self._dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        #: Offers-report increments of this transaction, written by :meth:`flush`.
        self._daily: dict[tuple[str, str, str], list[int]] = {}
        #: Profiles this transaction changed or deleted: :meth:`flush` numbers them in the
        #: profiles' change sequence (``0011_profile_seq``).
        self._changed_profiles: set[str] = set()

    # -- profiles --------------------------------------------------------------------

    def find_profile_id(
        self, org: str, sandbox: str, namespace: str, identity: str, *, lock: Lock = None
    ) -> str | None:
        """The profile the identity names; ``lock``: see :func:`_locking`."""
        params = {"org": org, "sandbox": sandbox, "ns": namespace, "id": identity}
        value = self.conn.execute(_OWNER[lock], params).scalar()
        return str(value) if value is not None else None

    def get_profile(self, profile_id: str) -> ProfileRecord | None:
        row = self.conn.execute(_PROFILE, {"pid": profile_id}).first()
        if row is None:
            return None
        identities = self.conn.execute(
            select(t.profile_identities.c.namespace, t.profile_identities.c.identity)
            .where(t.profile_identities.c.profile_id == profile_id)
            .order_by(t.profile_identities.c.namespace, t.profile_identities.c.identity)
        )
        return ProfileRecord(
            profile_id,
            orjson.loads(row.attributes),
            tuple((r.namespace, r.identity) for r in identities),
            row.created,
            row.modified,
        )

    def profile_attributes(self, profile_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(_PROFILE, {"pid": profile_id}).first()
        return orjson.loads(row.attributes) if row is not None else None

    def profile_by_identity(
        self, org: str, sandbox: str, namespace: str, identity: str
    ) -> tuple[str, dict[str, Any]] | None:
        """The profile one identity names and its attributes, in one statement."""
        params = {"org": org, "sandbox": sandbox, "ns": namespace, "id": identity}
        row = self.conn.execute(_PROFILE_BY_IDENTITY, params).first()
        return (str(row.profile_id), orjson.loads(row.attributes)) if row is not None else None

    def insert_profile(
        self, org: str, sandbox: str, profile_id: str, attributes: Mapping[str, Any], *, now: str
    ) -> None:
        self.insert_profiles(org, sandbox, [(profile_id, attributes)], now=now)

    def insert_profiles(
        self,
        org: str,
        sandbox: str,
        profiles: Sequence[tuple[str, Mapping[str, Any]]],
        *,
        now: str,
    ) -> None:
        """Insert (profile id, attributes) rows: one ``executemany``."""
        if profiles:
            self.conn.execute(
                _INSERT_PROFILE,
                [
                    {
                        "profile_id": profile_id,
                        "org_id": org,
                        "sandbox": sandbox,
                        "attributes": json_text(attributes),
                        "created": now,
                        "modified": now,
                    }
                    for profile_id, attributes in profiles
                ],
            )

    def update_profile(self, profile_id: str, attributes: Mapping[str, Any], *, now: str) -> None:
        self.update_profiles([(profile_id, attributes)], now=now)

    def update_profiles(
        self, profiles: Sequence[tuple[str, Mapping[str, Any]]], *, now: str
    ) -> None:
        """Replace the attributes of (profile id, attributes) rows: one ``executemany``."""
        if profiles:
            self._changed_profiles.update(profile_id for profile_id, _ in profiles)
            self.conn.execute(
                _UPDATE_PROFILE,
                [
                    {"pid": profile_id, "attributes": json_text(attributes), "now": now}
                    for profile_id, attributes in profiles
                ],
            )

    def add_identities(
        self, org: str, sandbox: str, profile_id: str, identities: Iterable[tuple[str, str]]
    ) -> None:
        self.add_identity_rows(org, sandbox, [(ns, i, profile_id) for ns, i in identities])

    def add_identity_rows(
        self, org: str, sandbox: str, rows: Sequence[tuple[str, str, str]]
    ) -> None:
        """Add (namespace, identity, profile id) rows, none of them stored when the caller
        read them: one ``executemany``.

        On PostgreSQL another transaction may claim one of them in between (two requests
        creating a profile for one new identity). Its row then stands: the insert waits
        for that transaction and skips the row once it commits, and this raises
        :class:`~nextoffer.errors.IdentityClaimed` so that the caller's transaction is
        rolled back and redone (``Store.write``), reading the claim. On SQLite a writer
        reads under the write lock, so nothing is claimed in between."""
        if not rows:
            return
        added = self.conn.execute(
            _ADD_IDENTITY[self._dialect],
            [
                {
                    "org_id": org,
                    "sandbox": sandbox,
                    "namespace": namespace,
                    "identity": identity,
                    "profile_id": profile_id,
                }
                for namespace, identity, profile_id in rows
            ],
        ).all()
        if len(added) < len(rows):
            raise IdentityClaimed(
                "an identity was claimed by a concurrent write; retry", retry_after=1
            )

    def find_profile_ids(
        self, org: str, sandbox: str, identities: Sequence[tuple[str, str]], *, lock: Lock = None
    ) -> dict[tuple[str, str], str]:
        """The profile each of ``identities`` names, for those that name one (one
        statement per namespace); ``lock``: see :func:`_locking`."""
        found: dict[tuple[str, str], str] = {}
        by_namespace: dict[str, list[str]] = {}
        for namespace, identity in identities:
            by_namespace.setdefault(namespace, []).append(identity)
        for namespace, values in by_namespace.items():
            rows = self.conn.execute(
                _OWNERS[lock], {"org": org, "sandbox": sandbox, "ns": namespace, "ids": values}
            )
            for identity, profile_id in rows:
                found[(namespace, identity)] = str(profile_id)
        return found

    def delete_profile(self, profile_id: str) -> None:
        self._changed_profiles.add(profile_id)
        for table in (t.profile_identities, t.experience_events):
            self.conn.execute(delete(table).where(table.c.profile_id == profile_id))
        self.conn.execute(delete(t.profiles).where(t.profiles.c.profile_id == profile_id))

    # -- experience events -----------------------------------------------------------

    def insert_event(
        self,
        org: str,
        sandbox: str,
        profile_id: str,
        *,
        event_id: str,
        event_type: str | None,
        timestamp: str,
        timestamp_us: int,
        body: Mapping[str, Any],
    ) -> bool:
        """Store the event; ``False`` when one with its id is stored already (a duplicate).
        A concurrent write storing the same id first (PostgreSQL) makes this one wait for
        its commit and answer ``False``, as if it had come after."""
        stored = self.conn.execute(
            _INSERT_EVENT[self._dialect],
            {
                "org_id": org,
                "sandbox": sandbox,
                "profile_id": profile_id,
                "event_id": event_id,
                "event_type": event_type,
                "timestamp": timestamp,
                "timestamp_us": timestamp_us,
                "body": json_text(body),
            },
        ).first()
        return stored is not None

    def recent_events(self, profile_id: str, *, limit: int) -> list[dict[str, Any]]:
        """The profile's newest ``limit`` events, oldest first."""
        rows = self.conn.execute(_EVENTS, {"pid": profile_id, "limit": limit}).scalars().all()
        return [orjson.loads(body) for body in reversed(rows)]

    # -- decisions and counters ------------------------------------------------------

    def decision_events(
        self, container_id: str, *, since_us: int, limit: int
    ) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            select(t.decision_events.c.body)
            .where(
                t.decision_events.c.container_id == container_id,
                t.decision_events.c.created_us >= since_us,
            )
            .order_by(t.decision_events.c.created_us, t.decision_events.c.proposition_id)
            .limit(limit)
        ).scalars()
        return [orjson.loads(body) for body in rows]

    # -- retention (``service/retention.py``) -----------------------------------------

    def prune_decision_events(
        self, *, before_us: int, limit: int, future_us: int | None = None
    ) -> int:
        """Delete the oldest decision events (by place) made before ``before_us``, at most
        ``limit``, among those the offers report has counted; how many.

        Only events at or below the fold's watermark go, and never the newest event: on
        SQLite an event's place is the largest + 1 (``report_fold.py``), so an emptied
        table would hand out places the watermark has passed, and the fold would skip
        them. The walk is by place and stops at the first event made at or after
        ``before_us``, so a pass reads about as many rows as it deletes; an event made
        earlier than one before it (two nodes' clocks) waits for that one. Events made
        after ``future_us`` (a clock far ahead) are stepped over, kept, and stop nothing.
        """
        e = t.decision_events.c
        walked = select(e.seq, e.created_us).where(e.seq <= folded_seq(), e.seq < newest_seq())
        if future_us is not None:
            walked = walked.where(e.created_us <= future_us)
        rows = self.conn.execute(walked.order_by(e.seq).limit(limit)).all()
        last = None
        for seq, created_us in rows:
            if created_us >= before_us:
                break
            last = seq
        if last is None:
            return 0
        first = rows[0][0]
        return int(
            self.conn.execute(
                delete(t.decision_events).where(
                    e.seq >= first, e.seq <= last, e.created_us < before_us
                )
            ).rowcount
        )

    def prune_experience_events(self, *, before_us: int, limit: int) -> int:
        """Delete experience events whose own timestamp is before ``before_us``, the oldest
        first, at most ``limit`` (``ix_experience_events_time``); how many. Their ids go
        with them: an event sent again after that is stored again."""
        c = t.experience_events.c
        oldest = (
            select(c.seq).where(c.timestamp_us < before_us).order_by(c.timestamp_us).limit(limit)
        )
        return int(self.conn.execute(delete(t.experience_events).where(c.seq.in_(oldest))).rowcount)

    def add_daily(
        self,
        container_id: str,
        day: str,
        offer_id: str,
        *,
        propositions: int = 0,
        impressions: int = 0,
        clicks: int = 0,
    ) -> None:
        """Add to the offers report's row of one offer and UTC day (written at commit)."""
        pending = self._daily.setdefault((container_id, day, offer_id), [0, 0, 0])
        pending[0] += propositions
        pending[1] += impressions
        pending[2] += clicks

    def flush(self) -> None:
        """Write the pending report increments, in key order: every transaction then locks
        report rows in one order, so two PostgreSQL transactions touching the same offers
        queue instead of deadlocking (a decision proposes several offers in any order).
        ``Store.session`` calls this before it commits."""
        pending, self._daily = self._daily, {}
        for (container_id, day, offer_id), (p, i, c) in sorted(pending.items()):
            self._write_daily(container_id, day, offer_id, p, i, c)
        changed, self._changed_profiles = self._changed_profiles, set()
        if changed:
            self._number_profile_changes(sorted(changed))

    def _number_profile_changes(self, profile_ids: list[str]) -> None:
        """Take the profiles' next change number and log ``profile_ids`` under it — the
        transaction's last statements: the sequence's row lock, held to the commit, makes
        such transactions commit in the order of their numbers, so a reader that sees
        number N committed sees every change up to N. Inserts are not logged: a new
        profile's identities named no profile, and a cache keeps only profiles found;
        an identity added to a profile keeps its other identities' answer right."""
        bump = (
            self._dialect.insert(t.profile_seq)
            .values(name=PROFILE_SEQ, seq=1)
            .on_conflict_do_update(
                index_elements=[t.profile_seq.c.name], set_={"seq": t.profile_seq.c.seq + 1}
            )
            .returning(t.profile_seq.c.seq)
        )
        seq = int(self.conn.execute(bump).scalar_one())
        now_us = time.time_ns() // 1000
        self.conn.execute(
            insert(t.profile_changes),
            [{"seq": seq, "profile_id": pid, "changed_us": now_us} for pid in profile_ids],
        )

    def profile_changes(self, since: int) -> tuple[int, list[tuple[int, str]]]:
        """The profiles' current change number, and the (number, profile id) logged after
        ``since`` up to it, in order. Read the number first: every change up to it is
        committed (:meth:`_number_profile_changes`)."""
        current = self.conn.execute(
            select(t.profile_seq.c.seq).where(t.profile_seq.c.name == PROFILE_SEQ)
        ).scalar()
        seq = int(current or 0)
        if seq <= since:
            return seq, []
        c = t.profile_changes.c
        rows = self.conn.execute(
            select(c.seq, c.profile_id).where(c.seq > since, c.seq <= seq).order_by(c.seq)
        )
        return seq, [(int(n), str(pid)) for n, pid in rows]

    def trim_profile_changes(self, before_us: int) -> int:
        """Forget the change log's rows written before ``before_us``; how many."""
        c = t.profile_changes.c
        return int(
            self.conn.execute(delete(t.profile_changes).where(c.changed_us < before_us)).rowcount
        )

    def _write_daily(
        self,
        container_id: str,
        day: str,
        offer_id: str,
        propositions: int,
        impressions: int,
        clicks: int,
    ) -> None:
        params = {
            "cid": container_id,
            "d": day,
            "oid": offer_id,
            "p": propositions,
            "i": impressions,
            "c": clicks,
        }
        if self.conn.execute(_ADD_DAILY, params).rowcount == 0:
            self.conn.execute(
                self._dialect.insert(t.offer_daily)
                .values(
                    container_id=container_id,
                    day=day,
                    offer_id=offer_id,
                    propositions=0,
                    impressions=0,
                    clicks=0,
                )
                .on_conflict_do_nothing()
            )
            self.conn.execute(_ADD_DAILY, params)

    def offer_report(
        self, container_id: str, *, first_day: str, last_day: str
    ) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            select(t.offer_daily)
            .where(
                t.offer_daily.c.container_id == container_id,
                t.offer_daily.c.day >= first_day,
                t.offer_daily.c.day <= last_day,
            )
            .order_by(t.offer_daily.c.day, t.offer_daily.c.offer_id)
        )
        return [
            {
                "day": r.day,
                "offerId": r.offer_id,
                "propositions": r.propositions,
                "impressions": r.impressions,
                "clicks": r.clicks,
            }
            for r in rows
        ]

    def decision_event_anywhere(self, proposition_id: str) -> tuple[str, dict[str, Any]] | None:
        """The container and body of a decision event, by its proposition id."""
        row = self.conn.execute(
            select(t.decision_events.c.container_id, t.decision_events.c.body).where(
                t.decision_events.c.proposition_id == proposition_id
            )
        ).first()
        return (row.container_id, orjson.loads(row.body)) if row else None
