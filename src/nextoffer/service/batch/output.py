"""The rows a batch job writes: one decision event per profile of the audience, shaped
like Adobe's decision events, as Parquet (pyarrow) or as a Spark schema.

``_id`` (the proposition id, unique), ``timestamp`` (the job's decision time),
``identityMap`` (the profile's first identity, primary) and
``_experience.decisioning.propositions[]``: per proposition request its ``scope`` (the
activity id), ``scopeDetails`` (activity and placement ids) and ``items[]``: ``id``,
``name``, ``fallback`` (true exactly when the item is the decision's fallback offer) and
``content`` (the first component of the placement's representation as JSON text, only
with ``xdm:includeContent``; components vary in shape, and a Parquet column cannot).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

import orjson

from nextoffer.engine import DecisionResult, FallbackOption, Option

#: The same columns as a Spark DDL schema (``spark.py`` writes with it).
SPARK_SCHEMA = (
    "_id string, timestamp timestamp,"
    " identityMap map<string, array<struct<id: string, primary: boolean>>>,"
    " _experience struct<decisioning: struct<propositions: array<struct<"
    "scope: string,"
    " scopeDetails: struct<activity: struct<id: string>, placement: struct<id: string>>,"
    " items: array<struct<id: string, name: string, fallback: boolean, content: string>>"
    ">>>>"
)


class EventRow(NamedTuple):
    """One decision event, engine-neutral: ``arrow_table`` shapes it."""

    proposition_id: str
    timestamp: datetime
    namespace: str
    identity: str
    #: Per proposition: activity id, placement id, items (id, name, fallback, content).
    propositions: tuple[tuple[str, str, tuple[tuple[str, str | None, bool, str | None], ...]], ...]


def event_row(
    proposition_id: str,
    timestamp: datetime,
    namespace: str,
    identity: str,
    result: DecisionResult,
    *,
    include_content: bool,
) -> EventRow:
    propositions = []
    for p in result.propositions:
        items: list[tuple[str, str | None, bool, str | None]] = []
        chosen: list[Option | FallbackOption] = list(p.options)
        if not chosen and p.fallback is not None:
            chosen = [p.fallback]
        for option in chosen:
            content = None
            if include_content:
                components = option.components
                content = orjson.dumps(dict(components[0])).decode() if components else None
            items.append((option.offer_id, option.name, not p.options, content))
        propositions.append((p.activity.at_id, p.placement.at_id, tuple(items)))
    return EventRow(proposition_id, timestamp, namespace, identity, tuple(propositions))


def _experience(row: EventRow) -> dict[str, Any]:
    return {
        "decisioning": {
            "propositions": [
                {
                    "scope": activity,
                    "scopeDetails": {"activity": {"id": activity}, "placement": {"id": placement}},
                    "items": [
                        {"id": i, "name": n, "fallback": f, "content": c} for i, n, f, c in items
                    ],
                }
                for activity, placement, items in row.propositions
            ]
        }
    }


def arrow_schema() -> Any:
    import pyarrow as pa

    item = pa.struct(
        [
            ("id", pa.string()),
            ("name", pa.string()),
            ("fallback", pa.bool_()),
            ("content", pa.string()),
        ]
    )
    proposition = pa.struct(
        [
            ("scope", pa.string()),
            (
                "scopeDetails",
                pa.struct(
                    [
                        ("activity", pa.struct([("id", pa.string())])),
                        ("placement", pa.struct([("id", pa.string())])),
                    ]
                ),
            ),
            ("items", pa.list_(item)),
        ]
    )
    identity = pa.struct([("id", pa.string()), ("primary", pa.bool_())])
    return pa.schema(
        [
            ("_id", pa.string()),
            ("timestamp", pa.timestamp("us", tz="UTC")),
            ("identityMap", pa.map_(pa.string(), pa.list_(identity))),
            (
                "_experience",
                pa.struct([("decisioning", pa.struct([("propositions", pa.list_(proposition))]))]),
            ),
        ]
    )


def arrow_table(rows: Sequence[EventRow]) -> Any:
    """The rows as a ``pyarrow.Table`` in :func:`arrow_schema`."""
    import pyarrow as pa

    return pa.Table.from_pydict(
        {
            "_id": [r.proposition_id for r in rows],
            "timestamp": [r.timestamp for r in rows],
            "identityMap": [[(r.namespace, [{"id": r.identity, "primary": True}])] for r in rows],
            "_experience": [_experience(r) for r in rows],
        },
        schema=arrow_schema(),
    )
