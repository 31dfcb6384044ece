"""Authorization agreements between a merchant and a published scenario: granted with a
period and revenue shares, then suspended, reinstated or terminated. :meth:`insert_agreement`
is shared with the use-application workflow, which grants inside its own change."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Mapping
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.authorization.roles import Action
from gateway.catalog.checks import check_id
from gateway.clock import DEFAULT_ZONE
from gateway.db.schema import AgreementRow, MerchantRow, ScenarioRow
from gateway.errors import CatalogError, ConflictError, NotFoundError
from gateway.governance.actor import Actor
from gateway.governance.models import (
    Agreement,
    AgreementStatus,
    MerchantStatus,
    Scenario,
    ScenarioStatus,
    parse_time_value,
)
from gateway.governance.scenarios import check_grants
from gateway.governance.unit_of_work import UnitOfWork, fetch_row

__all__ = ["AgreementService"]


class AgreementService:
    """Grants agreements and sets their status."""

    def __init__(self, uow: UnitOfWork, *, zone: dt.tzinfo = DEFAULT_ZONE) -> None:
        """``zone`` is the deployment's time zone: date-only periods are its days."""
        self._uow = uow
        self._zone = zone

    async def grant_agreement(
        self,
        actor: Actor,
        *,
        merchant_id: str,
        scenario_id: str,
        starts_at: object,
        ends_at: object,
        shares: tuple[object, object, object],
        terms: Mapping[str, Any] | None = None,
        agreement_id: str | None = None,
    ) -> Agreement:
        """Grant ``merchant_id`` the whole of ``scenario_id`` for a period of at most three
        years with revenue shares summing to 100% (:meth:`Agreement.check_terms`)."""
        actor.may(Action.GRANT_AGREEMENT)
        start = parse_time_value("starts_at", starts_at, self._zone)
        end = parse_time_value("ends_at", ends_at, self._zone)
        owner, operator, processor = Agreement.check_terms(start, end, shares)
        new_id = check_id("agreement", agreement_id or f"agr-{secrets.token_hex(6)}")
        agreement = Agreement(
            new_id, merchant_id, scenario_id, start, end, owner, operator, processor
        )

        async def apply(conn: AsyncConnection, now: dt.datetime) -> Agreement:
            await self.insert_agreement(conn, now, agreement, dict(terms or {}))
            return agreement

        return await self._uow.change(
            actor,
            "agreement.granted",
            {
                "agreement_id": new_id,
                "merchant_id": merchant_id,
                "scenario_id": scenario_id,
                "starts_at": start,
                "ends_at": end,
                "shares": {"owner": owner, "operator": operator, "processor": processor},
            },
            apply,
        )

    async def insert_agreement(
        self,
        conn: AsyncConnection,
        now: dt.datetime,
        agreement: Agreement,
        terms: Mapping[str, Any],
    ) -> None:
        """Store a checked agreement: an active merchant, a published scenario whose
        datasets can still be granted, an unused id."""
        merchant_id, scenario_id = agreement.merchant_id, agreement.scenario_id
        merchant = await fetch_row(conn, MerchantRow, MerchantRow.id == merchant_id)
        if merchant is None:
            raise NotFoundError(f"merchant {merchant_id} does not exist")
        if merchant.status != MerchantStatus.ACTIVE.value:
            raise ConflictError(f"merchant {merchant_id} is {merchant.status}")
        row = await fetch_row(conn, ScenarioRow, ScenarioRow.id == scenario_id)
        if row is None:
            raise NotFoundError(f"scenario {scenario_id} does not exist")
        if row.status != ScenarioStatus.PUBLISHED.value:
            raise ConflictError(
                f"scenario {scenario_id} is {row.status}; only a published scenario can be "
                "granted (no scenario, no authorization)"
            )
        scenario = Scenario.from_dict(row.definition)
        try:
            await check_grants(conn, scenario)
        except CatalogError as exc:
            raise CatalogError(f"agreement refused: {exc.detail}", **exc.extensions) from exc
        if await conn.scalar(select(AgreementRow.id).where(AgreementRow.id == agreement.id)):
            raise ConflictError(f"agreement {agreement.id} already exists")
        await conn.execute(
            insert(AgreementRow).values(
                id=agreement.id,
                merchant_id=merchant_id,
                scenario_id=scenario_id,
                starts_at=agreement.starts_at,
                ends_at=agreement.ends_at,
                share_owner=agreement.share_owner,
                share_operator=agreement.share_operator,
                share_processor=agreement.share_processor,
                status=agreement.status.value,
                terms=dict(terms),
                created_at=now,
                updated_at=now,
            )
        )

    async def set_agreement_status(
        self, actor: Actor, agreement_id: str, status: AgreementStatus, reason: str = ""
    ) -> AgreementStatus:
        """Suspend, reinstate or terminate an agreement along the allowed transitions."""
        actor.may(Action.MANAGE_AGREEMENT)

        async def apply(conn: AsyncConnection, now: dt.datetime) -> AgreementStatus:
            row = await fetch_row(conn, AgreementRow, AgreementRow.id == agreement_id)
            if row is None:
                raise NotFoundError(f"agreement {agreement_id} does not exist")
            snapshot_agreement = Agreement(
                row.id,
                row.merchant_id,
                row.scenario_id,
                row.starts_at,
                row.ends_at,
                row.share_owner,
                row.share_operator,
                row.share_processor,
                AgreementStatus(row.status),
            )
            snapshot_agreement.check_transition(status)
            await conn.execute(
                update(AgreementRow)
                .where(AgreementRow.id == agreement_id)
                .values(status=status.value, updated_at=now)
            )
            return status

        return await self._uow.change(
            actor,
            f"agreement.{status.value}",
            {"agreement_id": agreement_id, "status": status.value, "reason": reason},
            apply,
        )
