"""Reading products, trades and revenue statements: what needs the engine alone.

:class:`~gateway.products.service.ProductService` adds the changes, each through the unit
of work; a command that only reads (``dsgw product list``, ``dsgw revenue``) builds this
reader over the engine and opens nothing else. The role checks are the service's own.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.authorization.roles import Action
from gateway.clock import utc
from gateway.db.schema import ProductRow, TradeRow
from gateway.errors import NotFoundError
from gateway.governance.actor import Actor
from gateway.products.models import Product, ProductDefinition, ProductStatus, Trade
from gateway.products.revenue import Statement, statements
from gateway.products.settlements import check_period, settled_trades

__all__ = ["ProductReader", "product_of", "trade_of"]


def product_of(row: Any) -> Product:
    return Product(
        definition=ProductDefinition.from_dict(row.definition),
        merchant_id=row.merchant_id,
        agreement_id=row.agreement_id,
        status=ProductStatus(row.status),
        created_at=utc(row.created_at),
        check_reasons=tuple(row.check_reasons),
        filing_number=row.filing_number,
        listing_id=row.listing_id,
    )


def trade_of(row: Any) -> Trade:
    return Trade(
        exchange_trade_id=row.exchange_trade_id,
        product_id=row.product_id,
        buyer_code=row.buyer_code,
        buyer_name=row.buyer_name,
        quantity=int(row.quantity),
        unit_price=Decimal(str(row.unit_price)).quantize(Decimal("0.01")),
        amount=Decimal(str(row.amount)).quantize(Decimal("0.01")),
        traded_at=utc(row.traded_at),
        used=int(row.used),
        settlement_id=row.settlement_id,
    )


class ProductReader:
    """Products, trades and revenue as stored; reading records nothing."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(self, product_id: str) -> Product:
        async with self._engine.connect() as conn:
            return await self._load(conn, product_id)

    async def find(self, actor: Actor, *, status: ProductStatus | None = None) -> list[Product]:
        """The products ``actor`` may see (of ``status``, if given), oldest first: a merchant
        its own, staff with ``catalog.read`` every one. Raises :class:`ForbiddenError` for
        other staff."""
        query = select(ProductRow.__table__).order_by(ProductRow.created_at, ProductRow.id)
        if actor.merchant_id is not None:
            query = query.where(ProductRow.merchant_id == actor.merchant_id)
        else:
            actor.may(Action.READ_CATALOG)
        if status is not None:
            query = query.where(ProductRow.status == status.value)
        async with self._engine.connect() as conn:
            return [product_of(row) for row in (await conn.execute(query)).all()]

    @staticmethod
    async def _load(conn: AsyncConnection, product_id: str) -> Product:
        row = (
            await conn.execute(select(ProductRow.__table__).where(ProductRow.id == product_id))
        ).first()
        if row is None:
            raise NotFoundError(f"product {product_id} does not exist")
        return product_of(row)

    async def trades(self, product_id: str | None = None) -> list[Trade]:
        query = select(TradeRow.__table__).order_by(TradeRow.traded_at, TradeRow.exchange_trade_id)
        if product_id is not None:
            query = query.where(TradeRow.product_id == product_id)
        async with self._engine.connect() as conn:
            return [trade_of(row) for row in (await conn.execute(query)).all()]

    async def revenue(self, actor: Actor, period: str) -> list[Statement]:
        """The revenue statements of a settlement period (``YYYY-MM``): every trade settled
        in it, split by its product's agreement (see :mod:`gateway.products.revenue`).
        Raises :class:`ForbiddenError` for a role without ``calls.read``."""
        actor.may(Action.READ_CALLS)
        check_period(period)
        settled = await settled_trades(self._engine, period)
        if not settled:
            raise NotFoundError(f"no trade was settled for {period}")
        return statements(period, settled)

    async def usage(self) -> dict[str, int]:
        """Units delivered per trade."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(TradeRow.exchange_trade_id, TradeRow.used).where(TradeRow.used > 0)
            )
            return {trade_id: int(used) for trade_id, used in rows}

    async def count(self) -> int:
        async with self._engine.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(TradeRow)) or 0)
