"""Settlement periods and the trades settled in one: what revenue statements are made from."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.schema import AgreementRow, ProductRow, ScenarioRow, SettlementRow, TradeRow
from gateway.errors import ValidationError
from gateway.products.revenue import SettledTrade, owner_budget

__all__ = ["check_period", "settled_trades"]

_PERIOD = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def check_period(period: str) -> None:
    """A settlement period is one month, ``YYYY-MM``. Raises :class:`ValidationError`."""
    if not _PERIOD.match(period):
        raise ValidationError("period must be a month, YYYY-MM")


async def settled_trades(engine: AsyncEngine, period: str) -> list[SettledTrade]:
    """Every trade settled in ``period``, with its product's agreement shares and the
    budget its owner's share goes to (empty if none was settled)."""
    query = (
        select(
            TradeRow.exchange_trade_id,
            TradeRow.amount,
            ProductRow.id,
            ProductRow.merchant_id,
            AgreementRow.id,
            AgreementRow.share_owner,
            AgreementRow.share_operator,
            AgreementRow.share_processor,
            ScenarioRow.definition,
        )
        .join(SettlementRow, TradeRow.settlement_id == SettlementRow.id)
        .join(ProductRow, TradeRow.product_id == ProductRow.id)
        .join(AgreementRow, ProductRow.agreement_id == AgreementRow.id)
        .join(ScenarioRow, AgreementRow.scenario_id == ScenarioRow.id)
        .where(SettlementRow.period == period)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()

    def money(value: Any) -> Decimal:
        return Decimal(str(value)).quantize(Decimal("0.01"))

    return [
        SettledTrade(
            trade_id=row[0],
            product_id=row[2],
            agreement_id=row[4],
            amount=money(row[1]),
            shares=(money(row[5]), money(row[6]), money(row[7])),
            owner_budget=owner_budget(row[8]),
            processor=row[3],
        )
        for row in rows
    ]
