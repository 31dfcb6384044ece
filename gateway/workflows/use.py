"""Use applications, their reviews and the agreements concluded from them, persisted.

State machine and rules: :mod:`gateway.workflows.applications`. Every change is one
transaction with its governance record. A review whose deadline passed without an answer
or an extension is turned into "deemed approved (timeout)" by :meth:`sweep`, which every
read and write of applications runs first, and which a running gateway also runs every
minute, so the record appears even when nobody looks.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.authorization.roles import Action, Role
from gateway.catalog.models import Dataset, check_id
from gateway.clock import Clock, utc
from gateway.db.schema import (
    AgreementRow,
    DatasetRow,
    MerchantRow,
    ReviewRow,
    ScenarioRow,
    UseApplicationRow,
)
from gateway.dependencies import DependencyHealth
from gateway.errors import (
    ConflictError,
    DsgwError,
    ForbiddenError,
    NotFoundError,
    ValidationError,
)
from gateway.governance.models import (
    Agreement,
    AgreementStatus,
    DocumentRef,
    MerchantStatus,
    Scenario,
    ScenarioStatus,
    renewal_from,
)
from gateway.governance.policy import agreement_of
from gateway.governance.service import Actor, GovernanceService, Unchanged
from gateway.workflows.applications import (
    COMPLIANCE_WORKING_DAYS,
    MAX_EXTENSION_WORKING_DAYS,
    OPEN_STATUSES,
    REVIEW_WORKING_DAYS,
    ApplicationStatus,
    ApplicationTerms,
    Requirement,
    Review,
    ReviewStatus,
    UseApplication,
    parse_requirements,
)
from gateway.workflows.onboarding import check_reasons
from gateway.workflows.service import Deadlines, is_provisional

__all__ = ["UseApplicationService"]

log = logging.getLogger(__name__)

TIMEOUT_ACTOR = Actor("deadline", system=True)
"""Who records a deemed approval: nobody decided; the deadline passed."""


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


class UseApplicationService:
    def __init__(
        self,
        engine: AsyncEngine,
        governance: GovernanceService,
        calendar: Deadlines,
        clock: Clock,
        *,
        health: DependencyHealth | None = None,
    ) -> None:
        self._engine = engine
        self._governance = governance
        self._calendar = calendar
        self._clock = clock
        self._sweeper: asyncio.Task[None] | None = None
        # A store outage is logged there once; the sweep outlives it.
        self._health = health or DependencyHealth()

    async def recompute_provisional(self) -> list[str]:
        """Count the open deadlines again that were provisional (counted through a year
        without a loaded schedule) on the calendar as it is now, and store the ones that
        moved; returns the ids of those (an
        application once per moved deadline). Called after ``dsgw workdays import``."""
        moved: list[str] = []
        async with self._engine.begin() as conn:
            checks = (
                await conn.execute(
                    select(
                        UseApplicationRow.id,
                        UseApplicationRow.submitted_at,
                        UseApplicationRow.compliance_due_at,
                    )
                    .where(UseApplicationRow.status == ApplicationStatus.COMPLIANCE_CHECK.value)
                    .with_for_update()
                )
            ).all()
            for check in checks:
                due = self._calendar.deadline(utc(check.submitted_at), COMPLIANCE_WORKING_DAYS)
                if due != utc(check.compliance_due_at):
                    await conn.execute(
                        update(UseApplicationRow)
                        .where(UseApplicationRow.id == check.id)
                        .values(compliance_due_at=due)
                    )
                    moved.append(check.id)
            # An extended review keeps its extension as granted; only the original
            # deadline of a review not extended is counted again.
            reviews = (
                await conn.execute(
                    select(
                        ReviewRow.application_id,
                        ReviewRow.department,
                        ReviewRow.opened_at,
                        ReviewRow.due_at,
                    )
                    .where(
                        ReviewRow.status == ReviewStatus.PENDING.value,
                        ReviewRow.extended_until.is_(None),
                        ReviewRow.opened_at.is_not(None),
                    )
                    .with_for_update()
                )
            ).all()
            for row in reviews:
                due = self._calendar.deadline(utc(row.opened_at), REVIEW_WORKING_DAYS)
                if row.due_at is None or due != utc(row.due_at):
                    await conn.execute(
                        update(ReviewRow)
                        .where(
                            ReviewRow.application_id == row.application_id,
                            ReviewRow.department == row.department,
                        )
                        .values(due_at=due)
                    )
                    moved.append(row.application_id)
        return moved

    def start_sweeper(
        self, interval: float = 60.0, *, also: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Record deemed approvals in the background, so they appear on time even when
        nobody reads the applications; ``also`` runs with every round (the check for next
        year's holiday schedule)."""
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(
                self._sweep_forever(interval, also), name="dsgw-sweep"
            )

    async def _sweep_forever(
        self, interval: float, also: Callable[[], Awaitable[None]] | None
    ) -> None:
        while True:
            try:
                await self.sweep()
                if also is not None:
                    await also()
            except (DsgwError, SQLAlchemyError, OSError) as exc:  # the next round tries again
                if not self._health.absorb(exc):
                    log.warning("deadline sweep failed, will retry: %s", exc)
            await asyncio.sleep(interval)

    async def stop_sweeper(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    # -- reading --------------------------------------------------------------------------

    async def get(self, actor: Actor, application_id: str) -> UseApplication:
        """One application, as ``actor`` may see it: a merchant its own, a department those
        it reviews, other staff any."""
        await self.sweep()
        async with self._engine.connect() as conn:
            application = await self._load(conn, application_id)
        self._check_visible(actor, application)
        return application

    async def list(
        self, actor: Actor, status: ApplicationStatus | None = None
    ) -> list[UseApplication]:
        await self.sweep()
        query = select(UseApplicationRow.__table__).order_by(UseApplicationRow.submitted_at)
        if status is not None:
            query = query.where(UseApplicationRow.status == status.value)
        if actor.merchant_id is not None:
            query = query.where(UseApplicationRow.merchant_id == actor.merchant_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
            found = [await self._with_reviews(conn, row) for row in rows]
        return [a for a in found if self._visible(actor, a)]

    @staticmethod
    def _visible(actor: Actor, application: UseApplication) -> bool:
        if actor.merchant_id is not None:
            return application.merchant_id == actor.merchant_id
        if actor.role is Role.SOURCE:
            return any(r.department == actor.department for r in application.reviews)
        return actor.role in (None, Role.OPERATOR, Role.AUTHORITY, Role.SUPERVISOR)

    def _check_visible(self, actor: Actor, application: UseApplication) -> None:
        if not self._visible(actor, application):
            # Not "forbidden": whether another merchant's application exists is not ours to say.
            raise NotFoundError(f"application {application.id} does not exist")

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

    # -- the merchant ---------------------------------------------------------------------

    async def submit(
        self, actor: Actor, merchant_id: str, data: Mapping[str, Any]
    ) -> UseApplication:
        """A merchant applies for a published scenario with its data requirement list,
        purpose, period and safeguards; the operator's 5-working-day check starts now."""
        if actor.merchant_id not in (None, merchant_id) or actor.role is not None:
            raise ForbiddenError("only the merchant itself applies for the use of data")
        if not isinstance(data, Mapping):
            raise ValidationError("an application must be an object")
        unknown = sorted(
            set(data)
            - {"scenario", "requirements", "purpose", "period_start", "period_end", "safeguards"}
        )
        if unknown:
            raise ValidationError(f"application: unknown member(s) {', '.join(unknown)}")
        scenario_id = check_id("scenario", data.get("scenario"))
        terms = ApplicationTerms.from_dict(data, self._governance.zone)
        application_id = f"app-{secrets.token_hex(6)}"

        async def apply(conn: AsyncConnection, now: dt.datetime) -> UseApplication:
            merchant = (
                await conn.execute(
                    select(MerchantRow.__table__).where(MerchantRow.id == merchant_id)
                )
            ).first()
            if merchant is None:
                raise NotFoundError(f"merchant {merchant_id} does not exist")
            if merchant.status != MerchantStatus.ACTIVE.value:
                raise ConflictError(f"merchant {merchant_id} is {merchant.status}")
            scenario = await self._published_scenario(conn, scenario_id)
            datasets = await self._datasets(conn)
            requirements, _scope = parse_requirements(data.get("requirements"), scenario, datasets)
            for requirement in requirements:
                if not datasets[requirement.dataset_id].grantable:
                    raise ConflictError(
                        f"dataset {requirement.dataset_id} can no longer be granted"
                    )
            application = UseApplication(
                id=application_id,
                merchant_id=merchant_id,
                scenario_id=scenario_id,
                requirements=requirements,
                terms=terms,
                status=ApplicationStatus.COMPLIANCE_CHECK,
                submitted_at=now,
                compliance_due_at=(due := self._calendar.deadline(now, COMPLIANCE_WORKING_DAYS)),
                provisional=is_provisional(self._calendar, now, due),
            )
            await conn.execute(
                insert(UseApplicationRow).values(
                    id=application.id,
                    merchant_id=merchant_id,
                    scenario_id=scenario_id,
                    requirements=[r.to_dict() for r in requirements],
                    terms=terms.to_dict(),
                    status=application.status.value,
                    submitted_at=now,
                    compliance_due_at=application.compliance_due_at,
                    reasons=[],
                    updated_at=now,
                )
            )
            return application

        return await self._governance.change(
            actor,
            "application.submitted",
            {
                "application_id": application_id,
                "merchant_id": merchant_id,
                "scenario_id": scenario_id,
                "requirements": data.get("requirements"),
                **terms.to_dict(),
            },
            apply,
        )

    async def withdraw(self, actor: Actor, application_id: str) -> UseApplication:
        async def apply(conn: AsyncConnection, now: dt.datetime) -> UseApplication:
            application = await self._load(conn, application_id)
            if actor.merchant_id not in (None, application.merchant_id) or actor.role:
                raise NotFoundError(f"application {application_id} does not exist")
            application.check_status(*OPEN_STATUSES)
            await self._set_status(conn, now, application_id, ApplicationStatus.WITHDRAWN)
            return await self._load(conn, application_id)

        await self.sweep()
        return await self._governance.change(
            actor, "application.withdrawn", {"application_id": application_id}, apply
        )

    # -- the operator's compliance check --------------------------------------------------

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
        return await self._governance.change(
            actor,
            "application.compliance-passed" if approve else "application.compliance-failed",
            {"application_id": application_id, "reasons": list(cleaned)},
            apply,
        )

    # -- the source departments' reviews --------------------------------------------------

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
        return await self._governance.change(
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
        return await self._governance.change(
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

            await self._governance.change(
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

        return await self._governance.change(
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

    # -- the agreement --------------------------------------------------------------------

    async def conclude_agreement(
        self,
        actor: Actor,
        application_id: str,
        *,
        shares: tuple[object, object, object],
        fees: str,
        termination: str,
        subject_authorizations: Sequence[Mapping[str, Any]] = (),
        agreement_id: str | None = None,
    ) -> Agreement:
        """The agreement of an approved application: its parties, exactly its requirement
        list as scope, its period (at most 3 years), fees, revenue shares and termination
        conditions (CS23 art. 8, 21, 22; ZW art. 19)."""
        actor.may(Action.GRANT_AGREEMENT)
        for what, text in (("fees", fees), ("termination", termination)):
            if not isinstance(text, str) or not text.strip() or len(text) > 4000:
                raise ValidationError(f"{what} must be a text of 1-4000 characters")
        letters = [_subject_letter(item) for item in subject_authorizations]
        new_id = check_id("agreement", agreement_id or f"agr-{secrets.token_hex(6)}")

        async def apply(conn: AsyncConnection, now: dt.datetime) -> Agreement:
            application = await self._load(conn, application_id)
            application.check_status(ApplicationStatus.APPROVED)
            scenario = await self._published_scenario(conn, application.scenario_id)
            _requirements, scope = parse_requirements(
                [r.to_dict() for r in application.requirements],
                scenario,
                await self._datasets(conn),
            )
            requested = {r.dataset_id for r in application.requirements}
            for letter in letters:
                if letter["dataset"] not in requested:
                    raise ValidationError(
                        f"a letter of authorization for {letter['dataset']}, which the "
                        "application does not request"
                    )
            owner, operator, processor = Agreement.check_terms(
                application.terms.starts_at, application.terms.ends_at, shares
            )
            agreement = Agreement(
                new_id,
                application.merchant_id,
                application.scenario_id,
                application.terms.starts_at,
                application.terms.ends_at,
                owner,
                operator,
                processor,
                scope=scope,
                subject_authorized=frozenset(letter["dataset"] for letter in letters),
            )
            terms = {
                "application_id": application_id,
                "parties": {
                    "merchant": application.merchant_id,
                    "operator": "operator",
                    "authority": actor.id,
                },
                "purpose": application.terms.purpose,
                "safeguards": application.terms.safeguards,
                "scope": [grant.to_dict() for grant in scope],
                "fees": fees.strip(),
                "termination": termination.strip(),
                "subject_authorizations": letters,
            }
            await self._governance.insert_agreement(conn, now, agreement, terms)
            await self._set_status(
                conn, now, application_id, ApplicationStatus.AGREED, agreement_id=new_id
            )
            return agreement

        await self.sweep()
        return await self._governance.change(
            actor,
            "agreement.concluded",
            {"agreement_id": new_id, "application_id": application_id, "letters": letters},
            apply,
        )

    async def add_subject_authorization(
        self, actor: Actor, agreement_id: str, letter: Mapping[str, Any]
    ) -> Agreement:
        """Attach the data subjects' letter of authorization for one dataset of the
        agreement's scope; its clear fields are delivered unmasked from the next call."""
        actor.may(Action.GRANT_AGREEMENT)
        entry = _subject_letter(letter)

        async def apply(conn: AsyncConnection, now: dt.datetime) -> Agreement:
            row = (
                await conn.execute(
                    select(AgreementRow.__table__).where(AgreementRow.id == agreement_id)
                )
            ).first()
            if row is None:
                raise NotFoundError(f"agreement {agreement_id} does not exist")
            agreement = agreement_of(row)
            if agreement.scope is not None and entry["dataset"] not in {
                g.dataset_id for g in agreement.scope
            }:
                raise ValidationError(
                    f"agreement {agreement_id} does not cover dataset {entry['dataset']}"
                )
            terms = dict(row.terms or {})
            letters = [
                item
                for item in terms.get("subject_authorizations", [])
                if item["dataset"] != entry["dataset"]
            ]
            terms["subject_authorizations"] = [*letters, entry]
            await conn.execute(
                update(AgreementRow)
                .where(AgreementRow.id == agreement_id)
                .values(terms=terms, updated_at=now)
            )
            return replace(
                agreement, subject_authorized=agreement.subject_authorized | {entry["dataset"]}
            )

        return await self._governance.change(
            actor,
            "agreement.subject-authorization",
            {"agreement_id": agreement_id, **entry},
            apply,
        )

    # -- helpers ----------------------------------------------------------------------------

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


def _subject_letter(item: Mapping[str, Any]) -> dict[str, Any]:
    """``{"dataset": ..., "letter": {title, reference, sha256}}``: which dataset's subjects
    authorized the use, and the letter (kept outside the gateway) pinned by its hash."""
    if not isinstance(item, Mapping) or set(item) != {"dataset", "letter"}:
        raise ValidationError(
            'a subject authorization is {"dataset": ..., "letter": {title, reference, sha256}}'
        )
    dataset_id = check_id("dataset", item["dataset"])
    letter = DocumentRef.from_dict("letter", item["letter"])
    return {"dataset": dataset_id, "letter": letter.to_dict()}
