"""Query parts every section of the reports shares."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement

from gateway.clock import utc
from gateway.db.schema import ReviewRow, UseApplicationRow
from gateway.reports.periods import Period

__all__ = ["LIST_LIMIT", "in_period", "open_at", "open_during", "reviews_in_play"]

LIST_LIMIT = 2000
"""Most items a report lists one by one in a section; counts always cover every item."""


def in_period(column: Any, period: Period) -> ColumnElement[bool]:
    """``column`` falls in ``period``: from its first instant, up to but not at its end."""
    return and_(column >= period.start, column < period.end)


def open_during(opened: Any, closed: Any, as_of: dt.datetime) -> ColumnElement[bool]:
    """SQL: opened before ``as_of`` and not closed by then (what :func:`open_at` checks)."""
    return and_(opened < as_of, or_(closed.is_(None), closed >= as_of))


def open_at(opened: Any, closed: Any, as_of: dt.datetime) -> bool:
    """Opened before ``as_of`` and not closed by then (stored instants, naive or aware)."""
    return opened is not None and utc(opened) < as_of and (closed is None or utc(closed) >= as_of)


async def reviews_in_play(conn: AsyncConnection, period: Period, as_of: dt.datetime) -> list[Any]:
    """The departments' reviews of use applications that were decided in ``period`` or
    still open at ``as_of``, each with its application's status: what the timeliness
    section and the departments' circular both count, so they count the same reviews."""
    result = await conn.execute(
        select(
            ReviewRow.application_id,
            ReviewRow.department,
            ReviewRow.status,
            ReviewRow.opened_at,
            ReviewRow.due_at,
            ReviewRow.extended_until,
            ReviewRow.decided_at,
            UseApplicationRow.status.label("application_status"),
        )
        .join(UseApplicationRow, ReviewRow.application_id == UseApplicationRow.id)
        .where(
            ReviewRow.opened_at.is_not(None),
            or_(
                in_period(ReviewRow.decided_at, period),
                open_during(ReviewRow.opened_at, ReviewRow.decided_at, as_of),
            ),
        )
    )
    return list(result)
