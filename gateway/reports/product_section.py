"""Products, trades and settlements for the operations report; money summed exactly, in cents."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, cast, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.clock import utc
from gateway.db.schema import ProductRow, SettlementRow, TradeRow
from gateway.reports.periods import Period
from gateway.reports.queries import in_period

__all__ = ["ProductCount", "ProductsSection", "RevenueTotal", "SettlementItem", "gather_products"]

_CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class ProductCount:
    id: str
    name: str
    trades: int
    quantity: int
    amount: Decimal


@dataclass(frozen=True, slots=True)
class SettlementItem:
    id: str
    period: str
    amount: Decimal
    settled_at: dt.datetime
    trades: int


@dataclass(frozen=True, slots=True)
class RevenueTotal:
    role: str
    party: str
    trades: int
    total: Decimal


@dataclass(frozen=True, slots=True)
class ProductsSection:
    by_status: tuple[tuple[str, int], ...]
    """Every product by its current status."""
    registered: int
    trades: int
    quantity: int
    amount: Decimal
    by_product: tuple[ProductCount, ...]
    settlements: tuple[SettlementItem, ...]
    revenue: tuple[RevenueTotal, ...]
    revenue_months: tuple[str, ...]
    """Whole months of the period with settled trades (those the revenue covers)."""
    months_without_settlement: tuple[str, ...]


def _money(value: Any) -> Decimal:
    return Decimal(str(value if value is not None else 0)).quantize(_CENT)


def _cents(column: Any) -> Any:
    """A money column as whole cents: summed exactly on SQLite (whose NUMERIC is a float)
    as on PostgreSQL."""
    return func.coalesce(func.sum(cast(func.round(column * 100), BigInteger)), 0)


async def gather_products(conn: AsyncConnection, period: Period) -> ProductsSection:
    by_status = tuple(
        sorted(
            (str(s), int(n))
            for s, n in await conn.execute(
                select(ProductRow.status, func.count()).group_by(ProductRow.status)
            )
        )
    )
    registered = await conn.scalar(
        select(func.count()).select_from(ProductRow).where(in_period(ProductRow.created_at, period))
    )
    traded = in_period(TradeRow.traded_at, period)
    per_product = (
        await conn.execute(
            select(
                TradeRow.product_id,
                func.count(),
                func.coalesce(func.sum(TradeRow.quantity), 0),
                _cents(TradeRow.amount),
            )
            .where(traded)
            .group_by(TradeRow.product_id)
        )
    ).all()
    definitions = {
        str(pid): definition
        for pid, definition in await conn.execute(
            select(ProductRow.id, ProductRow.definition).where(
                ProductRow.id.in_([row[0] for row in per_product])
            )
        )
    }
    by_product = tuple(
        sorted(
            (
                ProductCount(
                    id=str(pid),
                    name=_product_name(definitions.get(str(pid))),
                    trades=int(n),
                    quantity=int(quantity),
                    amount=(Decimal(int(cents)) / 100).quantize(_CENT),
                )
                for pid, n, quantity, cents in per_product
            ),
            key=lambda p: (-p.amount, p.id),
        )
    )
    settlements = (
        await conn.execute(
            select(
                SettlementRow.id,
                SettlementRow.period,
                SettlementRow.amount,
                SettlementRow.settled_at,
            )
            .where(in_period(SettlementRow.settled_at, period))
            .order_by(SettlementRow.settled_at, SettlementRow.id)
        )
    ).all()
    counts = {
        str(sid): int(n)
        for sid, n in await conn.execute(
            select(TradeRow.settlement_id, func.count())
            .where(TradeRow.settlement_id.in_([row.id for row in settlements]))
            .group_by(TradeRow.settlement_id)
        )
    }
    return ProductsSection(
        by_status=by_status,
        registered=int(registered or 0),
        trades=sum(p.trades for p in by_product),
        quantity=sum(p.quantity for p in by_product),
        amount=sum((p.amount for p in by_product), Decimal("0.00")),
        by_product=by_product,
        settlements=tuple(
            SettlementItem(
                id=str(row.id),
                period=str(row.period),
                amount=_money(row.amount),
                settled_at=utc(row.settled_at),
                trades=counts.get(str(row.id), 0),
            )
            for row in settlements
        ),
        revenue=(),
        revenue_months=(),
        months_without_settlement=(),
    )


def _product_name(definition: Any) -> str:
    if isinstance(definition, dict) and isinstance(definition.get("name"), str):
        return str(definition["name"])
    return ""
