"""Data products over HTTP: the merchant registers (account token), the operator checks,
the authority files, the exchange lists, trades and settles (its admin token), staff read
revenue statements, and buyers receive deliveries (delivery token)."""

from __future__ import annotations

from aiohttp import web

from gateway.api.admin import staff_actor
from gateway.api.appkeys import DELIVERIES, POLICY, PRODUCTS, RECORD, TOKENS
from gateway.api.bodies import read_json
from gateway.api.merchant import bearer_token
from gateway.api.problems import json_response
from gateway.api.workflows import decision, merchant_actor
from gateway.catalog.checks import expect_keys
from gateway.errors import ValidationError
from gateway.products.models import ProductStatus

__all__ = ["add_routes"]


def _text(body: dict[str, object], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise ValidationError(f"{key} must be a string")
    return value


async def register_product(request: web.Request) -> web.Response:
    actor = await merchant_actor(request)
    assert actor.merchant_id is not None
    product = await request.app[PRODUCTS].register(
        actor, actor.merchant_id, await read_json(request)
    )
    return json_response(product.to_dict(), status=201)


async def own_products(request: web.Request) -> web.Response:
    actor = await merchant_actor(request)
    found = await request.app[PRODUCTS].find(actor)
    return json_response({"products": [p.to_dict() for p in found]})


async def list_products(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    status = request.query.get("status")
    try:
        # An empty value is no status either (as on the other list filters), not "any".
        wanted = ProductStatus(status) if status is not None else None
    except ValueError:
        raise ValidationError(
            f"status must be one of {', '.join(s.value for s in ProductStatus)}",
            field="status",
        ) from None
    found = await request.app[PRODUCTS].find(actor, status=wanted)
    return json_response({"products": [p.to_dict() for p in found]})


async def export_check(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    approve, reasons = decision(await read_json(request))
    product = await request.app[PRODUCTS].check_export(
        actor, request.match_info["id"], approve=approve, reasons=reasons
    )
    return json_response(product.to_dict())


async def filing(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    body = await read_json(request)
    expect_keys("filing", body, {"filing_number"})
    product = await request.app[PRODUCTS].file(
        actor, request.match_info["id"], _text(body, "filing_number")
    )
    return json_response(product.to_dict())


async def listing(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    body = await read_json(request)
    expect_keys("listing", body, {"listing_id"})
    product = await request.app[PRODUCTS].list_on_exchange(
        actor, request.match_info["id"], _text(body, "listing_id")
    )
    return json_response(product.to_dict())


async def delist(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    body = await read_json(request)
    expect_keys("delisting", body, {"reason"})
    product = await request.app[PRODUCTS].delist(
        actor, request.match_info["id"], _text(body, "reason")
    )
    return json_response(product.to_dict())


async def record_trade(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    trade = await request.app[PRODUCTS].record_trade(actor, await read_json(request))
    return json_response(trade.to_dict(), status=201)


async def record_settlement(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    result = await request.app[PRODUCTS].record_settlement(actor, await read_json(request))
    return json_response(result, status=201)


async def revenue(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    period = request.query.get("period", "")
    statements = await request.app[PRODUCTS].revenue(actor, period)
    return json_response({"period": period, "statements": [s.to_dict() for s in statements]})


async def deliver(request: web.Request) -> web.Response:
    record = request[RECORD]
    snapshot = await request.app[POLICY].current()
    claims = await request.app[TOKENS].verify(
        bearer_token(request), delivery=True, snapshot=snapshot
    )
    record.client_id = claims.client_id
    record.token_id = claims.jti
    body = await read_json(request)
    result = await request.app[DELIVERIES].deliver(
        snapshot, claims, request.match_info["id"], body, record
    )
    return json_response(result)


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/v1/products", register_product)
    r.add_get("/v1/products", own_products, allow_head=False)
    r.add_post("/v1/products/{id}/deliveries", deliver)
    r.add_get("/admin/products", list_products, allow_head=False)
    r.add_post("/admin/products/{id}/export-check", export_check)
    r.add_post("/admin/products/{id}/filing", filing)
    r.add_post("/admin/products/{id}/listing", listing)
    r.add_post("/admin/products/{id}/delisting", delist)
    r.add_post("/admin/trades", record_trade)
    r.add_post("/admin/settlements", record_settlement)
    r.add_get("/admin/revenue", revenue, allow_head=False)
