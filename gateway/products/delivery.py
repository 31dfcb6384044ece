"""Delivering a product to its buyer, governed like a data call.

A buyer (a company that bought the product on the exchange) calls the product's API at the
gateway with a delivery token. The gateway checks that the product is listed, takes one unit
from the buyer's oldest trade of it that has units left (one atomic update that never passes
the purchased quantity), forwards the request to the processor's service, and returns only
the outputs the product declared. The call record names the product, the trade and the
buyer, so every delivery can be reconciled with the exchange's ledger; a unit is given back
when the service fails, so a buyer never pays for nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.authorization.decisions import product_deliverable
from gateway.authorization.tokens import AccessClaims
from gateway.db.schema import ProductRow, TradeRow
from gateway.errors import (
    NotEntitledError,
    NotFoundError,
    OutOfScopeError,
    SourceUnavailableError,
    SuspendedError,
    ValidationError,
)
from gateway.governance.policy import PolicySnapshot
from gateway.ledger.records import CallRecord
from gateway.products.models import ProductDefinition, ProductStatus

__all__ = ["DeliveryService", "ProductServiceClient", "forward_json"]


def forward_json(body: Mapping[str, Any]) -> bytes:
    """The buyer's request body as JSON for the product's service, passed on as sent.

    Numbers with a fraction were read as :class:`~decimal.Decimal` (exact, see
    ``gateway.api.bodies``); they go on as the same JSON number, not a float's approximation
    (and :func:`json.dumps` cannot write a ``Decimal`` at all)."""
    return _json_text(dict(body)).encode("utf-8")


def _json_text(value: Any) -> str:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValidationError("a number in the body is not finite", field="body")
        return str(value)  # e.g. 1.25, 1.8796537724380605E+24: both JSON numbers
    if isinstance(value, dict):
        members = (
            f"{json.dumps(str(key), ensure_ascii=False)}:{_json_text(item)}"
            for key, item in value.items()
        )
        return "{" + ",".join(members) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_json_text(item) for item in value) + "]"
    return json.dumps(value, ensure_ascii=False)


class ProductServiceClient(Protocol):
    """Calls a product's service (the processor's API) for one delivery.

    Kept behind this interface so the delivery rules (entitlement, units, declared outputs)
    stay free of any HTTP library; ``gateway.api.delivery_client`` implements it."""

    async def ask(self, endpoint: str, payload: bytes) -> dict[str, Any]:
        """POST ``payload`` (JSON) to ``endpoint`` and return its JSON object answer.

        Raises :class:`SourceUnavailableError` when the service fails, is unreachable or
        does not answer a JSON object."""
        ...

    async def close(self) -> None: ...


class DeliveryService:
    def __init__(self, engine: AsyncEngine, client: ProductServiceClient) -> None:
        self._engine = engine
        self._client = client

    async def close(self) -> None:
        await self._client.close()

    async def deliver(
        self,
        snapshot: PolicySnapshot,
        claims: AccessClaims,
        product_id: str,
        body: Mapping[str, Any],
        record: CallRecord,
    ) -> dict[str, Any]:
        """One delivery, decided on ``snapshot`` (the policy view the token was verified
        against); raises a :class:`DsgwError` for every refusal, after noting in ``record``
        what was asked."""
        record.parameters["product"] = product_id
        record.parameters["buyer"] = claims.subject
        if claims.product_id != product_id:
            raise OutOfScopeError(
                f"the token is for product {claims.product_id}; this call names {product_id}",
                refused={"product": product_id},
            )
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(ProductRow.definition, ProductRow.status, ProductRow.merchant_id).where(
                        ProductRow.id == product_id
                    )
                )
            ).first()
        if row is None:
            raise NotFoundError(f"product {product_id} does not exist")
        definition = ProductDefinition.from_dict(row.definition)
        record.merchant_id = row.merchant_id
        if row.status != ProductStatus.LISTED.value:
            raise SuspendedError(
                f"product {product_id} is {row.status}: it is not delivered",
                product=product_id,
            )
        product_deliverable(snapshot, product_id)
        if definition.endpoint is None:
            raise NotFoundError(f"product {product_id} is delivered as a {definition.delivery}")
        # Made before a unit is taken: a body that cannot be passed on costs nothing.
        payload = forward_json(body)
        trade_id = await self._take_unit(product_id, claims.subject)
        record.parameters["trade"] = trade_id
        record.fields = [o.name for o in definition.outputs]
        try:
            answer = await self._client.ask(definition.endpoint, payload)
        except Exception:
            # The service failed (or, a bug, the call did): the buyer pays for nothing.
            await self._give_back(trade_id)
            record.parameters["refunded"] = True
            raise
        missing = [o.name for o in definition.outputs if o.name not in answer]
        if missing:
            await self._give_back(trade_id)
            record.parameters["refunded"] = True
            raise SourceUnavailableError(
                f"product {product_id}: the service answered without output(s) "
                f"{', '.join(missing)}; the unit was given back"
            )
        # Only what the product declared leaves, whatever else the service said.
        result = {o.name: answer[o.name] for o in definition.outputs}
        record.rows = 1
        return {"product": product_id, "trade": trade_id, "result": result}

    async def _take_unit(self, product_id: str, buyer_code: str) -> str:
        """One unit from the buyer's oldest trade of the product with units left."""
        async with self._engine.connect() as conn:
            candidates = (
                await conn.scalars(
                    select(TradeRow.exchange_trade_id)
                    .where(
                        TradeRow.product_id == product_id,
                        TradeRow.buyer_code == buyer_code,
                        TradeRow.used < TradeRow.quantity,
                    )
                    .order_by(TradeRow.traded_at, TradeRow.exchange_trade_id)
                )
            ).all()
        for trade_id in candidates:
            async with self._engine.begin() as conn:
                taken = await conn.execute(
                    update(TradeRow)
                    .where(
                        TradeRow.exchange_trade_id == trade_id,
                        TradeRow.used < TradeRow.quantity,
                    )
                    .values(used=TradeRow.used + 1)
                )
            if taken.rowcount == 1:
                return str(trade_id)
        raise NotEntitledError(
            f"buyer {buyer_code} has no units of product {product_id} left: buy more on the "
            "exchange",
            product=product_id,
        )

    async def _give_back(self, trade_id: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                update(TradeRow)
                .where(TradeRow.exchange_trade_id == trade_id, TradeRow.used > 0)
                .values(used=TradeRow.used - 1)
            )
