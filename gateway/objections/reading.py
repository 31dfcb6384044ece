"""Reading objections, as each role may see them, and the overdue sweep every listing runs
first.

The sweep lives with the reads because a listing runs it: an overdue objection is recorded
as such before a list shows it. :class:`ObjectionLookup` reads one objection with the
engine and the calendar alone and records nothing (as :meth:`ObjectionReader.get` always
did). Filing, answering and acknowledging are in :mod:`gateway.objections.service`.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.authorization.roles import Action, Role
from gateway.catalog.models import Dataset
from gateway.clock import Clock, utc
from gateway.db.schema import DatasetRow, ObjectionRow
from gateway.errors import NotFoundError
from gateway.governance.actor import Actor
from gateway.governance.unit_of_work import Unchanged, UnitOfWork
from gateway.objections.models import (
    AnswerKind,
    Category,
    FilerKind,
    Objection,
    ObjectionStatus,
    View,
)
from gateway.objections.receipt import ReceiptKeys
from gateway.sweeping import SweepLoop
from gateway.workdays.recount import recount_deadlines
from gateway.workflows.reading import Deadlines, is_provisional

__all__ = [
    "DEFAULT_WORKING_DAYS",
    "OVERDUE_ACTOR",
    "ObjectionLookup",
    "ObjectionReader",
    "objection_of",
]

log = logging.getLogger(__name__)

DEFAULT_WORKING_DAYS = 10

OVERDUE_ACTOR = Actor("deadline", system=True)
"""Who records that a deadline passed unanswered: nobody acted; time did."""


def objection_of(row: Any, calendar: Deadlines | None = None) -> Objection:
    def when(value: dt.datetime | None) -> dt.datetime | None:
        return utc(value) if value is not None else None

    return Objection(
        provisional=is_provisional(calendar, utc(row.filed_at), utc(row.due_at)),
        id=row.id,
        filer_kind=FilerKind(row.filer_kind),
        merchant_id=row.merchant_id,
        filed_by=row.filed_by,
        record_seq=row.record_seq,
        dataset_id=row.dataset_id,
        department=row.department,
        field=row.field,
        subject_key=row.subject_key,
        subject_checked=bool(row.subject_checked),
        category=Category(row.category),
        details=row.details or {},
        canary=bool(row.canary),
        status=ObjectionStatus(row.status),
        filed_at=utc(row.filed_at),
        due_at=utc(row.due_at),
        overdue_at=when(row.overdue_at),
        answer=AnswerKind(row.answer) if row.answer else None,
        answered_at=when(row.answered_at),
        answered_by=row.answered_by,
        reasons=tuple(row.reasons or ()),
        correction=row.correction,
        corrected_at=when(row.corrected_at),
        acknowledged_at=when(row.acknowledged_at),
    )


class ObjectionLookup:
    """One objection as its viewer may see it, read from the engine with the calendar its
    deadline was counted on; it records nothing (``dsgw objection show`` builds this
    alone). Listing, which records the overdue ones first, is :class:`ObjectionReader`'s."""

    def __init__(self, engine: AsyncEngine, calendar: Deadlines) -> None:
        self._engine = engine
        self._calendar = calendar

    @staticmethod
    def view_for(actor: Actor, objection: Objection) -> View | None:
        """How ``actor`` sees ``objection``, or None when it may not see it at all: a
        merchant its own; a department those routed to it (never one kept from it because
        it names a canary row); staff who read objections, every one."""
        if actor.merchant_id is not None:
            return View.FILER if objection.merchant_id == actor.merchant_id else None
        if actor.system or actor.applicant:
            return None
        if actor.role is None:
            return View.STAFF
        if actor.role is Role.SOURCE:
            mine = objection.department == actor.department and not objection.canary
            return View.DEPARTMENT if mine else None
        if actor.role in (Role.OPERATOR, Role.AUTHORITY, Role.SUPERVISOR):
            return View.STAFF
        return None

    def _visible(self, actor: Actor, objection: Objection) -> View:
        view = self.view_for(actor, objection)
        if view is None:
            # Not "forbidden": whether someone else's objection exists is not ours to say.
            raise NotFoundError(f"objection {objection.id} does not exist")
        return view

    @staticmethod
    def _may_read(actor: Actor) -> None:
        if actor.merchant_id is None:
            actor.may(Action.READ_OBJECTIONS)

    async def get(self, actor: Actor, objection_id: str) -> tuple[Objection, View]:
        self._may_read(actor)
        async with self._engine.connect() as conn:
            objection = await self._load(conn, objection_id)
        return objection, self._visible(actor, objection)

    async def _load(self, conn: AsyncConnection, objection_id: str) -> Objection:
        row = (
            await conn.execute(
                select(ObjectionRow.__table__).where(ObjectionRow.id == objection_id)
            )
        ).first()
        if row is None:
            raise NotFoundError(f"objection {objection_id} does not exist")
        return objection_of(row, self._calendar)

    @staticmethod
    async def _dataset(conn: AsyncConnection, dataset_id: str) -> Dataset:
        definition = await conn.scalar(
            select(DatasetRow.definition).where(DatasetRow.id == dataset_id)
        )
        if definition is None:
            raise NotFoundError(f"dataset {dataset_id} is not in the catalog")
        return Dataset.from_dict(definition)


