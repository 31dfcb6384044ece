"""Objections in the task lists (:func:`gateway.workflows.tasks.tasks_for`).

- A source department: each open objection routed to it, due at its deadline (the
  operator answers those about tracing canary rows instead).
- The filer (a merchant, or the operator for its own): each answer it has not acknowledged
  yet, so it is told of every answer.
- The operator: each objection overdue at its department, to follow it up.
- The supervisor sees the overdue ones among these (the task list keeps only overdue
  tasks for it).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.authorization.roles import Role
from gateway.db.schema import ObjectionRow
from gateway.governance.actor import Actor
from gateway.objections.models import FilerKind, Objection, ObjectionStatus
from gateway.objections.reading import objection_of
from gateway.workflows.reading import Deadlines
from gateway.workflows.task import Task, make_task

__all__ = ["objection_tasks"]


def _about(o: Objection) -> str:
    subject = f" of {o.subject_key}" if o.subject_key else ""
    return f"{o.category.value} value of {o.dataset_id}.{o.field}{subject}"


async def objection_tasks(
    actor: Actor, engine: AsyncEngine, now: dt.datetime, calendar: Deadlines | None = None
) -> list[Task]:
    everyone = actor.role is None and actor.merchant_id is None and not actor.system
    operator = everyone or actor.role in (Role.OPERATOR, Role.SUPERVISOR)
    if actor.merchant_id is None and actor.role not in (
        None,
        Role.OPERATOR,
        Role.SUPERVISOR,
        Role.SOURCE,
    ):
        return []
    query = select(ObjectionRow.__table__).where(
        or_(
            ObjectionRow.status == ObjectionStatus.OPEN.value,
            ObjectionRow.acknowledged_at.is_(None),
        )
    )
    if actor.merchant_id is not None:
        query = query.where(ObjectionRow.merchant_id == actor.merchant_id)
    elif actor.role is Role.SOURCE:
        query = query.where(ObjectionRow.department == (actor.department or ""))
    async with engine.connect() as conn:
        found = [objection_of(row, calendar) for row in (await conn.execute(query)).all()]
    tasks: list[Task] = []
    for o in found:
        if o.status is ObjectionStatus.OPEN:
            if o.canary:
                answers = operator
            else:
                answers = (
                    everyone
                    or actor.role is Role.SUPERVISOR
                    or (actor.role is Role.SOURCE and o.department == actor.department)
                )
            if answers:
                party = "operator (canary row)" if o.canary else f"source: {o.department}"
                tasks.append(
                    make_task(
                        party,
                        "objection",
                        o.id,
                        f"answer the objection to the {_about(o)}: accepted, rejected with "
                        "reasons, or corrected",
                        o.due_at,
                        now,
                        provisional=o.provisional,
                    )
                )
            if operator and actor.role is not Role.SUPERVISOR and o.overdue(now):
                tasks.append(
                    make_task(
                        "operator",
                        "objection-overdue",
                        o.id,
                        f"{o.answering_party} has not answered the objection to the "
                        f"{_about(o)}: follow it up",
                        o.due_at,
                        now,
                        provisional=o.provisional,
                    )
                )
            continue
        if not o.awaits_acknowledgement:
            continue
        by_merchant = o.filer_kind is FilerKind.MERCHANT
        filer = everyone or (
            actor.merchant_id is not None if by_merchant else actor.role is Role.OPERATOR
        )
        if filer:
            tasks.append(
                make_task(
                    "merchant" if by_merchant else "operator",
                    "objection-answer",
                    o.id,
                    f"the objection to the {_about(o)} was answered: {o.status.value}; "
                    "read the answer and acknowledge it",
                    None,
                    now,
                )
            )
    return tasks
