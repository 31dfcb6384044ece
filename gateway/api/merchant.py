"""The merchant's surface: token endpoint, JWKS, data plane, own catalog and own calls."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from gateway.api.appkeys import DATAPLANE, EVIDENCE, POLICY, RECORD, TOKENS
from gateway.api.bodies import read_form, read_json
from gateway.api.params import path_int, query_int
from gateway.api.problems import json_response
from gateway.authorization.clients import ClientCredentials
from gateway.authorization.tokens import AccessClaims
from gateway.errors import (
    AgreementError,
    AuthenticationError,
    DsgwError,
    ForbiddenError,
    InvalidClientError,
    NotFoundError,
    SuspendedError,
    ValidationError,
)
from gateway.governance.models import MODE_NAMES, Mode
from gateway.governance.policy import PolicySnapshot
from gateway.ledger.log import LogEntry

__all__ = ["add_routes", "bearer_token"]


def bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization")
    if header is None:
        raise AuthenticationError("send the access token as 'Authorization: Bearer <token>'")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("send the access token as 'Authorization: Bearer <token>'")
    return token.strip()


def _oauth_error(err: DsgwError) -> str:
    """The RFC 6749 §5.2 error code for a refused token request."""
    code = err.extensions.get("error")
    if isinstance(code, str):
        return code
    if isinstance(err, InvalidClientError | AuthenticationError):
        return "invalid_client"
    if isinstance(err, SuspendedError | AgreementError | ForbiddenError):
        return "invalid_scope"
    return "invalid_request"


async def token(request: web.Request) -> web.Response:
    """OAuth 2.0 client credentials grant (RFC 6749 §4.4)."""
    tokens = request.app[TOKENS]
    record = request[RECORD]
    try:
        form = await read_form(request)
        if form.get("grant_type") != "client_credentials":
            raise ValidationError(
                "grant_type must be client_credentials", error="unsupported_grant_type"
            )
        credentials = ClientCredentials.from_request(form, request.headers.get("Authorization"))
        record.client_id = (credentials.client_id or "")[:64] or None
        client = await tokens.authenticate(credentials)
        record.client_id = client.client_id
        record.merchant_id = client.merchant_id
        scope = form.get("scope")
        if scope and scope.startswith("scenario:"):
            record.scenario_id = scope.removeprefix("scenario:")[:64]
        issued = await tokens.issue(client, scope)
    except DsgwError as err:
        err.extensions.setdefault("error", _oauth_error(err))
        raise
    record.token_id = issued.claims.jti
    record.agreement_id = issued.claims.agreement_id
    response = json_response(issued.to_response())
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


async def jwks(request: web.Request) -> web.Response:
    response = json_response(request.app[TOKENS].jwks())
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


async def _merchant_claims(
    request: web.Request, snapshot: PolicySnapshot | None = None
) -> AccessClaims:
    claims = await request.app[TOKENS].verify(bearer_token(request), snapshot=snapshot)
    record = request.get(RECORD)
    if record is not None:
        record.merchant_id = claims.merchant_id
        record.client_id = claims.client_id
        record.agreement_id = claims.agreement_id
        record.token_id = claims.jti
    return claims


# The Mode enum is the one list of access modes; its values, for a lookup without the
# enum's call machinery.
_MODES = frozenset(m.value for m in Mode)


async def data_call(request: web.Request) -> web.Response:
    """``/v1/scenarios/{scenario}/datasets/{dataset}/{mode}``: one governed data call."""
    record = request[RECORD]
    scenario_id = request.match_info["scenario"][:64]
    dataset_id = request.match_info["dataset"][:64]
    mode = request.match_info["mode"]
    record.scenario_id, record.dataset_id = scenario_id, dataset_id
    record.mode = mode[:16]
    snapshot = await request.app[POLICY].current()
    claims = await _merchant_claims(request, snapshot)
    if mode not in _MODES:
        raise NotFoundError(f"unknown access mode {mode[:32]!r}; use {MODE_NAMES}")
    body = await read_json(request)
    result = await request.app[DATAPLANE].execute(
        snapshot, claims, scenario_id, dataset_id, mode, body, record
    )
    return json_response(result)


async def catalog(request: web.Request) -> web.Response:
    """The token's scenario and the catalog entries it grants, without source locations."""
    claims = await _merchant_claims(request)
    snapshot = await request.app[POLICY].current()
    scenario = snapshot.scenarios[claims.scenario_id or ""]
    return json_response(
        {
            "scenario": scenario.to_dict(),
            "datasets": [
                snapshot.datasets[g.dataset_id].public_dict()
                for g in scenario.grants
                if g.dataset_id in snapshot.datasets
            ],
        }
    )


def entry_document(entry: Any) -> dict[str, Any]:
    return {
        "record_id": f"{entry.stream}/{entry.seq}",
        "leaf_hash": entry.leaf_hash.hex(),
        "entry_hash": entry.entry_hash.hex(),
        "prev_hash": entry.prev_hash.hex(),
        "salt": entry.salt.hex(),
        "record": json.loads(entry.payload),
    }


async def own_calls(request: web.Request) -> web.Response:
    claims = await _merchant_claims(request)
    limit = min(200, max(1, query_int(request, "limit", default=50)))
    entries = await request.app[EVIDENCE].merchant_calls(claims.merchant_id, limit=limit)
    return json_response({"calls": [entry_document(e) for e in entries]})


async def _own_entry(request: web.Request) -> LogEntry:
    """The calls-stream record named in the path, if it is the caller's own."""
    claims = await _merchant_claims(request)
    return await request.app[EVIDENCE].merchant_call(claims.merchant_id, path_int(request, "seq"))


async def own_call(request: web.Request) -> web.Response:
    return json_response(entry_document(await _own_entry(request)))


async def own_bundle(request: web.Request) -> web.Response:
    """The evidence bundle of one of the merchant's own calls."""
    entry = await _own_entry(request)
    return json_response(await request.app[EVIDENCE].bundle("calls", entry.seq))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/oauth/token", token)
    app.router.add_get("/.well-known/jwks.json", jwks, allow_head=False)
    app.router.add_post("/v1/scenarios/{scenario}/datasets/{dataset}/{mode}", data_call)
    app.router.add_get("/v1/catalog", catalog, allow_head=False)
    app.router.add_get("/v1/calls", own_calls, allow_head=False)
    app.router.add_get("/v1/calls/{seq}", own_call, allow_head=False)
    app.router.add_get("/v1/calls/{seq}/bundle", own_bundle, allow_head=False)