class ObjectionReader(ObjectionLookup):
    """Reads objections for one viewer at a time and records the overdue ones."""

    def __init__(
        self,
        engine: AsyncEngine,
        uow: UnitOfWork,
        calendar: Deadlines,
        clock: Clock,
        *,
        keys: ReceiptKeys,
        working_days: int = DEFAULT_WORKING_DAYS,
    ) -> None:
        super().__init__(engine, calendar)
        self._uow = uow
        self._clock = clock
        self._keys = keys
        self._working_days = working_days
        self._sweeper = SweepLoop(
            self.sweep, name="dsgw-objections", what="objection deadline sweep", log=log
        )

    @property
    def working_days(self) -> int:
        return self._working_days

    async def recompute_provisional(self) -> list[str]:
        """Count the open objections' deadlines again on the calendar as it is now (those
        counted through a year without a loaded schedule move) and store the ones that
        moved; returns their ids. Called after ``dsgw workdays import``."""
        async with self._engine.begin() as conn:
            moved: list[str] = await recount_deadlines(
                conn,
                self._calendar,
                table=ObjectionRow,
                keys=(ObjectionRow.id,),
                start=ObjectionRow.filed_at,
                due=ObjectionRow.due_at,
                working_days=self._working_days,
                open_when=(ObjectionRow.status == ObjectionStatus.OPEN.value,),
            )
        return moved

    async def list(
        self,
        actor: Actor,
        *,
        status: ObjectionStatus | None = None,
        overdue: bool = False,
        department: str | None = None,
        dataset_id: str | None = None,
    ) -> list[tuple[Objection, View]]:
        """The objections ``actor`` may see, oldest first; ``overdue`` keeps those open at
        or past their deadline. Records overdue ones first (:meth:`sweep`)."""
        self._may_read(actor)
        await self.sweep()
        now = self._clock.now()
        query = select(ObjectionRow.__table__).order_by(ObjectionRow.filed_at, ObjectionRow.id)
        if actor.merchant_id is not None:
            query = query.where(ObjectionRow.merchant_id == actor.merchant_id)
        if actor.role is Role.SOURCE:
            query = query.where(ObjectionRow.department == (actor.department or ""))
        if status is not None:
            query = query.where(ObjectionRow.status == status.value)
        if overdue:
            query = query.where(
                ObjectionRow.status == ObjectionStatus.OPEN.value, ObjectionRow.due_at <= now
            )
        if department is not None:
            query = query.where(ObjectionRow.department == department)
        if dataset_id is not None:
            query = query.where(ObjectionRow.dataset_id == dataset_id)
        async with self._engine.connect() as conn:
            found = [objection_of(row, self._calendar) for row in (await conn.execute(query)).all()]
        out = []
        for objection in found:
            view = self.view_for(actor, objection)
            if view is not None:
                out.append((objection, view))
        return out

    async def sweep(self) -> int:
        """Record, once each, the objections whose deadline passed unanswered. They stay
        open: the record says the department was late, not that anything was decided."""
        now = self._clock.now()
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(ObjectionRow.id, ObjectionRow.department, ObjectionRow.due_at).where(
                        ObjectionRow.status == ObjectionStatus.OPEN.value,
                        ObjectionRow.overdue_at.is_(None),
                        ObjectionRow.due_at <= now,
                    )
                )
            ).all()
        count = 0
        for objection_id, department, due_at in rows:
            if await self._record_overdue(objection_id, department, utc(due_at)):
                count += 1
        return count

    async def _record_overdue(self, objection_id: str, department: str, due: dt.datetime) -> bool:
        async def apply(conn: AsyncConnection, now: dt.datetime) -> bool:
            # Seen again inside the transaction: answered, or recorded by another process.
            objection = await self._load(conn, objection_id)
            if objection.overdue_at is not None or not objection.overdue(now):
                raise Unchanged(False)
            await conn.execute(
                update(ObjectionRow)
                .where(ObjectionRow.id == objection_id)
                .values(overdue_at=due, updated_at=now)
            )
            return True

        return await self._uow.change(
            OVERDUE_ACTOR,
            "objection.overdue",
            {
                "objection_id": objection_id,
                "department": department,
                "due_at": due,
                "label": "overdue: no answer by the deadline (still open)",
            },
            apply,
        )
