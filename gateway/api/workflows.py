"""The authorization workflows over HTTP, each role on its own surface.

- A company applying to become a merchant: ``/v1/onboarding`` (no credentials; it follows
  its application with the status key it gets once).
- A merchant, with an ``account`` token: ``/v1/applications``, ``/v1/tasks``.
- Staff, with an admin token: ``/admin/onboarding``, ``/admin/exclusions``,
  ``/admin/applications``, ``/admin/tasks``, scenario plans and evaluations, agreements
  from applications and subject authorizations.

Every call is recorded in the call log; every state change also in the governance stream.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.api.admin import staff_actor
from gateway.api.appkeys import (
    APPLICATIONS,
    CLOCK,
    GATEWAY,
    GOVERNANCE,
    RECORD,
    SETTINGS,
    TOKENS,
    WORKFLOWS,
)
from gateway.api.bodies import read_json
from gateway.api.merchant import bearer_token
from gateway.api.problems import json_response
from gateway.authorization.quotas import KeyedRateLimiter
from gateway.catalog.checks import expect_keys
from gateway.errors import UnsupportedMediaTypeError, ValidationError
from gateway.governance.actor import Actor
from gateway.workflows.applications import ApplicationStatus
from gateway.workflows.exclusions import parse_exclusions_bytes
from gateway.workflows.onboarding import OnboardingStatus
from gateway.workflows.tasks import tasks_for

__all__ = ["add_routes", "decision", "merchant_actor"]

MAX_EXCLUSION_CSV_BYTES = 64 * 1024 * 1024


async def merchant_actor(request: web.Request) -> Actor:
    claims = await request.app[TOKENS].verify(bearer_token(request), account=True)
    record = request[RECORD]
    record.merchant_id = claims.merchant_id
    record.client_id = claims.client_id
    record.token_id = claims.jti
    return Actor(claims.client_id, merchant_id=claims.merchant_id)


def decision(body: dict[str, Any]) -> tuple[bool, list[str]]:
    """``{"decision": "approve" | "reject", "reasons": [...]}`` of every review step."""
    expect_keys("decision", body, {"decision"}, {"reasons"})
    decision = body["decision"]
    if decision not in ("approve", "reject"):
        raise ValidationError("decision must be approve or reject")
    reasons = body.get("reasons", [])
    if not isinstance(reasons, list):
        raise ValidationError("reasons must be a list of texts")
    return decision == "approve", reasons


def _status(enum: Any, request: web.Request) -> Any:
    value = request.query.get("status")
    if value is None:
        return None
    try:
        return enum(value)
    except ValueError:
        raise ValidationError(f"status must be one of {', '.join(e.value for e in enum)}") from None


# -- onboarding ---------------------------------------------------------------------------


ONBOARDING_LIMITER = web.AppKey("onboarding_limiter", KeyedRateLimiter)


async def submit_onboarding(request: web.Request) -> web.Response:
    request.app[ONBOARDING_LIMITER].consume(
        request[RECORD].remote or "unknown", request.app[CLOCK].now(), "onboarding applications"
    )
    body = await read_json(request)
    code = str(body.get("credit_code", ""))[:18] if isinstance(body, dict) else ""
    actor = Actor(f"applicant:{code}", applicant=True)
    application = await request.app[WORKFLOWS].submit_onboarding(actor, body)
    response = json_response(
        application.to_dict() | {"status_key": application.status_key}, status=201
    )
    response.headers["Cache-Control"] = "no-store"
    return response


async def onboarding_status(request: web.Request) -> web.Response:
    """The applicant follows its application with the status key it got at submission."""
    application = await request.app[WORKFLOWS].onboarding(request.match_info["id"])
    application.check_status_key(bearer_token(request))
    return json_response(
        {
            key: value
            for key, value in application.to_dict().items()
            if key
            in (
                "id",
                "merchant_id",
                "status",
                "submitted_at",
                "due_at",
                "decided_at",
                "reasons",
                "provisional",
            )
        }
    )


async def list_onboarding(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    found = await request.app[WORKFLOWS].list_onboarding(actor, _status(OnboardingStatus, request))
    now = request.app[CLOCK].now()
    return json_response({"applications": [a.to_dict(now=now) for a in found]})


async def decide_onboarding(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    approve, reasons = decision(await read_json(request))
    application, merchant = await request.app[WORKFLOWS].decide_onboarding(
        actor, request.match_info["id"], approve=approve, reasons=reasons
    )
    return json_response(application.to_dict() | {"merchant_registered": merchant is not None})


EXCLUSION_MEDIA_TYPES = (
    "text/csv",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
)


async def import_exclusions(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    # The service's rule, asked before the upload is read: a caller without the role
    # cannot make the gateway read a large file (import_exclusions asks again).
    request.app[WORKFLOWS].authorize_exclusions(actor)
    if request.content_type not in EXCLUSION_MEDIA_TYPES:
        raise UnsupportedMediaTypeError("send the exclusion list as text/csv or as XLSX")
    if request.content_length is not None and request.content_length > MAX_EXCLUSION_CSV_BYTES:
        raise ValidationError("exclusion list larger than 64 MiB; split it")
    raw = await request.content.read(MAX_EXCLUSION_CSV_BYTES + 1)
    if len(raw) > MAX_EXCLUSION_CSV_BYTES:
        raise ValidationError("exclusion list larger than 64 MiB; split it")
    entries = parse_exclusions_bytes(raw, "exclusion list")  # UTF-8, GB18030 or XLSX
    report = await request.app[WORKFLOWS].import_exclusions(
        actor, entries, source_name=request.query.get("source", "")
    )
    return json_response(report.to_dict())


# -- scenarios: plan and evaluation --------------------------------------------------------


async def scenario_plan(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    scenario = await request.app[GOVERNANCE].scenarios.record_scenario_plan(
        actor, request.match_info["id"], await read_json(request)
    )
    return json_response(scenario.to_dict())


async def scenario_evaluation(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    scenario = await request.app[GOVERNANCE].scenarios.record_scenario_evaluation(
        actor, request.match_info["id"], await read_json(request)
    )
    return json_response(scenario.to_dict())


# -- use applications: the merchant ---------------------------------------------------------


async def submit_application(request: web.Request) -> web.Response:
    actor = await merchant_actor(request)
    assert actor.merchant_id is not None
    application = await request.app[APPLICATIONS].submit(
        actor, actor.merchant_id, await read_json(request)
    )
    return json_response(application.to_dict(), status=201)


async def own_applications(request: web.Request) -> web.Response:
    actor = await merchant_actor(request)
    found = await request.app[APPLICATIONS].list(actor, _status(ApplicationStatus, request))
    return json_response({"applications": [a.to_dict() for a in found]})


async def own_application(request: web.Request) -> web.Response:
    actor = await merchant_actor(request)
    application = await request.app[APPLICATIONS].get(actor, request.match_info["id"])
    return json_response(application.to_dict())


async def withdraw_application(request: web.Request) -> web.Response:
    actor = await merchant_actor(request)
    application = await request.app[APPLICATIONS].withdraw(actor, request.match_info["id"])
    return json_response(application.to_dict())


async def own_tasks(request: web.Request) -> web.Response:
    return await _tasks(request, await merchant_actor(request))


async def _tasks(request: web.Request, actor: Actor) -> web.Response:
    gateway = request.app[GATEWAY]
    found = await tasks_for(
        actor, gateway.engine, gateway.workflows, gateway.applications, gateway.clock.now()
    )
    return json_response({"tasks": [t.to_dict() for t in found]})


# -- use applications: staff -----------------------------------------------------------------


async def staff_tasks(request: web.Request) -> web.Response:
    return await _tasks(request, await staff_actor(request))


async def list_applications(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    found = await request.app[APPLICATIONS].list(actor, _status(ApplicationStatus, request))
    return json_response({"applications": [a.to_dict() for a in found]})


async def get_application(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    application = await request.app[APPLICATIONS].get(actor, request.match_info["id"])
    return json_response(application.to_dict())


async def compliance_check(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    approve, reasons = decision(await read_json(request))
    application = await request.app[APPLICATIONS].check_compliance(
        actor, request.match_info["id"], approve=approve, reasons=reasons
    )
    return json_response(application.to_dict())


async def review(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    approve, reasons = decision(await read_json(request))
    application = await request.app[APPLICATIONS].review(
        actor, request.match_info["id"], approve=approve, reasons=reasons
    )
    return json_response(application.to_dict())


async def extend_review(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    body = await read_json(request)
    expect_keys("extension", body, {"working_days", "reason"})
    days = body["working_days"]
    if not isinstance(days, int) or isinstance(days, bool):
        raise ValidationError("working_days must be an integer")
    application = await request.app[APPLICATIONS].extend_review(
        actor, request.match_info["id"], working_days=days, reason=str(body["reason"])
    )
    return json_response(application.to_dict())


async def conclude_agreement(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    body = await read_json(request)
    expect_keys(
        "agreement",
        body,
        {"shares", "fees", "termination"},
        {"subject_authorizations", "agreement_id"},
    )
    shares = body["shares"]
    if not isinstance(shares, dict) or set(shares) != {"owner", "operator", "processor"}:
        raise ValidationError("shares must be {owner, operator, processor} percentages")
    letters = body.get("subject_authorizations", [])
    if not isinstance(letters, list):
        raise ValidationError("subject_authorizations must be a list")
    agreement_id = body.get("agreement_id")
    if agreement_id is not None and not isinstance(agreement_id, str):
        raise ValidationError("agreement_id must be a string")
    agreement = await request.app[APPLICATIONS].conclude_agreement(
        actor,
        request.match_info["id"],
        shares=(shares["owner"], shares["operator"], shares["processor"]),
        fees=body["fees"],
        termination=body["termination"],
        subject_authorizations=letters,
        agreement_id=agreement_id,
    )
    return json_response(
        {
            "agreement_id": agreement.id,
            "merchant_id": agreement.merchant_id,
            "scenario_id": agreement.scenario_id,
            "starts_at": agreement.starts_at.isoformat(),
            "ends_at": agreement.ends_at.isoformat(),
            "scope": [g.to_dict() for g in agreement.scope or ()],
            "subject_authorized": sorted(agreement.subject_authorized),
        },
        status=201,
    )


async def subject_authorization(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    agreement = await request.app[APPLICATIONS].add_subject_authorization(
        actor, request.match_info["id"], await read_json(request)
    )
    return json_response(
        {"agreement_id": agreement.id, "subject_authorized": sorted(agreement.subject_authorized)}
    )


def add_routes(app: web.Application) -> None:
    app[ONBOARDING_LIMITER] = KeyedRateLimiter(app[SETTINGS].server.onboarding_per_hour)
    r = app.router
    r.add_post("/v1/onboarding", submit_onboarding)
    r.add_get("/v1/onboarding/{id}", onboarding_status, allow_head=False)
    r.add_post("/v1/applications", submit_application)
    r.add_get("/v1/applications", own_applications, allow_head=False)
    r.add_get("/v1/applications/{id}", own_application, allow_head=False)
    r.add_post("/v1/applications/{id}/withdraw", withdraw_application)
    r.add_get("/v1/tasks", own_tasks, allow_head=False)
    r.add_get("/admin/onboarding", list_onboarding, allow_head=False)
    r.add_post("/admin/onboarding/{id}/decision", decide_onboarding)
    r.add_post("/admin/exclusions", import_exclusions)
    r.add_post("/admin/scenarios/{id}/plan", scenario_plan)
    r.add_post("/admin/scenarios/{id}/evaluation", scenario_evaluation)
    r.add_get("/admin/tasks", staff_tasks, allow_head=False)
    r.add_get("/admin/applications", list_applications, allow_head=False)
    r.add_get("/admin/applications/{id}", get_application, allow_head=False)
    r.add_post("/admin/applications/{id}/compliance", compliance_check)
    r.add_post("/admin/applications/{id}/review", review)
    r.add_post("/admin/applications/{id}/extension", extend_review)
    r.add_post("/admin/applications/{id}/agreement", conclude_agreement)
    r.add_post("/admin/agreements/{id}/subject-authorizations", subject_authorization)
