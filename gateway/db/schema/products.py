"""Tables of data products: the products, their trades and the settlements of trades."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Numeric,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from gateway.db.schema.base import Base, JsonDoc, Timestamp

__all__ = ["ProductRow", "SettlementRow", "TradeRow"]


class ProductRow(Base):
    """A data product (ZW art. 23-24): its definition, the agreement it is built on, and
    where it stands between registration, export check, filing and listing."""

    __tablename__ = "products"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), index=True)
    agreement_id: Mapped[str] = mapped_column(ForeignKey("agreements.id"))
    definition: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    status: Mapped[str] = mapped_column(String(16), index=True)
    check_reasons: Mapped[list[Any]] = mapped_column(JsonDoc)
    filing_number: Mapped[str | None] = mapped_column(String(64))
    listing_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp)


class TradeRow(Base):
    """A trade the exchange recorded. ``used`` counts the units delivered against it,
    raised by one atomic update per delivery that never passes ``quantity``."""

    __tablename__ = "trades"
    __table_args__ = (CheckConstraint("used >= 0 AND used <= quantity", name="used_within"),)

    exchange_trade_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    product_id: Mapped[str] = mapped_column(ForeignKey("products.id"), index=True)
    buyer_code: Mapped[str] = mapped_column(String(18), index=True)
    buyer_name: Mapped[str] = mapped_column(String(200))
    quantity: Mapped[int] = mapped_column(BigInteger)
    unit_price: Mapped[Decimal] = mapped_column(Numeric(15, 2))
    amount: Mapped[Decimal] = mapped_column(Numeric(18, 2))
    traded_at: Mapped[dt.datetime] = mapped_column(Timestamp, index=True)
    used: Mapped[int] = mapped_column(BigInteger)
    settlement_id: Mapped[str | None] = mapped_column(ForeignKey("settlements.id"), index=True)
    recorded_at: Mapped[dt.datetime] = mapped_column(Timestamp)


class SettlementRow(Base):
    """The exchange settled a set of trades for a period; revenue is split per period."""

    __tablename__ = "settlements"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    period: Mapped[str] = mapped_column(String(16), index=True)
    amount: Mapped[Decimal] = mapped_column(Numeric(18, 2))
    settled_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    recorded_at: Mapped[dt.datetime] = mapped_column(Timestamp)
