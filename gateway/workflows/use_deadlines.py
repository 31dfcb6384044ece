"""The deadlines of use applications: deemed approvals, renewal reminders, the sweeper.

A review whose deadline passed without an answer or an extension becomes "deemed approved
(timeout)" here. :meth:`UseDeadlines.sweep` runs before every read and write of
applications, and in the background every minute, so the record appears on time even when
nobody looks.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.clock import utc
from gateway.db.schema import (
    AgreementRow,
    ReviewRow,
)
from gateway.governance.actor import Actor
from gateway.governance.models import (
    AgreementStatus,
    renewal_from,
)
from gateway.governance.unit_of_work import Unchanged
from gateway.sweeping import SweepLoop
from gateway.workflows.applications import (
    ApplicationStatus,
    ReviewStatus,
)
from gateway.workflows.use_records import UseApplicationRecords

__all__ = ["TIMEOUT_ACTOR", "UseDeadlines"]

log = logging.getLogger(__name__)

TIMEOUT_ACTOR = Actor("deadline", system=True)
"""Who records a deemed approval: nobody decided; the deadline passed."""


class UseDeadlines(UseApplicationRecords):
    """Records what the passing of time decides: deemed approvals and renewal reminders."""

    def start_sweeper(
        self, interval: float = 60.0, *, also: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Record deemed approvals in the background, so they appear on time even when
        nobody reads the applications; ``also`` runs with every round (the check for next
        year's holiday schedule)."""
        if self._sweeper is None:
            self._also = also
            self._sweeper = SweepLoop(
                self._sweep_round,
                name="dsgw-sweep",
                what="deadline sweep",
                log=log,
                health=self._health,
            )
            self._sweeper.start(interval)

    async def _sweep_round(self) -> None:
        await self.sweep()
        if self._also is not None:
            await self._also()

    async def stop_sweeper(self) -> None:
        if self._sweeper is not None:
            await self._sweeper.stop()
            self._sweeper = None

    async def sweep(self) -> int:
        """Record every review whose deadline passed unanswered as deemed approved, each in
        its own governance record, and settle its application. Returns how many."""
        now = self._clock.now()
        due = func.coalesce(ReviewRow.extended_until, ReviewRow.due_at)
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(
                        ReviewRow.application_id,
                        ReviewRow.department,
                        due,
                        ReviewRow.extended_until.is_not(None),
                    ).where(ReviewRow.status == ReviewStatus.PENDING.value, due <= now)
                )
            ).all()
        count = 0
        for application_id, department, deadline, extended in rows:
            if await self._deem(application_id, department, utc(deadline), bool(extended), now):
                count += 1
        await self._remind_renewals(now)
        return count

    async def _remind_renewals(self, now: dt.datetime) -> None:
        """Record, once per agreement, that it entered its last 3 months: the merchant
        must re-apply to continue (CS23 art. 22). Tasks show it until the end."""
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(AgreementRow.id, AgreementRow.ends_at, AgreementRow.terms).where(
                        AgreementRow.status == AgreementStatus.ACTIVE.value
                    )
                )
            ).all()
        for agreement_id, ends_at, terms in rows:
            ends_at = utc(ends_at)
            if (terms or {}).get("renewal_reminded_at") or not (
                renewal_from(ends_at) <= now < ends_at
            ):
                continue

            async def apply(
                conn: AsyncConnection, at: dt.datetime, agreement_id: str = agreement_id
            ) -> None:
                row = (
                    await conn.execute(
                        select(AgreementRow.terms).where(AgreementRow.id == agreement_id)
                    )
                ).scalar_one()
                if (row or {}).get("renewal_reminded_at"):
                    raise Unchanged  # another process reminded first
                updated = dict(row or {})
                updated["renewal_reminded_at"] = at.isoformat()
                await conn.execute(
                    update(AgreementRow)
                    .where(AgreementRow.id == agreement_id)
                    .values(terms=updated)
                )

            await self._uow.change(
                TIMEOUT_ACTOR,
                "agreement.renewal-due",
                {"agreement_id": agreement_id, "ends_at": ends_at},
                apply,
            )

    async def _deem(
        self,
        application_id: str,
        department: str,
        deadline: dt.datetime,
        extended: bool,
        now: dt.datetime,
    ) -> bool:
        async def apply(conn: AsyncConnection, _at: dt.datetime) -> bool:
            # Seen again inside the transaction: another process may have recorded it, or
            # the department answered, since the sweep looked.
            application = await self._load(conn, application_id)
            review = application.review_of(department)
            if application.status is not ApplicationStatus.DEPARTMENT_REVIEW or not (
                review.timed_out(now)
            ):
                raise Unchanged(False)
            await conn.execute(
                update(ReviewRow)
                .where(
                    ReviewRow.application_id == application_id,
                    ReviewRow.department == department,
                    ReviewRow.status == ReviewStatus.PENDING.value,
                )
                .values(
                    status=ReviewStatus.DEEMED_APPROVED.value,
                    decided_at=deadline,
                    decided_by=TIMEOUT_ACTOR.id,
                )
            )
            await self._settle(conn, now, application_id)
            return True

        return await self._uow.change(
            TIMEOUT_ACTOR,
            "review.deemed-approved",
            {
                "application_id": application_id,
                "department": department,
                "deadline": deadline,
                "label": "deemed approved (timeout)",
                "extended": extended,
            },
            apply,
        )
