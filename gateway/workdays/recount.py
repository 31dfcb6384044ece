"""Counting open deadlines again once the calendar they were counted on has changed.

A deadline counted through a year whose holiday schedule was not loaded yet is
provisional (:mod:`gateway.workdays.store`); when the schedule arrives, every open step
(an onboarding, a compliance check, a department's review, an objection) is counted again
from its start and stored if it moved. Each service says which rows are open and which
columns hold the start and the deadline; the counting is the same for all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement

from gateway.clock import utc

__all__ = ["Deadlines", "recount_deadlines"]


class Deadlines(Protocol):
    def deadline(self, start: Any, n: int) -> Any: ...


async def recount_deadlines(
    conn: AsyncConnection,
    calendar: Deadlines,
    *,
    table: Any,
    keys: Sequence[Any],
    start: Any,
    due: Any,
    working_days: int,
    open_when: Sequence[ColumnElement[bool]],
) -> list[Any]:
    """Count ``due`` again as ``working_days`` from ``start`` for every row of ``table``
    matching ``open_when`` (locked for the rest of the transaction), store the deadlines
    that moved (or were missing), and return the first key of each row that moved.

    ``keys`` are the columns that identify a row (the first is what is returned)."""
    rows = (
        await conn.execute(
            select(*keys, start.label("start_at"), due.label("due_at"))
            .where(*open_when)
            .with_for_update()
        )
    ).all()
    moved: list[Any] = []
    for row in rows:
        new_due = calendar.deadline(utc(row.start_at), working_days)
        if row.due_at is None or new_due != utc(row.due_at):
            identity = [key == value for key, value in zip(keys, row[: len(keys)], strict=True)]
            await conn.execute(update(table).where(*identity).values({due: new_due}))
            moved.append(row[0])
    return moved
