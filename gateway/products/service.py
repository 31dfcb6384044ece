"""Data products from registration to trade: each event one transaction with its record in
the ``products`` log stream, which is checkpointed and anchored like the call log. The
reads (products, trades, revenue statements) are in :mod:`gateway.products.reading`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.authorization.decisions import product_available
from gateway.authorization.roles import Action
from gateway.catalog.checks import check_id, expect_keys
from gateway.catalog.models import Dataset
from gateway.clock import Clock
from gateway.db.schema import (
    AgreementRow,
    DatasetRow,
    ProductRow,
    ScenarioRow,
    SettlementRow,
    TradeRow,
)
from gateway.errors import ConflictError, ForbiddenError, ValidationError
from gateway.governance.actor import Actor
from gateway.governance.models import AgreementStatus, DatasetGrant, Scenario, parse_time_value
from gateway.governance.policy import agreement_of
from gateway.governance.unit_of_work import Unchanged, UnitOfWork
from gateway.identifiers import is_valid_uscc
from gateway.products.models import (
    Product,
    ProductDefinition,
    ProductStatus,
    Trade,
    parse_money,
)
from gateway.products.reading import ProductReader, trade_of
from gateway.products.settlements import check_period
from gateway.supervision.measures import MeasureKind, active_measure
from gateway.workflows.onboarding import check_reasons

__all__ = ["ProductService"]

T = TypeVar("T")


class ProductService(ProductReader):
    """The products' changes, each one transaction with its record in the ``products``
    stream; the reads are :class:`ProductReader`'s."""

    def __init__(self, engine: AsyncEngine, uow: UnitOfWork, clock: Clock) -> None:
        super().__init__(engine)
        self._uow = uow
        self._clock = clock

    async def _change(
        self,
        actor: Actor,
        kind: str,
        body: Mapping[str, Any],
        apply: Callable[[AsyncConnection, dt.datetime], Awaitable[T]],
    ) -> T:
        return await self._uow.change(actor, kind, body, apply, stream="products")

    # -- the merchant registers ---------------------------------------------------------

    async def register(self, actor: Actor, merchant_id: str, data: Mapping[str, Any]) -> Product:
        """Register a product built on the merchant's active agreement for the product's
        scenario; raw public data is refused (see :meth:`ProductDefinition.check_not_raw`)."""
        if actor.role is not None or actor.merchant_id not in (None, merchant_id):
            raise ForbiddenError("a merchant registers its own products")
        definition = ProductDefinition.from_dict(data)

        async def apply(conn: AsyncConnection, now: dt.datetime) -> Product:
            if await conn.scalar(select(ProductRow.id).where(ProductRow.id == definition.id)):
                raise ConflictError(f"product {definition.id} already exists")
            agreement, scope = await self._agreement_scope(
                conn, merchant_id, definition.scenario_id, now
            )
            datasets = {
                row.id: Dataset.from_dict(row.definition)
                for row in (await conn.execute(select(DatasetRow.id, DatasetRow.definition)))
            }
            definition.check_not_raw(scope, datasets)
            await conn.execute(
                insert(ProductRow).values(
                    id=definition.id,
                    merchant_id=merchant_id,
                    agreement_id=agreement,
                    definition=definition.to_dict(),
                    status=ProductStatus.DRAFT.value,
                    check_reasons=[],
                    created_at=now,
                    updated_at=now,
                )
            )
            return Product(definition, merchant_id, agreement, ProductStatus.DRAFT, now)

        return await self._change(
            actor,
            "product.registered",
            {"product_id": definition.id, "merchant_id": merchant_id, **definition.to_dict()},
            apply,
        )

    @staticmethod
    async def _agreement_scope(
        conn: AsyncConnection, merchant_id: str, scenario_id: str, now: dt.datetime
    ) -> tuple[str, dict[str, DatasetGrant]]:
        rows = (
            await conn.execute(
                select(AgreementRow.__table__).where(
                    AgreementRow.merchant_id == merchant_id,
                    AgreementRow.scenario_id == scenario_id,
                    AgreementRow.status == AgreementStatus.ACTIVE.value,
                )
            )
        ).all()
        agreements = [a for a in map(agreement_of, rows) if a.usable_at(now)]
        if not agreements:
            raise ConflictError(
                f"merchant {merchant_id} has no active agreement for scenario {scenario_id}: a "
                "product is built on the merchant's own authorized scenario"
            )
        agreement = agreements[0]
        if agreement.scope is not None:
            return agreement.id, {g.dataset_id: g for g in agreement.scope}
        row = (
            await conn.execute(select(ScenarioRow.definition).where(ScenarioRow.id == scenario_id))
        ).scalar_one()
        return agreement.id, {g.dataset_id: g for g in Scenario.from_dict(row).grants}

    # -- export check and filing ------------------------------------------------------------

    async def check_export(
        self, actor: Actor, product_id: str, *, approve: bool, reasons: Sequence[str] = ()
    ) -> Product:
        """The operator's compliance check before anything leaves the platform (出域)."""
        actor.may(Action.CHECK_PRODUCT)
        cleaned = () if approve else check_reasons(reasons)
        status = ProductStatus.CHECKED if approve else ProductStatus.REJECTED
        return await self._move(
            actor,
            product_id,
            (ProductStatus.DRAFT,),
            status,
            "export check",
            {"check_reasons": list(cleaned)},
            {"reasons": list(cleaned)},
        )

    async def file(self, actor: Actor, product_id: str, filing_number: str) -> Product:
        """The authority's filing (备案): only a filed product can be listed."""
        actor.may(Action.FILE_PRODUCT)
        number = _text("filing_number", filing_number, 64)
        return await self._move(
            actor,
            product_id,
            (ProductStatus.CHECKED,),
            ProductStatus.FILED,
            "file",
            {"filing_number": number},
            {"filing_number": number},
        )

    async def list_on_exchange(self, actor: Actor, product_id: str, listing_id: str) -> Product:
        actor.may(Action.TRADE)
        listing = _text("listing_id", listing_id, 64)
        return await self._move(
            actor,
            product_id,
            (ProductStatus.FILED, ProductStatus.DELISTED),
            ProductStatus.LISTED,
            "list",
            {"listing_id": listing},
            {"listing_id": listing},
        )

    async def delist(self, actor: Actor, product_id: str, reason: str) -> Product:
        """The exchange withdraws a listing, or the supervisor delists a product
        (CS23 art. 26); no trade can be recorded for it afterwards."""
        actor.may(Action.DELIST_PRODUCT)
        (why,) = check_reasons([reason])
        return await self._move(
            actor,
            product_id,
            (ProductStatus.LISTED,),
            ProductStatus.DELISTED,
            "delist",
            {},
            {"reason": why},
        )

    async def _move(
        self,
        actor: Actor,
        product_id: str,
        sources: tuple[ProductStatus, ...],
        target: ProductStatus,
        action: str,
        values: dict[str, Any],
        body: dict[str, Any],
    ) -> Product:
        async def apply(conn: AsyncConnection, now: dt.datetime) -> Product:
            product = await self._load(conn, product_id)
            product.require(*sources, action=action)
            await conn.execute(
                update(ProductRow)
                .where(ProductRow.id == product_id)
                .values(status=target.value, updated_at=now, **values)
            )
            return await self._load(conn, product_id)

        return await self._change(
            actor, f"product.{target.value}", {"product_id": product_id, **body}, apply
        )

    # -- the exchange's trades and settlements ----------------------------------------------

    async def record_trade(self, actor: Actor, data: Mapping[str, Any]) -> Trade:
        """A trade of a listed product. Recording the same trade again is harmless (the
        exchange may retry); a different trade under a known id is refused."""
        actor.may(Action.TRADE)
        expect_keys(
            "trade",
            data,
            {
                "exchange_trade_id",
                "product",
                "buyer_code",
                "buyer_name",
                "quantity",
                "unit_price",
                "traded_at",
            },
            {"amount"},
        )
        trade_id = _text("exchange_trade_id", data["exchange_trade_id"], 64)
        product_id = check_id("product", data["product"])
        buyer_code = str(data["buyer_code"]).strip().upper()
        if not is_valid_uscc(buyer_code):
            raise ValidationError("buyer_code must be the buyer's unified social credit code")
        quantity = data["quantity"]
        if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1:
            raise ValidationError("quantity must be a positive integer")
        unit_price = parse_money("unit_price", data["unit_price"])
        amount = (unit_price * quantity).quantize(Decimal("0.01"))
        if "amount" in data and parse_money("amount", data["amount"]) != amount:
            raise ValidationError(
                f"amount {data['amount']} is not quantity × unit_price = {amount}"
            )
        trade = Trade(
            exchange_trade_id=trade_id,
            product_id=product_id,
            buyer_code=buyer_code,
            buyer_name=_text("buyer_name", data["buyer_name"], 200),
            quantity=quantity,
            unit_price=unit_price,
            amount=amount,
            traded_at=parse_time_value("traded_at", data["traded_at"]),
        )

        async def apply(conn: AsyncConnection, now: dt.datetime) -> Trade:
            existing = (
                await conn.execute(
                    select(TradeRow.__table__).where(TradeRow.exchange_trade_id == trade_id)
                )
            ).first()
            if existing is not None:
                known = trade_of(existing)
                differ = _differing_terms(known, trade)
                if differ:
                    raise ConflictError(
                        f"trade {trade_id} is already recorded with other terms "
                        f"({', '.join(differ)}); a new trade needs a new exchange_trade_id"
                    )
                raise Unchanged(known)  # the exchange retried: nothing to record again
            product = await self._load(conn, product_id)
            product.require(ProductStatus.LISTED, action="trade")
            # Delisted by a supervision measure (CS23 art. 26): no trade until it is lifted.
            product_available(await active_measure(conn, MeasureKind.PRODUCT, product_id))
            await conn.execute(
                insert(TradeRow).values(
                    exchange_trade_id=trade_id,
                    product_id=product_id,
                    buyer_code=buyer_code,
                    buyer_name=trade.buyer_name,
                    quantity=quantity,
                    unit_price=unit_price,
                    amount=amount,
                    traded_at=trade.traded_at,
                    used=0,
                    recorded_at=now,
                )
            )
            return trade

        return await self._change(actor, "trade.recorded", trade.to_dict() | {"used": None}, apply)

    async def record_settlement(self, actor: Actor, data: Mapping[str, Any]) -> dict[str, Any]:
        """The exchange settled trades for a period (``YYYY-MM``); the amount must be the
        sum of the trades, each settled once."""
        actor.may(Action.TRADE)
        expect_keys(
            "settlement", data, {"settlement_id", "period", "trades", "settled_at", "amount"}
        )
        settlement_id = _text("settlement_id", data["settlement_id"], 64)
        period = str(data["period"])
        check_period(period)
        trade_ids = data["trades"]
        if (
            not isinstance(trade_ids, list)
            or not trade_ids
            or not all(isinstance(t, str) for t in trade_ids)
            or len(set(trade_ids)) != len(trade_ids)
        ):
            raise ValidationError("trades must list distinct exchange trade ids")
        amount = parse_money("amount", data["amount"])
        settled_at = parse_time_value("settled_at", data["settled_at"])

        async def apply(conn: AsyncConnection, now: dt.datetime) -> dict[str, Any]:
            if await conn.scalar(select(SettlementRow.id).where(SettlementRow.id == settlement_id)):
                raise ConflictError(f"settlement {settlement_id} is already recorded")
            rows = (
                await conn.execute(
                    select(TradeRow.__table__).where(TradeRow.exchange_trade_id.in_(trade_ids))
                )
            ).all()
            found = {row.exchange_trade_id: trade_of(row) for row in rows}
            missing = sorted(set(trade_ids) - set(found))
            if missing:
                raise ValidationError(f"unknown trade(s): {', '.join(missing[:10])}")
            settled = sorted(t for t, trade in found.items() if trade.settlement_id)
            if settled:
                raise ConflictError(f"trade(s) already settled: {', '.join(settled[:10])}")
            total = sum((t.amount for t in found.values()), Decimal("0.00"))
            if total != amount:
                raise ValidationError(
                    f"settlement amount {amount} is not the sum of its trades, {total}"
                )
            await conn.execute(
                insert(SettlementRow).values(
                    id=settlement_id,
                    period=period,
                    amount=amount,
                    settled_at=settled_at,
                    recorded_at=now,
                )
            )
            await conn.execute(
                update(TradeRow)
                .where(TradeRow.exchange_trade_id.in_(trade_ids))
                .values(settlement_id=settlement_id)
            )
            return {
                "settlement_id": settlement_id,
                "period": period,
                "trades": len(trade_ids),
                "amount": str(amount),
            }

        return await self._change(
            actor,
            "settlement.recorded",
            {
                "settlement_id": settlement_id,
                "period": period,
                "trades": sorted(trade_ids),
                "amount": str(amount),
                "settled_at": settled_at,
            },
            apply,
        )


def _text(what: str, value: object, limit: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise ValidationError(f"{what} must be a text of 1-{limit} characters")
    return value.strip()


def _differing_terms(known: Trade, retried: Trade) -> list[str]:
    """The terms in which a retried trade differs from the recorded one: a retry must
    repeat every term, or it is a different trade under a known id."""
    terms = ("product_id", "buyer_code", "buyer_name", "quantity", "unit_price", "amount")
    out = [term for term in terms if getattr(known, term) != getattr(retried, term)]
    if known.traded_at != retried.traded_at:
        out.append("traded_at")
    return out
