"""The statements both decision paths run, written once with ``?`` placeholders (SQLite's;
:func:`on_postgres` gives psycopg's). The columns are the same on both databases (JSON is
text, ``tables.py``); only the statements that read a list of keys differ (a JSON array
on SQLite, an array parameter on PostgreSQL) and live with their path.
"""

from __future__ import annotations

from collections import namedtuple

from nextoffer.storage import tables


def on_postgres(sql: str) -> str:
    """The statement with psycopg's placeholders (none of them holds a literal ``?``)."""
    return sql.replace("?", "%s")


PROFILE = (
    "SELECT p.profile_id, p.attributes FROM profile_identities AS i"
    " JOIN profiles AS p ON p.profile_id = i.profile_id"
    " WHERE i.org_id = ? AND i.sandbox = ? AND i.namespace = ? AND i.identity = ?"
)
VERSION = "SELECT library_version FROM containers WHERE container_id = ?"
INSTANCE_COLUMNS: list[str] = [column.name for column in tables.instances.c]
InstanceRow = namedtuple("InstanceRow", INSTANCE_COLUMNS)  # type: ignore[misc]
#: The container's row always (is it this tenant's?), the instance's columns when found.
INSTANCE = (
    f"SELECT {', '.join('i.' + name for name in INSTANCE_COLUMNS)} FROM containers AS c"
    " LEFT JOIN instances AS i ON i.container_id = c.container_id AND i.instance_id = ?"
    " WHERE c.container_id = ? AND c.org_id = ? AND c.sandbox = ?"
)
#: The same by ``@id`` (the dps form's key; unique per container).
INSTANCE_BY_AT_ID = INSTANCE.replace("i.instance_id = ?", "i.at_id = ?")
EVENTS = (
    "SELECT body FROM experience_events WHERE profile_id = ?"
    " ORDER BY timestamp_us DESC, seq DESC LIMIT ?"
)
#: A batch's rows, one ``executemany`` per table (``group_commit.BatchPlan``); the report
#: rows only for records without an event (the others are folded, ``report_fold.py``).
SET_COUNTS = (
    "INSERT INTO cap_counters (counter_key, container_id, count) VALUES (?, ?, ?)"
    " ON CONFLICT (counter_key) DO UPDATE SET count = excluded.count"
)
#: An event's place in commit order (``seq``) is PostgreSQL's identity, SQLite's rowid.
EVENTS_IN = (
    "INSERT INTO decision_events"
    " (proposition_id, container_id, created, created_us, profile_key, body, offers)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
DAILY_IN = (
    "INSERT INTO offer_daily (container_id, day, offer_id, propositions, impressions, clicks)"
    " VALUES (?, ?, ?, ?, 0, 0) ON CONFLICT (container_id, day, offer_id)"
    " DO UPDATE SET propositions = offer_daily.propositions + excluded.propositions"
)
