"""Merchants, agreements, datasets and scenarios as the listings show them, each read from
its own table.

A listing needs one table; the policy snapshot
(:func:`gateway.governance.policy.load_snapshot`) reads and validates every dataset,
scenario, client and measure. ``dsgw merchant list``, ``agreement list``, ``dataset list``
and ``scenario list`` read here instead, on SQLAlchemy Core and the synchronous driver
(:mod:`gateway.db.reading`), so they cost a query, not a policy load and the ORM. A dataset
or scenario is still built by its model's ``from_dict``, as the snapshot builds it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from sqlalchemy import JSON, Connection, DateTime, String, column, select, table

from gateway.clock import utc
from gateway.governance.statuses import AgreementStatus, MerchantStatus, ScenarioStatus

if TYPE_CHECKING:
    from gateway.catalog.models import Dataset
    from gateway.governance.models.scenario import Scenario

__all__ = [
    "AGREEMENTS",
    "DATASETS",
    "MERCHANTS",
    "SCENARIOS",
    "AgreementListing",
    "MerchantListing",
    "list_agreements",
    "list_datasets",
    "list_merchants",
    "list_scenarios",
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

DATASETS = table("datasets", column("id", String), column("definition", JSON))
SCENARIOS = table(
    "scenarios", column("id", String), column("status", String), column("definition", JSON)
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


def list_datasets(conn: Connection) -> list[Dataset]:
    """Every catalog entry, in the store's order (as the policy snapshot has them)."""
    from gateway.catalog.models import Dataset  # here: the merchant listing needs no model

    d = DATASETS.c
    return [Dataset.from_dict(row.definition) for row in conn.execute(select(d.definition))]


def list_scenarios(conn: Connection) -> list[Scenario]:
    """Every scenario with its status, in the store's order (as the policy snapshot)."""
    from gateway.governance.models.scenario import Scenario  # here: as list_datasets

    s = SCENARIOS.c
    return [
        replace(Scenario.from_dict(row.definition), status=ScenarioStatus(row.status))
        for row in conn.execute(select(s.status, s.definition))
    ]
