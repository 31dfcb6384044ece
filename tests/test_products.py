"""Data products: raw data refused, export check and filing before listing, trades and
settlements recorded by the exchange, every event in the products stream."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from sqlalchemy import select

from gateway.authorization.roles import Role
from gateway.cli.demo import DEMO_MERCHANT, DEMO_SCENARIO, demo_credit_code
from gateway.db.schema import LogEntryRow
from gateway.errors import ConflictError, ForbiddenError, NotFoundError, ValidationError
from gateway.governance.service import LOCAL_ADMIN, Actor
from gateway.products.models import ProductStatus
from gateway.products.revenue import split
from tests.support.world import World

MERCHANT = Actor("xc-app", merchant_id=DEMO_MERCHANT)
OPERATOR = Actor("op", Role.OPERATOR)
AUTHORITY = Actor("auth", Role.AUTHORITY)
EXCHANGE = Actor("sz-exchange", Role.EXCHANGE)
SUPERVISOR = Actor("sup", Role.SUPERVISOR)


def product(**overrides: Any) -> dict[str, Any]:
    return {
        "id": "credit-score",
        "name": "企业经营稳健度评分",
        "description": "0-100 score from registered capital and status",
        "scenario": DEMO_SCENARIO,
        "delivery": "api",
        "inputs": [
            {"dataset": "enterprises", "fields": ["credit_code", "registered_capital", "status"]}
        ],
        "outputs": [
            {"name": "credit_code", "derivation": "key", "from": ["enterprises.credit_code"]},
            {
                "name": "score",
                "derivation": "score",
                "from": ["enterprises.registered_capital", "enterprises.status"],
            },
        ],
        "unit_price": "0.50",
        "unit": "call",
        "endpoint": "http://127.0.0.1:9/score",
    } | overrides


def trade(trade_id: str = "T-1", **overrides: Any) -> dict[str, Any]:
    return {
        "exchange_trade_id": trade_id,
        "product": "credit-score",
        "buyer_code": demo_credit_code("BY"),
        "buyer_name": "湘江银行股份有限公司",
        "quantity": 1000,
        "unit_price": "0.50",
        "traded_at": "2026-11-20T10:00:00+08:00",
    } | overrides


async def _kinds(world: World) -> list[str]:
    async with world.gateway.engine.connect() as conn:
        return list(
            await conn.scalars(
                select(LogEntryRow.kind)
                .where(LogEntryRow.stream == "products")
                .order_by(LogEntryRow.seq)
            )
        )


async def test_raw_public_data_is_never_a_product(world: World) -> None:
    products = world.gateway.products
    cases: list[tuple[dict[str, Any], str]] = [
        (
            product(
                outputs=[
                    {
                        "name": "credit_code",
                        "derivation": "key",
                        "from": ["enterprises.credit_code"],
                    },
                    {
                        "name": "capital",
                        "derivation": "band",
                        "from": ["enterprises.registered_capital"],
                    },
                ]
            ),
            "plain query",
        ),
        (
            product(
                inputs=[{"dataset": "enterprises", "fields": ["credit_code", "legal_rep_id"]}],
                outputs=[
                    {"name": "id", "derivation": "band", "from": ["enterprises.legal_rep_id"]},
                    {"name": "n", "derivation": "count", "from": ["enterprises.credit_code"]},
                ],
            ),
            "sensitive field enterprises.legal_rep_id readable",
        ),
        (
            product(outputs=[{"name": "x", "derivation": "copy", "from": ["enterprises.status"]}]),
            "copy of source data is not a product",
        ),
        (
            product(inputs=[{"dataset": "vehicles", "fields": ["plate"]}]),
            "does not cover dataset vehicles",
        ),
        (
            product(
                outputs=[{"name": "s", "derivation": "score", "from": ["enterprises.address"]}]
            ),
            "not among the inputs",
        ),
        (product(unit_price=0.5), "decimal string"),
    ]
    for data, message in cases:
        with pytest.raises(ValidationError, match=message):
            await products.register(MERCHANT, DEMO_MERCHANT, data)
    with pytest.raises(ForbiddenError):
        await products.register(OPERATOR, DEMO_MERCHANT, product())
    assert await products.find(LOCAL_ADMIN) == []


async def test_export_check_and_filing_come_before_listing(world: World) -> None:
    products = world.gateway.products
    registered = await products.register(MERCHANT, DEMO_MERCHANT, product())
    assert registered.status is ProductStatus.DRAFT and registered.agreement_id == "agr-demo"
    with pytest.raises(ConflictError, match="must be filed"):
        await products.list_on_exchange(EXCHANGE, "credit-score", "SZDE-001")
    with pytest.raises(ForbiddenError):
        await products.check_export(EXCHANGE, "credit-score", approve=True)
    await products.check_export(OPERATOR, "credit-score", approve=True)
    with pytest.raises(ConflictError, match="must be filed"):
        await products.list_on_exchange(EXCHANGE, "credit-score", "SZDE-001")
    with pytest.raises(ForbiddenError):
        await products.file(OPERATOR, "credit-score", "备-2026-001")
    await products.file(AUTHORITY, "credit-score", "备-2026-001")
    with pytest.raises(ConflictError, match="must be listed"):
        await products.record_trade(EXCHANGE, trade())
    listed = await products.list_on_exchange(EXCHANGE, "credit-score", "SZDE-001")
    assert listed.status is ProductStatus.LISTED and listed.listing_id == "SZDE-001"

    # A rejected export check carries its reasons.
    await products.register(
        MERCHANT, DEMO_MERCHANT, product(id="risk-report", delivery="report", endpoint=None)
    )
    with pytest.raises(ValidationError, match="reasons"):
        await products.check_export(OPERATOR, "risk-report", approve=False)
    rejected = await products.check_export(
        OPERATOR, "risk-report", approve=False, reasons=["报告含可还原的个体数据"]
    )
    assert rejected.status is ProductStatus.REJECTED
    assert rejected.check_reasons == ("报告含可还原的个体数据",)
    assert await _kinds(world) == [
        "product.registered",
        "product.checked",
        "product.filed",
        "product.listed",
        "product.registered",
        "product.rejected",
    ]


async def _listed(world: World) -> None:
    products = world.gateway.products
    await products.register(MERCHANT, DEMO_MERCHANT, product())
    await products.check_export(OPERATOR, "credit-score", approve=True)
    await products.file(AUTHORITY, "credit-score", "备-2026-001")
    await products.list_on_exchange(EXCHANGE, "credit-score", "SZDE-001")


async def test_trades_and_settlements(world: World) -> None:
    await _listed(world)
    products = world.gateway.products
    recorded = await products.record_trade(EXCHANGE, trade())
    assert recorded.amount == Decimal("500.00")
    again = await products.record_trade(EXCHANGE, trade())  # the exchange retried
    assert again == recorded
    with pytest.raises(ConflictError, match="other terms"):
        await products.record_trade(EXCHANGE, trade(quantity=999))
    with pytest.raises(ValidationError, match="quantity × unit_price"):
        await products.record_trade(EXCHANGE, trade("T-2", amount="499.99"))
    with pytest.raises(ValidationError, match="credit code"):
        await products.record_trade(EXCHANGE, trade("T-2", buyer_code="123"))
    with pytest.raises(ForbiddenError):
        await products.record_trade(MERCHANT, trade("T-2"))
    await products.record_trade(EXCHANGE, trade("T-2", quantity=3, unit_price="33.33"))
    settlement = {
        "settlement_id": "S-2026-11",
        "period": "2026-11",
        "trades": ["T-1", "T-2"],
        "settled_at": "2026-11-30T18:00:00+08:00",
        "amount": "599.99",
    }
    with pytest.raises(ValidationError, match="not the sum"):
        await products.record_settlement(EXCHANGE, settlement | {"amount": "600.00"})
    with pytest.raises(ValidationError, match="unknown trade"):
        await products.record_settlement(EXCHANGE, settlement | {"trades": ["T-1", "T-9"]})
    result = await products.record_settlement(EXCHANGE, settlement)
    assert result["amount"] == "599.99"
    with pytest.raises(ConflictError, match="already"):
        await products.record_settlement(EXCHANGE, settlement | {"settlement_id": "S-2"})
    assert {t.settlement_id for t in await products.trades()} == {"S-2026-11"}

    # The supervisor delists; no trade afterwards.
    await products.delist(SUPERVISOR, "credit-score", "超范围使用")
    with pytest.raises(ConflictError, match="must be listed"):
        await products.record_trade(EXCHANGE, trade("T-3"))
    kinds = await _kinds(world)
    assert kinds.count("trade.recorded") == 2 and kinds[-2:] == [
        "settlement.recorded",
        "product.delisted",
    ]


# --- revenue --------------------------------------------------------------------------------


@given(
    cents=st.integers(min_value=0, max_value=10**12),
    owner=st.integers(min_value=0, max_value=10_000),
    operator=st.integers(min_value=0, max_value=10_000),
)
def test_split_is_exact_to_the_cent(cents: int, owner: int, operator: int) -> None:
    assume(owner + operator <= 10_000)
    shares = (
        Decimal(owner) / 100,
        Decimal(operator) / 100,
        Decimal(10_000 - owner - operator) / 100,
    )
    amount = Decimal(cents) / 100
    parts = split(amount, shares)
    assert sum(parts) == amount
    for part, share in zip(parts, shares, strict=True):
        exact = amount * share / 100
        assert part == part.quantize(Decimal("0.01"))
        assert abs(part - exact) < Decimal("0.01")  # never more than a cent from exact


def test_split_remainders_follow_the_stated_rule() -> None:
    # 0.01 split 40/35/25: exact 0.004, 0.0035, 0.0025; the one cent goes to the largest
    # remainder, the owner.
    assert split(Decimal("0.01"), (Decimal(40), Decimal(35), Decimal(25))) == (
        Decimal("0.01"),
        Decimal("0.00"),
        Decimal("0.00"),
    )
    # Equal remainders: the fixed order owner, operator, processor decides.
    assert split(Decimal("0.02"), (Decimal("33.34"), Decimal("33.33"), Decimal("33.33"))) == (
        Decimal("0.01"),
        Decimal("0.01"),
        Decimal("0.00"),
    )


async def test_revenue_statements_sum_exactly(world: World) -> None:
    await _listed(world)
    products = world.gateway.products
    amounts = []
    for i, (quantity, price) in enumerate([(3, "33.33"), (7, "0.07"), (1, "0.01"), (999, "1.37")]):
        recorded = await products.record_trade(
            EXCHANGE, trade(f"T-{i}", quantity=quantity, unit_price=price)
        )
        amounts.append(recorded.amount)
    total = sum(amounts, Decimal("0.00"))
    await products.record_settlement(
        EXCHANGE,
        {
            "settlement_id": "S-1",
            "period": "2026-11",
            "trades": [f"T-{i}" for i in range(4)],
            "settled_at": "2026-11-30T18:00:00+08:00",
            "amount": str(total),
        },
    )
    statements = await products.revenue(LOCAL_ADMIN, "2026-11")
    assert [(s.role, s.party) for s in statements] == [
        ("owner", "city budget (city level)"),
        ("operator", "operator"),
        ("processor", DEMO_MERCHANT),
    ]
    assert sum((s.total for s in statements), Decimal("0.00")) == total
    for i, amount in enumerate(amounts):
        per_trade = [
            line.allocated for s in statements for line in s.lines if line.trade_id == f"T-{i}"
        ]
        assert sum(per_trade, Decimal("0.00")) == amount
    # agr-demo splits 40 / 35 / 25.
    owner = statements[0]
    assert all(line.share == Decimal("40.00") for line in owner.lines)
    with pytest.raises(NotFoundError):
        await products.revenue(LOCAL_ADMIN, "2026-10")
