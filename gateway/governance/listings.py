"""Merchants and agreements as the listings show them, read from their own tables.

A listing needs a handful of columns of one table; the policy snapshot
(:func:`gateway.governance.policy.load_snapshot`) reads and validates every dataset,
scenario, client and measure, and loads the models to do so. ``dsgw merchant list`` and
``dsgw agreement list`` read here instead, on SQLAlchemy Core and the synchronous driver
(:mod:`gateway.db.reading`), so they cost a query, not a policy load and the ORM.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection, DateTime, String, column, select, table

from gateway.clock import utc
from gateway.governance.statuses import AgreementStatus, MerchantStatus

__all__ = [
    "AGREEMENTS",
    "MERCHANTS",
    "AgreementListing",
    "MerchantListing",
    "list_agreements",
    "list_merchants",
]

_TIME = DateTime(timezone=True)

#: The columns the listings read (checked against the mapped schema by the tests).
MERCHANTS = table(
    "merchants",
    column("id", String),
    column("name", String),
    column("credit_code", String),
    column("status", String),
    column("created_at", _TIME),
)
AGREEMENTS = table(
    "agreements",
    column("id", String),
    column("merchant_id", String),
    column("scenario_id", String),
    column("starts_at", _TIME),
    column("ends_at", _TIME),
    column("status", String),
    column("created_at", _TIME),
)


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


def list_merchants(conn: Connection) -> list[MerchantListing]:
    """Every merchant, oldest first."""
    m = MERCHANTS.c
    query = select(m.id, m.name, m.credit_code, m.status).order_by(m.created_at, m.id)
    return [
        MerchantListing(row.id, row.name, row.credit_code, MerchantStatus(row.status))
        for row in conn.execute(query)
    ]


def list_agreements(conn: Connection) -> list[AgreementListing]:
    """Every agreement, oldest first."""
    a = AGREEMENTS.c
    query = select(a.id, a.merchant_id, a.scenario_id, a.starts_at, a.ends_at, a.status).order_by(
        a.created_at, a.id
    )
    return [
        AgreementListing(
            row.id,
            row.merchant_id,
            row.scenario_id,
            utc(row.starts_at),
            utc(row.ends_at),
            AgreementStatus(row.status),
        )
        for row in conn.execute(query)
    ]
