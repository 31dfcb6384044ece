"""Use applications as stored: rows to models, status changes, the lookups every step needs.

The lowest layer of :class:`gateway.workflows.use.UseApplicationService`; the layers above
(deadlines, reviews, the merchant's and operator's steps) decide, this one reads and writes.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.catalog.models import Dataset
from gateway.clock import DEFAULT_ZONE, Clock, utc
from gateway.db.schema import (
    DatasetRow,
    ReviewRow,
    ScenarioRow,
    UseApplicationRow,
)
from gateway.dependencies import DependencyHealth
from gateway.errors import (
    ConflictError,
    NotFoundError,
)
from gateway.governance.agreements import AgreementService
from gateway.governance.models import (
    Scenario,
    ScenarioStatus,
)
from gateway.governance.unit_of_work import UnitOfWork
from gateway.sweeping import SweepLoop
from gateway.workdays.recount import recount_deadlines
from gateway.workflows.applications import (
    COMPLIANCE_WORKING_DAYS,
    REVIEW_WORKING_DAYS,
    ApplicationStatus,
    ApplicationTerms,
    Requirement,
    Review,
    ReviewStatus,
    UseApplication,
)
from gateway.workflows.reading import Deadlines, is_provisional

__all__ = ["UseApplicationRecords"]

log = logging.getLogger(__name__)


def _application(
    row: Any, reviews: Sequence[Any], calendar: Deadlines | None = None
) -> UseApplication:
    submitted, due = utc(row.submitted_at), utc(row.compliance_due_at)
    return UseApplication(
        provisional=is_provisional(calendar, submitted, due),
        id=row.id,
        merchant_id=row.merchant_id,
        scenario_id=row.scenario_id,
        requirements=tuple(Requirement.from_dict(r) for r in row.requirements),
        terms=ApplicationTerms.from_dict(row.terms),
        status=ApplicationStatus(row.status),
        submitted_at=utc(row.submitted_at),
        compliance_due_at=utc(row.compliance_due_at),
        reviews=tuple(_review(r, calendar) for r in reviews),
        checked_at=utc(row.checked_at) if row.checked_at else None,
        checked_by=row.checked_by,
        reasons=tuple(row.reasons),
        agreement_id=row.agreement_id,
    )


def _review(row: Any, calendar: Deadlines | None = None) -> Review:
    def when(value: dt.datetime | None) -> dt.datetime | None:
        return utc(value) if value is not None else None

    return Review(
        provisional=is_provisional(
            calendar, when(row.opened_at), when(row.extended_until) or when(row.due_at)
        ),
        department=row.department,
        datasets=tuple(row.datasets),
        status=ReviewStatus(row.status),
        opened_at=when(row.opened_at),
        due_at=when(row.due_at),
        extended_until=when(row.extended_until),
        extension_reason=row.extension_reason,
        decided_at=when(row.decided_at),
        decided_by=row.decided_by,
        reasons=tuple(row.reasons),
    )


class UseApplicationRecords:
    """The service state and its storage helpers; see ``UseApplicationService``."""

    def __init__(
        self,
        engine: AsyncEngine,
        uow: UnitOfWork,
        agreements: AgreementService,
        calendar: Deadlines,
        clock: Clock,
        *,
        zone: dt.tzinfo = DEFAULT_ZONE,
        health: DependencyHealth | None = None,
    ) -> None:
        """``agreements`` stores the agreement an application concludes in, with the checks
        of a direct grant; ``zone`` is the deployment's time zone (date-only periods)."""
        self._engine = engine
        self._uow = uow
        self._agreements = agreements
        self._zone = zone
        self._calendar = calendar
        self._clock = clock
        # A store outage is logged there once; the sweep outlives it.
        self._health = health or DependencyHealth()
        self._sweeper: SweepLoop | None = None
        self._also: Callable[[], Awaitable[None]] | None = None

    async def recompute_provisional(self) -> list[str]:
        """Count the open deadlines again that were provisional (counted through a year
        without a loaded schedule) on the calendar as it is now, and store the ones that
        moved; returns the ids of those (an
        application once per moved deadline). Called after ``dsgw workdays import``."""
        async with self._engine.begin() as conn:
            moved: list[str] = await recount_deadlines(
                conn,
                self._calendar,
                table=UseApplicationRow,
                keys=(UseApplicationRow.id,),
                start=UseApplicationRow.submitted_at,
                due=UseApplicationRow.compliance_due_at,
                working_days=COMPLIANCE_WORKING_DAYS,
                open_when=(UseApplicationRow.status == ApplicationStatus.COMPLIANCE_CHECK.value,),
            )
            # An extended review keeps its extension as granted; only the original
            # deadline of a review not extended is counted again.
            moved += await recount_deadlines(
                conn,
                self._calendar,
                table=ReviewRow,
                keys=(ReviewRow.application_id, ReviewRow.department),
                start=ReviewRow.opened_at,
                due=ReviewRow.due_at,
                working_days=REVIEW_WORKING_DAYS,
                open_when=(
                    ReviewRow.status == ReviewStatus.PENDING.value,
                    ReviewRow.extended_until.is_(None),
                    ReviewRow.opened_at.is_not(None),
                ),
            )
        return moved

    async def _load(self, conn: AsyncConnection, application_id: str) -> UseApplication:
        row = (
            await conn.execute(
                select(UseApplicationRow.__table__).where(UseApplicationRow.id == application_id)
            )
        ).first()
        if row is None:
            raise NotFoundError(f"application {application_id} does not exist")
        return await self._with_reviews(conn, row)

    async def _with_reviews(self, conn: AsyncConnection, row: Any) -> UseApplication:
        reviews = (
            await conn.execute(
                select(ReviewRow.__table__)
                .where(ReviewRow.application_id == row.id)
                .order_by(ReviewRow.department)
            )
        ).all()
        return _application(row, reviews, self._calendar)

    async def _settle(self, conn: AsyncConnection, now: dt.datetime, application_id: str) -> None:
        """After a review changed: any rejection rejects the application (with every
        rejecting department's reasons); all approved (or deemed) approves it."""
        application = await self._load(conn, application_id)
        rejected = [r for r in application.reviews if r.status is ReviewStatus.REJECTED]
        if rejected:
            reasons = [f"{r.department}: {reason}" for r in rejected for reason in r.reasons]
            await self._set_status(
                conn, now, application_id, ApplicationStatus.REJECTED, reasons=reasons
            )
        elif all(r.status is not ReviewStatus.PENDING for r in application.reviews):
            await self._set_status(conn, now, application_id, ApplicationStatus.APPROVED)

    @staticmethod
    async def _set_status(
        conn: AsyncConnection,
        now: dt.datetime,
        application_id: str,
        status: ApplicationStatus,
        *,
        reasons: Sequence[str] | None = None,
        agreement_id: str | None = None,
    ) -> None:
        values: dict[str, Any] = {"status": status.value, "updated_at": now}
        if reasons is not None:
            values["reasons"] = list(reasons)
        if agreement_id is not None:
            values["agreement_id"] = agreement_id
        await conn.execute(
            update(UseApplicationRow).where(UseApplicationRow.id == application_id).values(values)
        )

    @staticmethod
    async def _published_scenario(conn: AsyncConnection, scenario_id: str) -> Scenario:
        row = (
            await conn.execute(select(ScenarioRow.__table__).where(ScenarioRow.id == scenario_id))
        ).first()
        if row is None:
            raise NotFoundError(f"scenario {scenario_id} does not exist")
        if row.status != ScenarioStatus.PUBLISHED.value:
            raise ConflictError(
                f"scenario {scenario_id} is {row.status}; applications are for published "
                "scenarios only (no scenario, no authorization)"
            )
        return replace(Scenario.from_dict(row.definition), status=ScenarioStatus.PUBLISHED)

    @staticmethod
    async def _datasets(conn: AsyncConnection) -> dict[str, Dataset]:
        rows = (await conn.execute(select(DatasetRow.id, DatasetRow.definition))).all()
        return {row.id: Dataset.from_dict(row.definition) for row in rows}
