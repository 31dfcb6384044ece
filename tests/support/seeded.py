"""A world seeded through the API as users would seed it: every kind of credential, a
listed data product with a trade and its processing service, a use application and an
onboarding application. The API fuzzer (tests/test_fuzz_api.py) reaches past 404s with
these ids; regression tests of what it found start from the same world."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import encode_basic_auth, web
from aiohttp.test_utils import TestServer

from gateway.authorization.roles import Role
from gateway.cli.demo import DEMO_SCENARIO, demo_credit_code
from gateway.governance.service import LOCAL_ADMIN
from tests.support.world import World

__all__ = ["BUYER", "PRODUCT", "Processor", "Seeded", "onboarding_body", "seed_world"]


def onboarding_body() -> dict[str, Any]:
    """An onboarding application of the merchant ``lanshan-data``, as its form posts it."""
    return {
        "merchant_id": "lanshan-data",
        "name": "岚山数据科技有限公司",
        "credit_code": demo_credit_code("LS"),
        "licence": {
            "legal_representative": "王岚",
            "registered_address": "长沙市岳麓区",
            "business_scope": "数据处理",
        },
        "contacts": [{"name": "李明", "email": "li@lanshan.example"}],
    }


PRODUCT = "credit-score"
BUYER = demo_credit_code("BY")
SOURCE_DEPARTMENT = "市场监督管理局"


@dataclass
class Seeded:
    """What the world holds besides the demo, by kind of credential and by id."""

    tokens: dict[str, str | None]
    application: str
    onboarding: str


@dataclass
class Processor:
    """The product's processing service, a real HTTP server on loopback: it scores the
    `credit_code` it is given and keeps every request body it received, as received."""

    url: str
    received: list[bytes] = field(default_factory=list)

    @classmethod
    @asynccontextmanager
    async def running(cls) -> AsyncIterator[Processor]:
        received: list[bytes] = []

        async def score(request: web.Request) -> web.Response:
            raw = await request.read()
            received.append(raw)
            body = json.loads(raw)
            code = body.get("credit_code") if isinstance(body, dict) else None
            return web.json_response({"credit_code": str(code), "score": 87})

        app = web.Application()
        app.router.add_post("/score", score)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            yield cls(url=str(server.make_url("/score")), received=received)
        finally:
            await server.close()


async def _token(world: World, client_id: str, secret: str | None, scope: str) -> str:
    assert secret is not None
    response = await world.client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": scope},
        headers={"Authorization": encode_basic_auth(client_id, secret)},
    )
    body = await response.json()
    assert response.status == 200, body
    return str(body["access_token"])


async def _post(world: World, path: str, token: str | None, body: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await world.client.post(path, json=body, headers=headers)
    answer = await response.json(content_type=None)
    assert response.status in (200, 201), (path, answer)
    return answer


async def seed_world(world: World, processor: Processor) -> Seeded:
    """Every kind of credential, a listed product with a trade, a use application and an
    onboarding application, made through the API like a user would."""
    gov = world.gateway.governance
    source = await gov.clients.issue_client(
        LOCAL_ADMIN, role=Role.SOURCE, department=SOURCE_DEPARTMENT
    )
    exchange = await gov.clients.issue_client(LOCAL_ADMIN, role=Role.EXCHANGE)
    buyer = await gov.clients.issue_client(LOCAL_ADMIN, buyer_code=BUYER)
    tokens: dict[str, str | None] = {
        "none": None,
        "data": await world.token(),
        "account": await world.token("account"),
        "operator": await world.staff_token(Role.OPERATOR),
        "authority": await world.staff_token(Role.AUTHORITY),
        "supervisor": await world.staff_token(Role.SUPERVISOR),
        "source": await _token(world, source.client.client_id, source.secret, "admin"),
        "exchange": await _token(world, exchange.client.client_id, exchange.secret, "admin"),
    }
    now = world.clock.now()
    await _post(
        world,
        "/v1/products",
        tokens["account"],
        {
            "id": PRODUCT,
            "name": "企业经营稳健度评分",
            "scenario": DEMO_SCENARIO,
            "delivery": "api",
            "endpoint": processor.url,
            "inputs": [{"dataset": "enterprises", "fields": ["credit_code", "status"]}],
            "outputs": [
                {"name": "credit_code", "derivation": "key", "from": ["enterprises.credit_code"]},
                {"name": "score", "derivation": "score", "from": ["enterprises.status"]},
            ],
            "unit_price": "0.50",
        },
    )
    base = f"/admin/products/{PRODUCT}"
    await _post(world, f"{base}/export-check", tokens["operator"], {"decision": "approve"})
    await _post(world, f"{base}/filing", tokens["authority"], {"filing_number": "湘数备-2026-001"})
    await _post(world, f"{base}/listing", tokens["exchange"], {"listing_id": "SZDE-001"})
    trade = {
        "exchange_trade_id": "T-1",
        "product": PRODUCT,
        "buyer_code": BUYER,
        "buyer_name": "湘江银行",
        "quantity": 100_000,
        "unit_price": "0.50",
        "traded_at": now.isoformat(),
    }
    await _post(world, "/admin/trades", tokens["exchange"], trade)
    tokens["product"] = await _token(
        world, buyer.client.client_id, buyer.secret, f"product:{PRODUCT}"
    )
    application = await _post(
        world,
        "/v1/applications",
        tokens["account"],
        {
            "scenario": DEMO_SCENARIO,
            "requirements": [
                {"dataset": "enterprises", "modes": ["verify"], "fields": ["credit_code", "name"]}
            ],
            "purpose": "贷前核验",
            "period_start": now.date().isoformat(),
            "period_end": now.replace(year=now.year + 1).date().isoformat(),
            "safeguards": "专线",
        },
    )
    onboarding = await _post(
        world,
        "/v1/onboarding",
        None,
        onboarding_body(),
    )
    return Seeded(tokens=tokens, application=application["id"], onboarding=onboarding["id"])
