"""Monitoring alerts over HTTP: staff with ``alerts.read`` list and read them; the operator
and the supervisor (``alerts.handle``) acknowledge and resolve them."""

from __future__ import annotations

from aiohttp import web

from gateway.api.admin import staff_actor
from gateway.api.appkeys import ALERTS
from gateway.api.bodies import read_json
from gateway.api.params import query_int
from gateway.api.problems import json_response
from gateway.catalog.checks import expect_keys
from gateway.errors import NotFoundError, ValidationError

__all__ = ["add_routes"]

MAX_ID = 2**31 - 1


def _alert_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    # Ids are 32-bit in the store: anything larger names no alert (rather than overflowing).
    if not raw.isascii() or not raw.isdigit() or len(raw) > 10 or int(raw) > MAX_ID:
        raise NotFoundError(f"no alert {raw[:32]}")
    return int(raw)


def _optional_text(body: dict[str, object], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{key} must be a string")
    return value


async def list_alerts(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    query = request.query
    limit = query_int(request, "limit", default=100, minimum=1, maximum=500)
    found = await request.app[ALERTS].find(
        actor,
        status=query.get("status"),
        severity=query.get("severity"),
        rule=query.get("rule"),
        merchant_id=query.get("merchant") or None,
        limit=limit,
    )
    return json_response({"alerts": [alert.to_dict() for alert in found]})


async def get_alert(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    alert = await request.app[ALERTS].get(actor, _alert_id(request))
    return json_response(alert.to_dict())


async def acknowledge(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    alert_id = _alert_id(request)
    body = await read_json(request)
    expect_keys("acknowledgement", body, set(), {"note"})
    alert = await request.app[ALERTS].acknowledge(
        actor, alert_id, _optional_text(body, "note") or ""
    )
    return json_response(alert.to_dict())


async def resolve(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    alert_id = _alert_id(request)
    body = await read_json(request)
    expect_keys("resolution", body, {"resolution"}, {"measure_id"})
    alert = await request.app[ALERTS].resolve(
        actor,
        alert_id,
        _optional_text(body, "resolution") or "",
        _optional_text(body, "measure_id"),
    )
    return json_response(alert.to_dict())


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/admin/alerts", list_alerts, allow_head=False)
    r.add_get("/admin/alerts/{id}", get_alert, allow_head=False)
    r.add_post("/admin/alerts/{id}/acknowledge", acknowledge)
    r.add_post("/admin/alerts/{id}/resolve", resolve)
