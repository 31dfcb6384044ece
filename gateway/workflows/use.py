"""Use applications, their reviews and the agreements concluded from them, persisted.

State machine and rules: :mod:`gateway.workflows.applications`. Every change is one
transaction with its governance record. A review whose deadline passed without an answer
or an extension is turned into "deemed approved (timeout)" by :meth:`sweep`, which every
read and write of applications runs first, and which a running gateway also runs every
minute, so the record appears even when nobody looks.

Layers: :mod:`.use_records` (storage), :mod:`.use_deadlines` (the sweep),
:mod:`.use_reviews` (compliance check and reviews); here the merchant's steps and the
agreement concluded from an approved application.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.authorization.roles import Action, Role
from gateway.catalog.checks import check_id
from gateway.db.schema import (
    AgreementRow,
    MerchantRow,
    UseApplicationRow,
)
from gateway.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    ValidationError,
)
from gateway.governance.actor import Actor
from gateway.governance.models import (
    Agreement,
    DocumentRef,
    MerchantStatus,
)
from gateway.governance.policy import agreement_of
from gateway.workflows.applications import (
    COMPLIANCE_WORKING_DAYS,
    OPEN_STATUSES,
    ApplicationStatus,
    ApplicationTerms,
    UseApplication,
    parse_requirements,
)
from gateway.workflows.reading import is_provisional
from gateway.workflows.use_reviews import UseReviews

__all__ = ["UseApplicationService"]


class UseApplicationService(UseReviews):
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
        terms = ApplicationTerms.from_dict(data, self._zone)
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

        return await self._uow.change(
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
        return await self._uow.change(
            actor, "application.withdrawn", {"application_id": application_id}, apply
        )

    # -- the operator's compliance check --------------------------------------------------

    # -- the source departments' reviews --------------------------------------------------

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
            await self._agreements.insert_agreement(conn, now, agreement, terms)
            await self._set_status(
                conn, now, application_id, ApplicationStatus.AGREED, agreement_id=new_id
            )
            return agreement

        await self.sweep()
        return await self._uow.change(
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

        return await self._uow.change(
            actor,
            "agreement.subject-authorization",
            {"agreement_id": agreement_id, **entry},
            apply,
        )

    # -- helpers ----------------------------------------------------------------------------


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
