"""Products over HTTP, with the processor's service as a real HTTP server on loopback: the
merchant registers, the operator checks, the authority files, the exchange lists and trades,
the buyer receives deliveries within what it bought."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import encode_basic_auth, web
from aiohttp.test_utils import TestServer
from sqlalchemy import select

from gateway.authorization.roles import Role
from gateway.cli.demo import DEMO_SCENARIO, demo_credit_code
from gateway.db.schema import LogEntryRow, TradeRow
from gateway.governance.service import LOCAL_ADMIN
from tests.support.world import World

BUYER = demo_credit_code("BY")


@pytest.fixture
async def service() -> AsyncIterator[TestServer]:
    """The processor's scoring service: answers a score, and also something it should not."""

    async def score(request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("fail"):
            return web.json_response({"error": "model down"}, status=500)
        return web.json_response(
            {"credit_code": body["credit_code"], "score": 87, "legal_rep_id": "430102..."}
        )

    app = web.Application()
    app.router.add_post("/score", score)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


async def _token(world: World, client_id: str, secret: str, scope: str) -> str:
    resp = await world.client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": scope},
        headers={"Authorization": encode_basic_auth(client_id, secret)},
    )
    body = await resp.json()
    assert resp.status == 200, body
    return str(body["access_token"])


async def _call(
    world: World, method: str, path: str, token: str, body: Any = None
) -> tuple[int, Any]:
    resp = await world.client.request(
        method, path, json=body, headers={"Authorization": f"Bearer {token}"}
    )
    return resp.status, await resp.json(content_type=None)


async def test_product_from_registration_to_delivery(world: World, service: TestServer) -> None:
    gov = world.gateway.governance
    exchange = await gov.clients.issue_client(LOCAL_ADMIN, role=Role.EXCHANGE)
    buyer = await gov.clients.issue_client(LOCAL_ADMIN, buyer_code=BUYER)
    assert exchange.secret and buyer.secret
    account = await _token(world, *world.merchant_client, "account")
    operator = await world.staff_token(Role.OPERATOR)
    authority = await world.staff_token(Role.AUTHORITY)
    exchange_token = await _token(world, exchange.client.client_id, exchange.secret, "admin")
    product = {
        "id": "credit-score",
        "name": "企业经营稳健度评分",
        "scenario": DEMO_SCENARIO,
        "delivery": "api",
        "endpoint": str(service.make_url("/score")),
        "inputs": [{"dataset": "enterprises", "fields": ["credit_code", "status"]}],
        "outputs": [
            {"name": "credit_code", "derivation": "key", "from": ["enterprises.credit_code"]},
            {"name": "score", "derivation": "score", "from": ["enterprises.status"]},
        ],
        "unit_price": "0.50",
    }
    status, created = await _call(world, "POST", "/v1/products", account, product)
    assert status == 201, created
    base = "/admin/products/credit-score"
    listing = {"listing_id": "SZDE-001"}
    assert (await _call(world, "POST", f"{base}/listing", exchange_token, listing))[0] == 409
    check = {"decision": "approve"}
    assert (await _call(world, "POST", f"{base}/export-check", exchange_token, check))[0] == 403
    assert (await _call(world, "POST", f"{base}/export-check", operator, check))[0] == 200
    filing = {"filing_number": "湘数备-2026-001"}
    assert (await _call(world, "POST", f"{base}/filing", authority, filing))[0] == 200
    assert (await _call(world, "POST", f"{base}/listing", exchange_token, listing))[0] == 200
    trade = {
        "exchange_trade_id": "T-1",
        "product": "credit-score",
        "buyer_code": BUYER,
        "buyer_name": "湘江银行",
        "quantity": 2,
        "unit_price": "0.50",
        "traded_at": world.clock.now().isoformat(),
    }
    assert (await _call(world, "POST", "/admin/trades", operator, trade))[0] == 403
    status, recorded = await _call(world, "POST", "/admin/trades", exchange_token, trade)
    assert status == 201 and recorded["amount"] == "1.00"

    delivery = await _token(world, buyer.client.client_id, buyer.secret, "product:credit-score")
    deliveries = "/v1/products/credit-score/deliveries"
    # The service failing costs the buyer nothing.
    status, problem = await _call(
        world, "POST", deliveries, delivery, {"credit_code": "x", "fail": 1}
    )
    assert status == 503 and "given back" in problem["detail"]
    for _ in range(2):
        status, answer = await _call(world, "POST", deliveries, delivery, {"credit_code": "9143"})
        assert status == 200, answer
        assert answer["trade"] == "T-1"
        # Only the declared outputs leave, whatever else the service said.
        assert answer["result"] == {"credit_code": "9143", "score": 87}
    status, problem = await _call(world, "POST", deliveries, delivery, {"credit_code": "9143"})
    assert status == 403 and problem["type"] == "/problems/not-entitled"
    async with world.gateway.engine.connect() as conn:
        assert await conn.scalar(select(TradeRow.used)) == 2
        payloads = [
            json.loads(p)
            for p in await conn.scalars(
                select(LogEntryRow.payload).where(LogEntryRow.kind == "delivery")
            )
        ]
    assert [p["decision"] for p in payloads] == ["deny", "allow", "allow", "deny"]
    assert all(p["parameters"]["trade"] == "T-1" for p in payloads[:3])

    # Tokens: a data token is no delivery token; a buyer token names one product.
    data_token = await world.token()
    assert (await _call(world, "POST", deliveries, data_token, {}))[0] == 401
    other = "/v1/products/other/deliveries"
    assert (await _call(world, "POST", other, delivery, {}))[0] == 403
    # Delisted: no delivery.
    delisting = {"reason": "超范围使用"}
    assert (await _call(world, "POST", f"{base}/delisting", exchange_token, delisting))[0] == 200
    status, problem = await _call(world, "POST", deliveries, delivery, {"credit_code": "1"})
    assert status == 403 and "delisted" in problem["detail"]
