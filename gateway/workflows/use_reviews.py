"""The review of a use application: the operator's compliance check, then the departments.

Each source department whose data is asked for reviews within its working-day deadline,
which it may extend once; the last answer settles the application.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.authorization.roles import Action, Role
from gateway.db.schema import (
    ReviewRow,
    UseApplicationRow,
)
from gateway.errors import (
    ConflictError,
    ForbiddenError,
    ValidationError,
)
from gateway.governance.actor import Actor
from gateway.workflows.applications import (
    MAX_EXTENSION_WORKING_DAYS,
    REVIEW_WORKING_DAYS,
    ApplicationStatus,
    Review,
    ReviewStatus,
    UseApplication,
)
from gateway.workflows.onboarding import check_reasons
from gateway.workflows.use_deadlines import UseDeadlines

__all__ = ["UseReviews"]


class UseReviews(UseDeadlines):
    """The operator's compliance check and the departments' reviews and extensions."""

    async def check_compliance(
        self, actor: Actor, application_id: str, *, approve: bool, reasons: Sequence[str] = ()
    ) -> UseApplication:
        """The operator's compliance check (ZW art. 20). Passing it opens one review per
        source department owning a requested dataset, each due in 10 working days."""
        actor.may(Action.CHECK_APPLICATION)
        cleaned = () if approve else check_reasons(reasons)

        async def apply(conn: AsyncConnection, now: dt.datetime) -> UseApplication:
            application = await self._load(conn, application_id)
            application.check_status(ApplicationStatus.COMPLIANCE_CHECK)
            values: dict[str, Any] = {
                "checked_at": now,
                "checked_by": actor.id,
                "reasons": [f"compliance check: {r}" for r in cleaned],
                "updated_at": now,
            }
            if not approve:
                values["status"] = ApplicationStatus.REJECTED.value
            else:
                values["status"] = ApplicationStatus.DEPARTMENT_REVIEW.value
                datasets = await self._datasets(conn)
                by_department: dict[str, list[str]] = {}
                for requirement in application.requirements:
                    provider = datasets[requirement.dataset_id].provider
                    by_department.setdefault(provider, []).append(requirement.dataset_id)
                due = self._calendar.deadline(now, REVIEW_WORKING_DAYS)
                for department, names in sorted(by_department.items()):
                    await conn.execute(
                        insert(ReviewRow).values(
                            application_id=application_id,
                            department=department,
                            datasets=names,
                            status=ReviewStatus.PENDING.value,
                            opened_at=now,
                            due_at=due,
                            reasons=[],
                        )
                    )
            await conn.execute(
                update(UseApplicationRow)
                .where(UseApplicationRow.id == application_id)
                .values(values)
            )
            return await self._load(conn, application_id)

        await self.sweep()
        return await self._uow.change(
            actor,
            "application.compliance-passed" if approve else "application.compliance-failed",
            {"application_id": application_id, "reasons": list(cleaned)},
            apply,
        )

    def _department(self, actor: Actor, department: str | None) -> str:
        actor.may(Action.REVIEW_APPLICATION)
        if actor.role is Role.SOURCE:
            if not actor.department:
                raise ForbiddenError(
                    "this source client is bound to no department; issue it with --department"
                )
            if department not in (None, actor.department):
                raise ForbiddenError(f"a client of {actor.department} reviews only for it")
            return actor.department
        if not department:
            raise ValidationError("name the department whose review this is")
        return department

    async def review(
        self,
        actor: Actor,
        application_id: str,
        *,
        approve: bool,
        reasons: Sequence[str] = (),
        department: str | None = None,
    ) -> UseApplication:
        """A source department's answer (ZW art. 21). A rejection carries reasons and
        rejects the application; the last approval approves it."""
        who = self._department(actor, department)
        cleaned = () if approve else check_reasons(reasons)

        async def apply(conn: AsyncConnection, now: dt.datetime) -> UseApplication:
            application = await self._load(conn, application_id)
            application.check_status(ApplicationStatus.DEPARTMENT_REVIEW)
            review = application.review_of(who)
            self._check_pending(application, review, now)
            status = ReviewStatus.APPROVED if approve else ReviewStatus.REJECTED
            await conn.execute(
                update(ReviewRow)
                .where(ReviewRow.application_id == application_id, ReviewRow.department == who)
                .values(
                    status=status.value,
                    decided_at=now,
                    decided_by=actor.id,
                    reasons=list(cleaned),
                )
            )
            await self._settle(conn, now, application_id)
            return await self._load(conn, application_id)

        await self.sweep()
        return await self._uow.change(
            actor,
            "review.approved" if approve else "review.rejected",
            {"application_id": application_id, "department": who, "reasons": list(cleaned)},
            apply,
        )

    async def extend_review(
        self,
        actor: Actor,
        application_id: str,
        *,
        working_days: int,
        reason: str,
        department: str | None = None,
    ) -> UseApplication:
        """A formal extension, filed before the deadline, once, with a reason: the only way
        a silent reviewer avoids being deemed to approve."""
        who = self._department(actor, department)
        if not 1 <= working_days <= MAX_EXTENSION_WORKING_DAYS:
            raise ValidationError(f"an extension is 1 to {MAX_EXTENSION_WORKING_DAYS} working days")
        (why,) = check_reasons([reason])

        async def apply(conn: AsyncConnection, now: dt.datetime) -> UseApplication:
            application = await self._load(conn, application_id)
            application.check_status(ApplicationStatus.DEPARTMENT_REVIEW)
            review = application.review_of(who)
            self._check_pending(application, review, now)
            if review.extended_until is not None:
                raise ConflictError(
                    f"{who} already extended its review of {application_id} until "
                    f"{review.extended_until.isoformat()}; a review is extended once"
                )
            assert review.due_at is not None
            # Counted on from the original deadline's last working day.
            until = self._calendar.deadline(
                review.due_at - dt.timedelta(microseconds=1), working_days
            )
            await conn.execute(
                update(ReviewRow)
                .where(ReviewRow.application_id == application_id, ReviewRow.department == who)
                .values(extended_until=until, extension_reason=why)
            )
            return await self._load(conn, application_id)

        await self.sweep()
        return await self._uow.change(
            actor,
            "review.extended",
            {
                "application_id": application_id,
                "department": who,
                "working_days": working_days,
                "reason": why,
            },
            apply,
        )

    @staticmethod
    def _check_pending(application: UseApplication, review: Review, now: dt.datetime) -> None:
        if review.timed_out(now):
            raise ConflictError(
                f"the review of {application.id} by {review.department} was due by "
                f"{review.effective_due.isoformat() if review.effective_due else '?'}; "
                "it is deemed approved (timeout)"
            )
        if review.status is not ReviewStatus.PENDING:
            raise ConflictError(
                f"{review.department} already answered on application {application.id} "
                f"({review.status.value})"
            )
