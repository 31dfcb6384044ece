"""Merchants and agreements as the listings show them, read from their own tables.

A listing needs a handful of columns of one table; the policy snapshot
(:func:`gateway.governance.policy.load_snapshot`) reads and validates every dataset,
scenario, client and measure, and loads the models to do so. ``dsgw merchant list`` and
``dsgw agreement list`` read here instead, so they cost a query, not a policy load.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.clock import utc
from gateway.db.schema import AgreementRow, MerchantRow
from gateway.governance.statuses import AgreementStatus, MerchantStatus

__all__ = ["AgreementListing", "MerchantListing", "list_agreements", "list_merchants"]


@dataclass(frozen=True, slots=True)
class MerchantListing:
    id: str
    name: str
    credit_code: str
    status: MerchantStatus


@dataclass(frozen=True, slots=True)
class AgreementListing:
    id: str
    merchant_id: str
    scenario_id: str
    starts_at: dt.datetime
    ends_at: dt.datetime
    status: AgreementStatus


async def list_merchants(engine: AsyncEngine) -> list[MerchantListing]:
    """Every merchant, oldest first."""
    query = select(
        MerchantRow.id, MerchantRow.name, MerchantRow.credit_code, MerchantRow.status
    ).order_by(MerchantRow.created_at, MerchantRow.id)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [
        MerchantListing(row.id, row.name, row.credit_code, MerchantStatus(row.status))
        for row in rows
    ]


async def list_agreements(engine: AsyncEngine) -> list[AgreementListing]:
    """Every agreement, oldest first."""
    query = select(
        AgreementRow.id,
        AgreementRow.merchant_id,
        AgreementRow.scenario_id,
        AgreementRow.starts_at,
        AgreementRow.ends_at,
        AgreementRow.status,
    ).order_by(AgreementRow.created_at, AgreementRow.id)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [
        AgreementListing(
            row.id,
            row.merchant_id,
            row.scenario_id,
            utc(row.starts_at),
            utc(row.ends_at),
            AgreementStatus(row.status),
        )
        for row in rows
    ]
