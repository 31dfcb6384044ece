"""Data-quality objections and the yearly ratings over HTTP, each role on its own surface.

- A merchant, with an ``account`` token: files objections about data it received and reads
  the answers (``/v1/objections``); reads its rating form and rates the operator
  (``/v1/rating-forms``, ``/v1/ratings``).
- Staff, with an admin token: the operator files objections and follows them up, a source
  department answers those routed to it (``/admin/objections``); the data bureau sets the
  rating forms and reads the ratings, departments and district bureaus rate
  (``/admin/rating-forms``, ``/admin/ratings``).

Thin shells over :class:`~gateway.objections.ObjectionService` and
:class:`~gateway.evaluation.EvaluationService`; every request is recorded by the request
pipeline, every change also in the governance stream.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.api.admin import staff_actor
from gateway.api.appkeys import CLOCK, EVALUATION, OBJECTIONS
from gateway.api.bodies import read_json
from gateway.api.params import query_int
from gateway.api.problems import json_response
from gateway.api.workflows import merchant_actor
from gateway.errors import ValidationError
from gateway.evaluation.models import RaterKind, parse_rater_kind
from gateway.governance.actor import Actor
from gateway.objections.models import Objection, ObjectionStatus, View

__all__ = ["add_routes"]


def _status(request: web.Request) -> ObjectionStatus | None:
    value = request.query.get("status")
    if value is None:
        return None
    try:
        return ObjectionStatus(value)
    except ValueError:
        raise ValidationError(
            f"status must be one of {', '.join(s.value for s in ObjectionStatus)}", field="status"
        ) from None


def _flag(request: web.Request, name: str) -> bool:
    value = request.query.get(name, "false")
    if value not in ("true", "false"):
        raise ValidationError(f"{name} must be true or false", field=name)
    return value == "true"


def _one(objection: Objection, view: View, request: web.Request) -> dict[str, Any]:
    return objection.to_dict(view, now=request.app[CLOCK].now())


async def _listed(request: web.Request, actor: Actor) -> web.Response:
    found = await request.app[OBJECTIONS].list(
        actor,
        status=_status(request),
        overdue=_flag(request, "overdue"),
        department=request.query.get("department"),
        dataset_id=request.query.get("dataset"),
    )
    return json_response({"objections": [_one(o, view, request) for o, view in found]})


async def _shown(request: web.Request, actor: Actor) -> web.Response:
    objection, view = await request.app[OBJECTIONS].get(actor, request.match_info["id"])
    return json_response(_one(objection, view, request))


async def _filed(request: web.Request, actor: Actor) -> web.Response:
    service = request.app[OBJECTIONS]
    objection = await service.file(actor, await read_json(request))
    view = service.view_for(actor, objection) or View.FILER
    return json_response(_one(objection, view, request), status=201)


async def _acknowledged(request: web.Request, actor: Actor) -> web.Response:
    service = request.app[OBJECTIONS]
    objection = await service.acknowledge(actor, request.match_info["id"])
    return json_response(_one(objection, service.view_for(actor, objection) or View.FILER, request))


# -- objections: the merchant --------------------------------------------------------------


async def own_file(request: web.Request) -> web.Response:
    return await _filed(request, await merchant_actor(request))


async def own_list(request: web.Request) -> web.Response:
    return await _listed(request, await merchant_actor(request))


async def own_show(request: web.Request) -> web.Response:
    return await _shown(request, await merchant_actor(request))


async def own_acknowledge(request: web.Request) -> web.Response:
    return await _acknowledged(request, await merchant_actor(request))


# -- objections: staff -----------------------------------------------------------------------


async def staff_file(request: web.Request) -> web.Response:
    return await _filed(request, await staff_actor(request))


async def staff_list(request: web.Request) -> web.Response:
    return await _listed(request, await staff_actor(request))


async def staff_show(request: web.Request) -> web.Response:
    return await _shown(request, await staff_actor(request))


async def staff_answer(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    service = request.app[OBJECTIONS]
    objection = await service.answer(actor, request.match_info["id"], await read_json(request))
    return json_response(_one(objection, service.view_for(actor, objection) or View.STAFF, request))


async def staff_acknowledge(request: web.Request) -> web.Response:
    return await _acknowledged(request, await staff_actor(request))


# -- the yearly ratings ------------------------------------------------------------------------


def _year(request: web.Request) -> int | None:
    if "year" not in request.query:
        return None
    return query_int(request, "year", minimum=2000, maximum=2099)


def _kind(request: web.Request) -> RaterKind | None:
    value = request.query.get("rater_kind")
    return None if value is None else parse_rater_kind(value)


async def _forms(request: web.Request, actor: Actor) -> web.Response:
    found = await request.app[EVALUATION].forms(
        actor, year=_year(request), rater_kind=_kind(request)
    )
    return json_response({"forms": [f.to_dict() for f in found]})


async def _ratings(request: web.Request, actor: Actor) -> web.Response:
    found = await request.app[EVALUATION].ratings(
        actor, year=_year(request), rater_kind=_kind(request)
    )
    return json_response({"ratings": [r.to_dict() for r in found]})


async def _rate(request: web.Request, actor: Actor) -> web.Response:
    rating = await request.app[EVALUATION].submit(actor, await read_json(request))
    return json_response(rating.to_dict(), status=201)


async def own_forms(request: web.Request) -> web.Response:
    return await _forms(request, await merchant_actor(request))


async def own_rate(request: web.Request) -> web.Response:
    return await _rate(request, await merchant_actor(request))


async def own_ratings(request: web.Request) -> web.Response:
    return await _ratings(request, await merchant_actor(request))


async def staff_forms(request: web.Request) -> web.Response:
    return await _forms(request, await staff_actor(request))


async def set_form(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    form = await request.app[EVALUATION].set_form(actor, await read_json(request))
    return json_response(form.to_dict())


async def staff_rate(request: web.Request) -> web.Response:
    return await _rate(request, await staff_actor(request))


async def staff_ratings(request: web.Request) -> web.Response:
    return await _ratings(request, await staff_actor(request))


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/v1/objections", own_file)
    r.add_get("/v1/objections", own_list, allow_head=False)
    r.add_get("/v1/objections/{id}", own_show, allow_head=False)
    r.add_post("/v1/objections/{id}/acknowledgement", own_acknowledge)
    r.add_get("/v1/rating-forms", own_forms, allow_head=False)
    r.add_post("/v1/ratings", own_rate)
    r.add_get("/v1/ratings", own_ratings, allow_head=False)
    r.add_post("/admin/objections", staff_file)
    r.add_get("/admin/objections", staff_list, allow_head=False)
    r.add_get("/admin/objections/{id}", staff_show, allow_head=False)
    r.add_post("/admin/objections/{id}/answer", staff_answer)
    r.add_post("/admin/objections/{id}/acknowledgement", staff_acknowledge)
    r.add_get("/admin/rating-forms", staff_forms, allow_head=False)
    r.add_post("/admin/rating-forms", set_form)
    r.add_post("/admin/ratings", staff_rate)
    r.add_get("/admin/ratings", staff_ratings, allow_head=False)
