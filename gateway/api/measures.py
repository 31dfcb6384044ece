"""Supervision measures over HTTP: the supervisor and the data bureau impose and lift them,
staff who supervise or run the platform read them. A thin shell over
:class:`gateway.supervision.measures.MeasureService`; every call is recorded in the
``calls`` stream like any admin call, the measure itself in the ``governance`` stream."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.api.admin import staff_actor
from gateway.api.appkeys import MEASURES
from gateway.api.bodies import read_json
from gateway.api.problems import json_response
from gateway.catalog.checks import expect_keys
from gateway.errors import ValidationError

__all__ = ["add_routes"]


def _string(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise ValidationError(f"{key} must be a string", field=key)
    return value


async def impose(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    service = request.app[MEASURES]
    # The service's rule, asked before the body is read, so a caller who may not impose
    # learns only that (MeasureService.impose asks again).
    service.authorize_impose(actor)
    body = await read_json(request)
    expect_keys("measure", body, {"kind", "target", "reason"}, {"basis"})
    basis = body.get("basis")
    measure = await service.impose(
        actor,
        _string(body, "kind"),
        _string(body, "target"),
        _string(body, "reason"),
        None if basis is None else _string(body, "basis"),
    )
    response = json_response(measure.to_dict(), status=201)
    response.headers["Location"] = f"/admin/measures/{measure.id}"
    return response


async def list_measures(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    status = request.query.get("status", "active")
    found = await request.app[MEASURES].list(actor, status)
    return json_response({"status": status, "measures": [m.to_dict() for m in found]})


async def show(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    service = request.app[MEASURES]
    measure = await service.get(actor, request.match_info["id"])
    return json_response({**measure.to_dict(), "records": list(await service.records(measure.id))})


async def lift(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    body = await read_json(request)
    expect_keys("lifting", body, {"reason"})
    measure = await request.app[MEASURES].lift(
        actor, request.match_info["id"], _string(body, "reason")
    )
    return json_response(measure.to_dict())


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/admin/measures", impose)
    r.add_get("/admin/measures", list_measures, allow_head=False)
    r.add_get("/admin/measures/{id}", show, allow_head=False)
    r.add_post("/admin/measures/{id}/lift", lift)
