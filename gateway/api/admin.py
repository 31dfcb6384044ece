"""The staff surface (authority, operator, supervisor, source department): a thin shell
over :class:`gateway.governance.service.GovernanceService` and its concern services, which
check the caller's role on every route."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.api.appkeys import EVIDENCE, GATEWAY, GOVERNANCE, POLICY, RECORD, TOKENS
from gateway.api.bodies import read_json
from gateway.api.merchant import bearer_token, entry_document
from gateway.api.params import path_int, query_int
from gateway.api.problems import json_response
from gateway.catalog.checks import expect_keys
from gateway.errors import ValidationError
from gateway.governance.actor import Actor
from gateway.governance.models import AgreementStatus, MerchantStatus, ScenarioStatus
from gateway.governance.records import RecordView

__all__ = ["add_routes", "staff_actor"]


async def staff_actor(request: web.Request) -> Actor:
    """The staff member behind the request's admin token (a source client with its
    department), noted in the call record."""
    snapshot = await request.app[POLICY].current()
    claims = await request.app[TOKENS].verify(bearer_token(request), admin=True, snapshot=snapshot)
    record = request[RECORD]
    record.client_id = claims.client_id
    record.token_id = claims.jti
    assert claims.role is not None
    client = snapshot.clients.get(claims.client_id)
    return Actor(claims.client_id, claims.role, department=client.department if client else None)


def _text(body: dict[str, Any], key: str, *, required: bool = True) -> str:
    value = body.get(key, "" if not required else None)
    if not isinstance(value, str) or (required and not value.strip()):
        raise ValidationError(f"{key} must be a non-empty string")
    return value


def _status_body(body: dict[str, Any]) -> tuple[str, str]:
    expect_keys("status change", body, {"status"}, {"reason"})
    return _text(body, "status"), _text(body, "reason", required=False)


def _parse_enum(enum: Any, value: str) -> Any:
    try:
        return enum(value)
    except ValueError:
        raise ValidationError(f"status must be one of {', '.join(e.value for e in enum)}") from None


async def list_datasets(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    snapshot = await request.app[GOVERNANCE].read_catalog(actor)
    # Source locations only for those who answer for them (Actor.sees_source_of).
    datasets = snapshot.datasets.values()
    return json_response(
        {"datasets": [d.staff_dict(with_source=actor.sees_source_of(d)) for d in datasets]}
    )


async def register_dataset(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    body = await read_json(request)
    dataset = await request.app[GOVERNANCE].catalog.register_dataset(actor, body)
    return json_response(dataset.to_dict(), status=201)


async def list_scenarios(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    snapshot = await request.app[GOVERNANCE].read_catalog(actor)
    return json_response({"scenarios": [s.to_dict() for s in snapshot.scenarios.values()]})


async def create_scenario(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    body = await read_json(request)
    gateway = request.app[GATEWAY]
    scenario = await gateway.governance.scenarios.create_scenario(actor, body)
    # Quasi-identifier combinations that single out subjects: advice for the authority,
    # who decides; the scenario is created either way (docs/privacy.md).
    warnings = await gateway.scenario_warnings(scenario)
    return json_response(
        scenario.to_dict() | {"warnings": [w.to_dict() for w in warnings]}, status=201
    )


async def scenario_status(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    status, reason = _status_body(await read_json(request))
    scenario = await request.app[GOVERNANCE].scenarios.set_scenario_status(
        actor, request.match_info["id"], _parse_enum(ScenarioStatus, status), reason
    )
    return json_response(scenario.to_dict())


async def list_merchants(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    snapshot = await request.app[GOVERNANCE].read_parties(actor)
    return json_response(
        {
            "merchants": [
                {"id": m.id, "name": m.name, "credit_code": m.credit_code, "status": m.status.value}
                for m in snapshot.merchants.values()
            ]
        }
    )


async def register_merchant(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    body = await read_json(request)
    expect_keys("merchant", body, {"id", "name", "credit_code"})
    merchant = await request.app[GOVERNANCE].merchants.register_merchant(
        actor, _text(body, "id"), _text(body, "name"), _text(body, "credit_code")
    )
    return json_response(
        {
            "id": merchant.id,
            "name": merchant.name,
            "credit_code": merchant.credit_code,
            "status": merchant.status.value,
        },
        status=201,
    )


async def merchant_status(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    status, reason = _status_body(await read_json(request))
    merchant = await request.app[GOVERNANCE].merchants.set_merchant_status(
        actor, request.match_info["id"], _parse_enum(MerchantStatus, status), reason
    )
    return json_response({"id": merchant.id, "status": merchant.status.value})


async def list_agreements(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    snapshot = await request.app[GOVERNANCE].read_parties(actor)
    return json_response(
        {
            "agreements": [
                {
                    "id": a.id,
                    "merchant_id": a.merchant_id,
                    "scenario_id": a.scenario_id,
                    "starts_at": a.starts_at,
                    "ends_at": a.ends_at,
                    "status": a.status.value,
                    "shares": {
                        "owner": a.share_owner,
                        "operator": a.share_operator,
                        "processor": a.share_processor,
                    },
                }
                for a in snapshot.agreements.values()
            ]
        }
    )


async def grant_agreement(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    body = await read_json(request)
    expect_keys(
        "agreement",
        body,
        {"merchant_id", "scenario_id", "starts_at", "ends_at", "shares"},
        {"id", "terms"},
    )
    shares = body["shares"]
    if not isinstance(shares, dict):
        raise ValidationError("shares must be an object with owner, operator, processor")
    expect_keys("shares", shares, {"owner", "operator", "processor"})
    terms = body.get("terms", {})
    if not isinstance(terms, dict):
        raise ValidationError("terms must be an object")
    agreement = await request.app[GOVERNANCE].agreements.grant_agreement(
        actor,
        merchant_id=_text(body, "merchant_id"),
        scenario_id=_text(body, "scenario_id"),
        starts_at=body["starts_at"],
        ends_at=body["ends_at"],
        shares=(shares["owner"], shares["operator"], shares["processor"]),
        terms=terms,
        agreement_id=body.get("id"),
    )
    return json_response(
        {
            "id": agreement.id,
            "merchant_id": agreement.merchant_id,
            "scenario_id": agreement.scenario_id,
            "starts_at": agreement.starts_at,
            "ends_at": agreement.ends_at,
            "status": agreement.status.value,
        },
        status=201,
    )


async def agreement_status(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    status, reason = _status_body(await read_json(request))
    result = await request.app[GOVERNANCE].agreements.set_agreement_status(
        actor, request.match_info["id"], _parse_enum(AgreementStatus, status), reason
    )
    return json_response({"id": request.match_info["id"], "status": result.value})


async def issue_client(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    body = await read_json(request)
    expect_keys("client", body, {"merchant_id"}, {"public_jwk", "secret"})
    public_jwk = body.get("public_jwk")
    if public_jwk is not None and not isinstance(public_jwk, dict):
        raise ValidationError("public_jwk must be a JWK object")
    with_secret = body.get("secret", True)
    if not isinstance(with_secret, bool):
        raise ValidationError("secret must be true or false")
    issued = await request.app[GOVERNANCE].clients.issue_client(
        actor,
        merchant_id=_text(body, "merchant_id"),
        public_jwk=public_jwk,
        with_secret=with_secret,
    )
    response = json_response(
        {
            "client_id": issued.client.client_id,
            "client_secret": issued.secret,
            "merchant_id": issued.client.merchant_id,
        },
        status=201,
    )
    response.headers["Cache-Control"] = "no-store"
    return response


async def revoke_token(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    body = await read_json(request)
    expect_keys("revocation", body, {"reason"})
    await request.app[GOVERNANCE].clients.revoke_token(
        actor, request.match_info["jti"], _text(body, "reason")
    )
    return json_response({"jti": request.match_info["jti"], "revoked": True})


async def revoke_merchant_tokens(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    body = await read_json(request)
    expect_keys("revocation", body, {"reason"})
    count = await request.app[GOVERNANCE].clients.revoke_merchant_tokens(
        actor, request.match_info["id"], _text(body, "reason")
    )
    return json_response({"merchant_id": request.match_info["id"], "revoked": count})


async def list_calls(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    merchant = request.query.get("merchant")
    limit = min(500, max(1, query_int(request, "limit", default=50)))
    stream = request.query.get("stream", "calls")
    views = await request.app[EVIDENCE].records(actor, stream, merchant_id=merchant, limit=limit)
    return json_response({"entries": [_view_document(v) for v in views]})


def _view_document(view: RecordView) -> dict[str, Any]:
    """A record as its reader may see it; ``withheld`` names the members set to null for
    this reader (the record then no longer hashes to ``leaf_hash``)."""
    document = entry_document(view.entry)
    if view.withheld:
        document["record"] = view.record
        document["withheld"] = list(view.withheld)
    return document


async def bundle(request: web.Request) -> web.Response:
    """The evidence bundle of any record, for staff who may read the log."""
    actor = await staff_actor(request)
    stream = request.match_info["stream"]
    seq = path_int(request, "seq")
    return json_response(await request.app[EVIDENCE].bundle_for(actor, stream, seq))


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/admin/datasets", list_datasets, allow_head=False)
    r.add_post("/admin/datasets", register_dataset)
    r.add_get("/admin/scenarios", list_scenarios, allow_head=False)
    r.add_post("/admin/scenarios", create_scenario)
    r.add_post("/admin/scenarios/{id}/status", scenario_status)
    r.add_get("/admin/merchants", list_merchants, allow_head=False)
    r.add_post("/admin/merchants", register_merchant)
    r.add_post("/admin/merchants/{id}/status", merchant_status)
    r.add_post("/admin/merchants/{id}/revoke-tokens", revoke_merchant_tokens)
    r.add_get("/admin/agreements", list_agreements, allow_head=False)
    r.add_post("/admin/agreements", grant_agreement)
    r.add_post("/admin/agreements/{id}/status", agreement_status)
    r.add_post("/admin/clients", issue_client)
    r.add_post("/admin/tokens/{jti}/revoke", revoke_token)
    r.add_get("/admin/calls", list_calls, allow_head=False)
    r.add_get("/admin/bundles/{stream}/{seq}", bundle, allow_head=False)
