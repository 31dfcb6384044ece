"""Merchants: registered with a checked unified social credit code, then suspended or
reinstated. :func:`new_merchant` and :func:`insert_merchant` are shared with the onboarding
workflow, which registers a merchant inside its own change."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.authorization.roles import Action
from gateway.catalog.checks import check_id
from gateway.db.schema import MerchantRow
from gateway.errors import ConflictError, NotFoundError, ValidationError
from gateway.governance.actor import Actor
from gateway.governance.models import Merchant, MerchantStatus
from gateway.governance.unit_of_work import UnitOfWork, fetch_row
from gateway.identifiers import is_valid_uscc

__all__ = ["MerchantService", "insert_merchant", "new_merchant"]


def new_merchant(merchant_id: str, name: str, credit_code: str) -> Merchant:
    """A merchant with a checked id, name and unified social credit code (GB 32100)."""
    check_id("merchant", merchant_id)
    if not name.strip() or len(name) > 200:
        raise ValidationError("merchant name must be 1-200 characters")
    code = credit_code.strip().upper()
    if not is_valid_uscc(code):
        raise ValidationError(
            f"merchant credit code {credit_code!r} is not a valid unified social credit "
            "code (GB 32100: 18 characters with a correct check character)"
        )
    return Merchant(merchant_id, name.strip(), code)


async def insert_merchant(conn: AsyncConnection, merchant: Merchant, now: dt.datetime) -> None:
    """Store a new merchant; :class:`ConflictError` if its id or credit code is taken."""
    if await conn.scalar(select(MerchantRow.id).where(MerchantRow.id == merchant.id)):
        raise ConflictError(f"merchant {merchant.id} already exists")
    code = merchant.credit_code
    if await conn.scalar(select(MerchantRow.id).where(MerchantRow.credit_code == code)):
        raise ConflictError(f"a merchant with credit code {code} already exists")
    await conn.execute(
        insert(MerchantRow).values(
            id=merchant.id,
            name=merchant.name,
            credit_code=code,
            status=merchant.status.value,
            created_at=now,
            updated_at=now,
        )
    )


class MerchantService:
    """Registers merchants and sets their status."""

    def __init__(self, uow: UnitOfWork) -> None:
        self._uow = uow

    async def register_merchant(
        self, actor: Actor, merchant_id: str, name: str, credit_code: str
    ) -> Merchant:
        """Register an active merchant directly, without the onboarding workflow."""
        actor.may(Action.REGISTER_MERCHANT)
        merchant = new_merchant(merchant_id, name, credit_code)

        async def apply(conn: AsyncConnection, now: dt.datetime) -> Merchant:
            await insert_merchant(conn, merchant, now)
            return merchant

        return await self._uow.change(
            actor,
            "merchant.registered",
            {
                "merchant_id": merchant_id,
                "name": merchant.name,
                "credit_code": merchant.credit_code,
            },
            apply,
        )

    async def set_merchant_status(
        self, actor: Actor, merchant_id: str, status: MerchantStatus, reason: str = ""
    ) -> Merchant:
        """Suspend or reinstate a merchant; its tokens stop working at the next call, since
        the policy snapshot checks the merchant's standing."""
        actor.may(
            Action.SUSPEND_MERCHANT
            if status is MerchantStatus.SUSPENDED
            else Action.REGISTER_MERCHANT
        )

        async def apply(conn: AsyncConnection, now: dt.datetime) -> Merchant:
            row = await fetch_row(conn, MerchantRow, MerchantRow.id == merchant_id)
            if row is None:
                raise NotFoundError(f"merchant {merchant_id} does not exist")
            await conn.execute(
                update(MerchantRow)
                .where(MerchantRow.id == merchant_id)
                .values(status=status.value, updated_at=now)
            )
            return Merchant(row.id, row.name, row.credit_code, status)

        return await self._uow.change(
            actor,
            f"merchant.{status.value}",
            {"merchant_id": merchant_id, "status": status.value, "reason": reason},
            apply,
        )
