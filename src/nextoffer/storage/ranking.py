"""What ranking strategies learned, in SQL: statistics cells, their version, the daily report.

Feedback adds to cells (``Ranking.add``); a process deciding reads the container's
version and, when it moved, only the cells written since (``Ranking.changes``). The
version is moved by the adding transaction itself, first, with an upsert that locks the
container's ``ranking_state`` row until commit: two transactions adding to one container
take their versions in commit order, so a reader that has seen version ``v`` has seen
every cell written at ``v`` or before.

A strategy counts one display and one success per proposition and offer (a Bernoulli
trial per display): ``Ranking.claim`` inserts the trials' keys into ``ranking_trials``,
skipping those already there, and only the keys it inserted are added. On PostgreSQL a
second transaction inserting a key waits on the unique index for the first one's commit
and then skips it; SQLite has one writer. So a trial counts once, from any worker.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from nextoffer.storage import tables as t

#: A cell key: (strategy @id, offer @id, row, col).
CellKey = tuple[str, str, int, int]
#: A daily key: (strategy @id, UTC day, offer @id, explored).
DailyKey = tuple[str, str, str, bool]
#: A trial's key: (proposition id, its position in the decision, offer @id, kind).
TrialKey = tuple[str, int, str, int]


@dataclass(frozen=True, slots=True)
class Cell:
    strategy_id: str
    offer_id: str
    row: int
    col: int
    value: float


_VERSION = select(t.ranking_state.c.version).where(
    t.ranking_state.c.container_id == bindparam("cid")
)
_CHANGES = (
    select(
        t.ranking_stats.c.strategy_id,
        t.ranking_stats.c.offer_id,
        t.ranking_stats.c.row,
        t.ranking_stats.c.col,
        t.ranking_stats.c.value,
        t.ranking_stats.c.version,
    )
    .where(
        t.ranking_stats.c.container_id == bindparam("cid"),
        t.ranking_stats.c.version > bindparam("since"),
    )
    .order_by(t.ranking_stats.c.version)
)


def _dialect(conn: Connection) -> Any:
    return postgresql if conn.dialect.name == "postgresql" else sqlite


class Ranking:
    """Reads and writes of the ranking tables on one connection (one transaction)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def version(self, container_id: str) -> int:
        value = self.conn.execute(_VERSION, {"cid": container_id}).scalar()
        return int(value) if value is not None else 0

    def changes(self, container_id: str, since: int) -> tuple[int, list[Cell]]:
        """The cells written after version ``since`` (their totals), and the version read."""
        version = self.version(container_id)
        if version <= since:
            return version, []
        cells = []
        for row in self.conn.execute(_CHANGES, {"cid": container_id, "since": since}):
            cells.append(Cell(row.strategy_id, row.offer_id, row.row, row.col, row.value))
            version = max(version, int(row.version))
        return version, cells

    def add(
        self,
        container_id: str,
        cells: Mapping[CellKey, float],
        daily: Mapping[DailyKey, tuple[int, int]],
    ) -> None:
        """Add ``cells`` to the statistics and ``daily`` (impressions, clicks) to the
        report, under a new version. Rows are written in key order (no two writers take
        the same rows in different orders)."""
        if not cells and not daily:
            return
        dialect = _dialect(self.conn)
        bump = dialect.insert(t.ranking_state).values(container_id=container_id, version=1)
        bump = bump.on_conflict_do_update(
            index_elements=[t.ranking_state.c.container_id],
            set_={"version": t.ranking_state.c.version + 1},
        ).returning(t.ranking_state.c.version)
        version = int(self.conn.execute(bump).scalar_one())
        if cells:
            stats = dialect.insert(t.ranking_stats)
            stats = stats.on_conflict_do_update(
                index_elements=[
                    t.ranking_stats.c.container_id,
                    t.ranking_stats.c.strategy_id,
                    t.ranking_stats.c.offer_id,
                    t.ranking_stats.c.row,
                    t.ranking_stats.c.col,
                ],
                set_={
                    "value": t.ranking_stats.c.value + stats.excluded.value,
                    "version": stats.excluded.version,
                },
            )
            self.conn.execute(
                stats,
                [
                    {
                        "container_id": container_id,
                        "strategy_id": strategy_id,
                        "offer_id": offer_id,
                        "row": row,
                        "col": col,
                        "value": value,
                        "version": version,
                    }
                    for (strategy_id, offer_id, row, col), value in sorted(cells.items())
                ],
            )
        if daily:
            report = dialect.insert(t.ranking_daily)
            report = report.on_conflict_do_update(
                index_elements=[
                    t.ranking_daily.c.container_id,
                    t.ranking_daily.c.strategy_id,
                    t.ranking_daily.c.day,
                    t.ranking_daily.c.offer_id,
                    t.ranking_daily.c.explored,
                ],
                set_={
                    "impressions": t.ranking_daily.c.impressions + report.excluded.impressions,
                    "clicks": t.ranking_daily.c.clicks + report.excluded.clicks,
                },
            )
            self.conn.execute(
                report,
                [
                    {
                        "container_id": container_id,
                        "strategy_id": strategy_id,
                        "day": day,
                        "offer_id": offer_id,
                        "explored": int(explored),
                        "impressions": impressions,
                        "clicks": clicks,
                    }
                    for (strategy_id, day, offer_id, explored), (impressions, clicks) in sorted(
                        daily.items()
                    )
                ],
            )

    def claim(self, container_id: str, trials: Mapping[TrialKey, int]) -> set[TrialKey]:
        """Insert the keys of ``trials`` (each with its decision's time, epoch µs) that
        are not stored yet; the keys inserted. A key already there was counted before."""
        if not trials:
            return set()
        c = t.ranking_trials.c
        insert = _dialect(self.conn).insert(t.ranking_trials).on_conflict_do_nothing()
        rows = self.conn.execute(
            insert.returning(c.proposition_id, c.position, c.offer_id, c.kind),
            [
                {
                    "container_id": container_id,
                    "proposition_id": proposition_id,
                    "position": position,
                    "offer_id": offer_id,
                    "kind": kind,
                    "decided_us": decided_us,
                }
                for (proposition_id, position, offer_id, kind), decided_us in sorted(trials.items())
            ],
        )
        return {(r.proposition_id, r.position, r.offer_id, r.kind) for r in rows}

    def prune_trials(self, *, before_us: int, limit: int) -> int:
        """Delete the trials of propositions decided before ``before_us``, the oldest
        first: the propositions of the first ``limit`` such rows (by the decision-time
        index), every row of each; how many rows went. Meant for retention, with the
        decision events' limit: feedback on a proposition whose decision event is gone
        counts for nothing, so its trials are no longer needed."""
        c = t.ranking_trials.c
        oldest = (
            select(c.proposition_id, c.decided_us)
            .where(c.decided_us < before_us)
            .order_by(c.decided_us)
            .limit(limit)
        )
        rows = self.conn.execute(oldest).all()
        if not rows:
            return 0
        # The rows of one proposition share its decision's time: the delete reads only
        # the index's range of the rows found, not every row older than ``before_us``.
        gone = delete(t.ranking_trials).where(
            c.decided_us >= rows[0].decided_us,
            c.decided_us <= rows[-1].decided_us,
            c.proposition_id.in_(sorted({row.proposition_id for row in rows})),
        )
        return int(self.conn.execute(gone).rowcount)

    def daily(
        self, container_id: str, strategy_id: str, *, first_day: str, last_day: str
    ) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            select(t.ranking_daily)
            .where(
                t.ranking_daily.c.container_id == container_id,
                t.ranking_daily.c.strategy_id == strategy_id,
                t.ranking_daily.c.day >= first_day,
                t.ranking_daily.c.day <= last_day,
            )
            .order_by(t.ranking_daily.c.day, t.ranking_daily.c.offer_id, t.ranking_daily.c.explored)
        )
        return [
            {
                "day": r.day,
                "offerId": r.offer_id,
                "explored": bool(r.explored),
                "impressions": int(r.impressions),
                "clicks": int(r.clicks),
            }
            for r in rows
        ]
