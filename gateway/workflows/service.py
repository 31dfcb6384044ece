"""The authorization workflows as persisted state machines: merchant onboarding and the
exclusion list (this module), use applications and their reviews, agreements.

Every state change goes through :meth:`gateway.governance.unit_of_work.UnitOfWork.change`,
so it commits together with its record in the governance stream (and is anchored with it).
Deadlines come from the working-day calendar and the injected clock: tests move time
instead of sleeping.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.authorization.roles import Action
from gateway.clock import Clock
from gateway.db.schema import ExclusionRow, OnboardingRow
from gateway.errors import ConflictError
from gateway.governance.actor import Actor
from gateway.governance.merchants import insert_merchant, new_merchant
from gateway.governance.models import Merchant
from gateway.governance.unit_of_work import UnitOfWork
from gateway.workdays.recount import recount_deadlines
from gateway.workflows.exclusions import ExclusionEntry
from gateway.workflows.onboarding import (
    ONBOARDING_WORKING_DAYS,
    OnboardingApplication,
    OnboardingStatus,
    OnboardingSubmission,
    check_reasons,
)
from gateway.workflows.reading import Deadlines, WorkflowReader, is_provisional

__all__ = ["ExclusionImport", "WorkflowService"]


@dataclass(frozen=True, slots=True)
class ExclusionImport:
    added: int
    updated: int
    unchanged: int

    def to_dict(self) -> dict[str, int]:
        return {"added": self.added, "updated": self.updated, "unchanged": self.unchanged}


class WorkflowService(WorkflowReader):
    """Onboarding and the exclusion list, each change a governance record; the reads are
    :class:`~gateway.workflows.reading.WorkflowReader`'s."""

    def __init__(
        self,
        engine: AsyncEngine,
        uow: UnitOfWork,
        calendar: Deadlines,
        clock: Clock,
    ) -> None:
        super().__init__(engine, calendar)
        self._uow = uow
        self._clock = clock

    async def recompute_provisional(self) -> list[str]:
        """Count the open deadlines again that were provisional (counted through a year
        without a loaded schedule) on the calendar as it is now, and store the ones that
        moved; returns the ids of those. Called after ``dsgw workdays import``."""
        async with self._engine.begin() as conn:
            moved: list[str] = await recount_deadlines(
                conn,
                self._calendar,
                table=OnboardingRow,
                keys=(OnboardingRow.id,),
                start=OnboardingRow.submitted_at,
                due=OnboardingRow.due_at,
                working_days=ONBOARDING_WORKING_DAYS,
                open_when=(OnboardingRow.status == OnboardingStatus.SUBMITTED.value,),
            )
        return moved

    # -- exclusion list -----------------------------------------------------------------

    @staticmethod
    def authorize_exclusions(actor: Actor) -> None:
        """Raise :class:`ForbiddenError` unless ``actor`` may import the exclusion list. The
        HTTP shell asks before it reads the upload, so a caller without the role cannot make
        the gateway read a large file; :meth:`import_exclusions` asks again."""
        actor.may(Action.REGISTER_MERCHANT)

    async def import_exclusions(
        self, actor: Actor, entries: Sequence[ExclusionEntry], *, source_name: str = ""
    ) -> ExclusionImport:
        """Add new entries and record lifts of known ones; importing the same list twice
        changes nothing. One governance record for the whole import."""
        self.authorize_exclusions(actor)
        counts = {"added": 0, "updated": 0, "unchanged": 0}

        async def apply(conn: AsyncConnection, now: dt.datetime) -> ExclusionImport:
            counts.update(added=0, updated=0, unchanged=0)
            for entry in entries:
                key = (
                    ExclusionRow.credit_code == entry.credit_code,
                    ExclusionRow.category == entry.category.value,
                    ExclusionRow.listed_on == entry.listed_on,
                )
                row = (await conn.execute(select(ExclusionRow.__table__).where(*key))).first()
                if row is None:
                    await conn.execute(
                        insert(ExclusionRow).values(
                            credit_code=entry.credit_code,
                            name=entry.name,
                            category=entry.category.value,
                            source=entry.source,
                            listed_on=entry.listed_on,
                            lifted_on=entry.lifted_on,
                            imported_at=now,
                        )
                    )
                    counts["added"] += 1
                elif row.lifted_on != entry.lifted_on or row.name != entry.name:
                    await conn.execute(
                        update(ExclusionRow)
                        .where(*key)
                        .values(lifted_on=entry.lifted_on, name=entry.name, imported_at=now)
                    )
                    counts["updated"] += 1
                else:
                    counts["unchanged"] += 1
            return ExclusionImport(**counts)

        return await self._uow.change(
            actor,
            "exclusions.imported",
            {"source": source_name, "entries": len(entries)},
            apply,
        )

    # -- merchant onboarding ------------------------------------------------------------

    async def submit_onboarding(
        self, actor: Actor, data: Mapping[str, Any]
    ) -> OnboardingApplication:
        """Record an application; the operator's 5-working-day deadline starts now. The
        exclusion list is checked at once so the operator sees any hit with the task."""
        submission = OnboardingSubmission.from_dict(data)
        application_id = f"onb-{secrets.token_hex(6)}"
        status_key = secrets.token_urlsafe(24)
        details = {
            **submission.details(),
            "status_key_sha256": hashlib.sha256(status_key.encode()).hexdigest(),
        }

        async def apply(conn: AsyncConnection, now: dt.datetime) -> OnboardingApplication:
            open_ones = await conn.scalar(
                select(OnboardingRow.id).where(
                    OnboardingRow.credit_code == submission.credit_code,
                    OnboardingRow.status == OnboardingStatus.SUBMITTED.value,
                )
            )
            if open_ones:
                raise ConflictError(
                    f"an onboarding application for {submission.credit_code} is already open "
                    f"({open_ones}); wait for its answer or withdraw it"
                )
            hits = await self._exclusions(conn, submission.credit_code, now.date())
            application = OnboardingApplication(
                id=application_id,
                merchant_id=submission.merchant_id,
                name=submission.name,
                credit_code=submission.credit_code,
                details=details,
                status=OnboardingStatus.SUBMITTED,
                exclusion_hits=tuple(hit.to_dict() for hit in hits),
                submitted_at=now,
                due_at=(due := self._calendar.deadline(now, ONBOARDING_WORKING_DAYS)),
                status_key=status_key,
                provisional=is_provisional(self._calendar, now, due),
            )
            await conn.execute(
                insert(OnboardingRow).values(
                    id=application.id,
                    merchant_id=application.merchant_id,
                    name=application.name,
                    credit_code=application.credit_code,
                    details=dict(application.details),
                    status=application.status.value,
                    exclusion_hits=[dict(hit) for hit in application.exclusion_hits],
                    submitted_at=now,
                    due_at=application.due_at,
                    reasons=[],
                    updated_at=now,
                )
            )
            return application

        return await self._uow.change(
            actor,
            "onboarding.submitted",
            {
                "application_id": application_id,
                "merchant_id": submission.merchant_id,
                "credit_code": submission.credit_code,
            },
            apply,
        )

    async def decide_onboarding(
        self,
        actor: Actor,
        application_id: str,
        *,
        approve: bool,
        reasons: Sequence[str] = (),
    ) -> tuple[OnboardingApplication, Merchant | None]:
        """The operator's answer. Approval registers the merchant in the same transaction
        and is refused for a company on the exclusion list; a rejection lists its reasons."""
        actor.may(Action.REGISTER_MERCHANT)
        cleaned = () if approve else check_reasons(reasons)

        async def apply(
            conn: AsyncConnection, now: dt.datetime
        ) -> tuple[OnboardingApplication, Merchant | None]:
            application = await self._onboarding_row(conn, application_id)
            application.check_open()
            merchant = None
            if approve:
                hits = await self._exclusions(conn, application.credit_code, now.date())
                if hits:
                    listed = "; ".join(
                        f"{h.category.value} since {h.listed_on} ({h.source})" for h in hits
                    )
                    raise ConflictError(
                        f"{application.name} ({application.credit_code}) is on the exclusion "
                        f"list: {listed}; it cannot be onboarded (CS23 art. 18); reject the "
                        "application with this reason"
                    )
                merchant = new_merchant(
                    application.merchant_id, application.name, application.credit_code
                )
                await insert_merchant(conn, merchant, now)
            status = OnboardingStatus.APPROVED if approve else OnboardingStatus.REJECTED
            await conn.execute(
                update(OnboardingRow)
                .where(OnboardingRow.id == application_id)
                .values(
                    status=status.value,
                    decided_at=now,
                    decided_by=actor.id,
                    reasons=list(cleaned),
                    updated_at=now,
                )
            )
            decided = await self._onboarding_row(conn, application_id)
            return decided, merchant

        return await self._uow.change(
            actor,
            "onboarding.approved" if approve else "onboarding.rejected",
            {"application_id": application_id, "reasons": list(cleaned)},
            apply,
        )

    async def withdraw_onboarding(self, actor: Actor, application_id: str) -> OnboardingApplication:
        async def apply(conn: AsyncConnection, now: dt.datetime) -> OnboardingApplication:
            application = await self._onboarding_row(conn, application_id)
            application.check_open()
            await conn.execute(
                update(OnboardingRow)
                .where(OnboardingRow.id == application_id)
                .values(status=OnboardingStatus.WITHDRAWN.value, decided_at=now, updated_at=now)
            )
            return await self._onboarding_row(conn, application_id)

        return await self._uow.change(
            actor, "onboarding.withdrawn", {"application_id": application_id}, apply
        )
