"""Reading the workflows' state: onboarding applications and the exclusion list, counted
on the working-day calendar.

What needs the engine and the calendar alone, so a command that only reads (``dsgw
onboarding list``, ``dsgw exclusions check``) builds :class:`WorkflowReader` and nothing
else; :class:`~gateway.workflows.service.WorkflowService` adds the changes.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.authorization.roles import Action
from gateway.clock import utc
from gateway.db.schema import ExclusionRow, OnboardingRow
from gateway.errors import NotFoundError
from gateway.governance.actor import Actor
from gateway.workflows.exclusions import ExclusionCategory, ExclusionEntry
from gateway.workflows.onboarding import OnboardingApplication, OnboardingStatus

__all__ = ["Deadlines", "WorkflowReader", "is_provisional", "onboarding_of"]


class Deadlines(Protocol):
    """The working-day calendar as the workflows use it."""

    def deadline(self, start: dt.datetime, n: int) -> dt.datetime: ...

    def provisional_years(self, start: dt.datetime, due: dt.datetime) -> tuple[int, ...]: ...

    @property
    def zone(self) -> dt.tzinfo:
        """The deployment zone whose days are counted."""
        ...


def is_provisional(
    calendar: Deadlines | None, start: dt.datetime | None, due: dt.datetime | None
) -> bool:
    """Whether the deadline ``due`` counted from ``start`` went through a year without a
    loaded holiday schedule (so it was counted on weekends alone there)."""
    if calendar is None or start is None or due is None:
        return False
    return bool(calendar.provisional_years(start, due))


def _entry(row: Any) -> ExclusionEntry:
    return ExclusionEntry(
        row.credit_code,
        row.name,
        ExclusionCategory(row.category),
        row.source,
        row.listed_on,
        row.lifted_on,
    )


def onboarding_of(row: Any, calendar: Deadlines | None = None) -> OnboardingApplication:
    return OnboardingApplication(
        provisional=is_provisional(calendar, utc(row.submitted_at), utc(row.due_at)),
        id=row.id,
        merchant_id=row.merchant_id,
        name=row.name,
        credit_code=row.credit_code,
        details=row.details,
        status=OnboardingStatus(row.status),
        exclusion_hits=tuple(row.exclusion_hits),
        submitted_at=utc(row.submitted_at),
        due_at=utc(row.due_at),
        decided_at=utc(row.decided_at) if row.decided_at else None,
        decided_by=row.decided_by,
        reasons=tuple(row.reasons),
    )


class WorkflowReader:
    """Onboarding applications and exclusion entries as stored; reading records nothing."""

    def __init__(self, engine: AsyncEngine, calendar: Deadlines) -> None:
        self._engine = engine
        self._calendar = calendar

    @property
    def deadlines(self) -> Deadlines:
        """The calendar deadlines are counted on."""
        return self._calendar

    async def exclusions_of(self, credit_code: str, day: dt.date) -> list[ExclusionEntry]:
        """The entries in force on ``day`` for ``credit_code``."""
        async with self._engine.connect() as conn:
            return await self._exclusions(conn, credit_code, day)

    @staticmethod
    async def _exclusions(
        conn: AsyncConnection, credit_code: str, day: dt.date
    ) -> list[ExclusionEntry]:
        rows = (
            await conn.execute(
                select(ExclusionRow.__table__).where(
                    ExclusionRow.credit_code == credit_code.upper()
                )
            )
        ).all()
        return [entry for entry in map(_entry, rows) if entry.in_force(day)]

    async def onboarding(self, application_id: str) -> OnboardingApplication:
        async with self._engine.connect() as conn:
            return await self._onboarding_row(conn, application_id)

    async def list_onboarding(
        self, actor: Actor, status: OnboardingStatus | None = None
    ) -> list[OnboardingApplication]:
        """Onboarding applications (of ``status``, if given), oldest first, for those who
        decide them. Raises :class:`ForbiddenError` for a role without
        ``merchant.register``."""
        actor.may(Action.REGISTER_MERCHANT)
        return await self.find_onboarding(status)

    async def find_onboarding(
        self, status: OnboardingStatus | None = None
    ) -> list[OnboardingApplication]:
        """Onboarding applications (of ``status``, if given), oldest first, with no role
        check: for a caller that decided itself who sees them
        (:func:`gateway.workflows.tasks.tasks_for` shows the supervisor the operator's
        tasks)."""
        query = select(OnboardingRow.__table__).order_by(OnboardingRow.submitted_at)
        if status is not None:
            query = query.where(OnboardingRow.status == status.value)
        async with self._engine.connect() as conn:
            return [onboarding_of(row, self._calendar) for row in (await conn.execute(query)).all()]

    async def _onboarding_row(
        self, conn: AsyncConnection, application_id: str
    ) -> OnboardingApplication:
        row = (
            await conn.execute(
                select(OnboardingRow.__table__).where(OnboardingRow.id == application_id)
            )
        ).first()
        if row is None:
            raise NotFoundError(f"onboarding application {application_id} does not exist")
        return onboarding_of(row, self._calendar)
