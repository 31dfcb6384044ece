"""Supervision measures for the security report: imposed, lifted and in force in the quarter,
and the status changes of the log made with or without a measure.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.clock import utc
from gateway.db.schema import LogEntryRow, MeasureRow
from gateway.reports.change_section import GovernanceChange, change_from_record, status_change_kinds
from gateway.reports.periods import Period
from gateway.reports.queries import LIST_LIMIT, in_period

__all__ = ["MeasureItem", "MeasureSection", "gather_measures"]


@dataclass(frozen=True, slots=True)
class MeasureItem:
    id: str
    target_kind: str
    target_id: str
    status: str
    reason: str
    basis: str | None
    imposed_by: str
    imposed_at: dt.datetime
    lifted_by: str | None
    lifted_at: dt.datetime | None
    lift_reason: str | None

    def active_at(self, instant: dt.datetime) -> bool:
        return self.imposed_at < instant and (self.lifted_at is None or self.lifted_at >= instant)


@dataclass(frozen=True, slots=True)
class MeasureSection:
    imposed: tuple[MeasureItem, ...]
    lifted: tuple[MeasureItem, ...]
    active_at_end: tuple[MeasureItem, ...]
    imposed_by_kind: tuple[tuple[str, int], ...]
    status_changes: tuple[GovernanceChange, ...]
    """Suspensions, reinstatements, terminations and delistings recorded in the governance
    and products streams during the quarter (also those made outside the measures)."""


def _measure(row: Any) -> MeasureItem:
    return MeasureItem(
        id=str(row.id),
        target_kind=str(row.target_kind),
        target_id=str(row.target_id),
        status=str(row.status),
        reason=str(row.reason),
        basis=row.basis,
        imposed_by=str(row.imposed_by),
        imposed_at=utc(row.imposed_at),
        lifted_by=row.lifted_by,
        lifted_at=utc(row.lifted_at) if row.lifted_at is not None else None,
        lift_reason=row.lift_reason,
    )


async def gather_measures(
    conn: AsyncConnection, period: Period, as_of: dt.datetime
) -> MeasureSection:
    table = MeasureRow.__table__
    rows = await conn.execute(
        select(table)
        .where(
            MeasureRow.imposed_at < period.end,
            or_(MeasureRow.lifted_at.is_(None), MeasureRow.lifted_at >= period.start),
        )
        .order_by(MeasureRow.imposed_at, MeasureRow.id)
    )
    items = [_measure(row) for row in rows]
    imposed = tuple(m for m in items if period.contains(m.imposed_at))
    lifted = tuple(m for m in items if m.lifted_at is not None and period.contains(m.lifted_at))
    kinds = Counter(m.target_kind for m in imposed)
    changes = await conn.execute(
        select(
            LogEntryRow.stream,
            LogEntryRow.seq,
            LogEntryRow.recorded_at,
            LogEntryRow.kind,
            LogEntryRow.payload,
        )
        .where(
            LogEntryRow.stream.in_(("governance", "products")),
            LogEntryRow.kind.in_(sorted(status_change_kinds())),
            in_period(LogEntryRow.recorded_at, period),
        )
        .order_by(LogEntryRow.recorded_at, LogEntryRow.stream, LogEntryRow.seq)
        .limit(LIST_LIMIT)
    )
    return MeasureSection(
        imposed=imposed,
        lifted=lifted,
        active_at_end=tuple(m for m in items if m.active_at(as_of)),
        imposed_by_kind=tuple(sorted(kinds.items())),
        status_changes=tuple(
            change_from_record(r.stream, r.seq, r.recorded_at, r.kind, r.payload) for r in changes
        ),
    )
