"""The workflows over HTTP on a real server on loopback: each role on its own surface."""

from __future__ import annotations

from typing import Any

from aiohttp import encode_basic_auth

from gateway.authorization.roles import Role
from gateway.cli.demo import DEMO_SCENARIO, demo_credit_code
from gateway.governance.service import LOCAL_ADMIN
from tests.support.seeded import onboarding_body
from tests.support.world import World

MARKET = "市场监督管理局"


async def _call(
    world: World, method: str, path: str, token: str | None = None, body: Any = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = await world.client.request(method, path, json=body, headers=headers)
    return resp.status, await resp.json(content_type=None)


async def _client_token(world: World, client_id: str, secret: str, scope: str) -> str:
    resp = await world.client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": scope},
        headers={"Authorization": encode_basic_auth(client_id, secret)},
    )
    body = await resp.json()
    assert resp.status == 200, body
    return str(body["access_token"])


async def test_onboarding_over_http(world: World) -> None:
    status, submitted = await _call(world, "POST", "/v1/onboarding", body=onboarding_body())
    assert status == 201, submitted
    key, application_id = submitted["status_key"], submitted["id"]
    assert "status_key_sha256" not in submitted
    status, seen = await _call(world, "GET", f"/v1/onboarding/{application_id}", key)
    assert status == 200 and seen["status"] == "submitted"
    assert (await _call(world, "GET", f"/v1/onboarding/{application_id}", "wrong"))[0] == 404
    bad = onboarding_body() | {"credit_code": "123"}
    status, problem = await _call(world, "POST", "/v1/onboarding", body=bad)
    assert status == 400 and problem["type"] == "/problems/validation"

    operator = await world.staff_token(Role.OPERATOR)
    authority = await world.staff_token(Role.AUTHORITY)
    status, listed = await _call(world, "GET", "/admin/onboarding?status=submitted", operator)
    assert status == 200 and [a["id"] for a in listed["applications"]] == [application_id]
    assert (await _call(world, "GET", "/admin/onboarding", authority))[0] == 403
    path = f"/admin/onboarding/{application_id}/decision"
    status, problem = await _call(world, "POST", path, operator, {"decision": "reject"})
    assert status == 400 and "reasons" in problem["detail"]
    decision = {"decision": "reject", "reasons": ["营业执照经营范围不含数据服务"]}
    status, decided = await _call(world, "POST", path, operator, decision)
    assert status == 200 and decided["status"] == "rejected"
    status, seen = await _call(world, "GET", f"/v1/onboarding/{application_id}", key)
    assert seen["reasons"] == ["营业执照经营范围不含数据服务"]
    assert (await _call(world, "POST", path, operator, {"decision": "approve"}))[0] == 409


async def test_exclusion_list_upload(world: World) -> None:
    operator = await world.staff_token(Role.OPERATOR)
    code = demo_credit_code("EX")
    csv_text = (
        f"credit_code,name,category,source,listed_on\n{code},某,tax-violator,税务,2026-01-01\n"
    )
    resp = await world.client.post(
        "/admin/exclusions?source=test",
        data=csv_text.encode(),
        headers={"Authorization": f"Bearer {operator}", "Content-Type": "text/csv"},
    )
    assert resp.status == 200 and (await resp.json())["added"] == 1
    resp = await world.client.post(
        "/admin/exclusions",
        json={"x": 1},
        headers={"Authorization": f"Bearer {operator}"},
    )
    assert resp.status == 415
    resp = await world.client.post(
        "/admin/exclusions",
        data=b"credit_code,name\n",
        headers={"Authorization": f"Bearer {operator}", "Content-Type": "text/csv"},
    )
    assert resp.status == 400


async def test_application_over_http_each_role_on_its_surface(world: World) -> None:
    gov = world.gateway.governance
    source = await gov.clients.issue_client(LOCAL_ADMIN, role=Role.SOURCE, department=MARKET)
    other_source = await gov.clients.issue_client(
        LOCAL_ADMIN, role=Role.SOURCE, department="公安局"
    )
    assert source.secret and other_source.secret
    client_id, secret = world.merchant_client
    account = await _client_token(world, client_id, secret, "account")
    data_token = await world.token()
    market = await _client_token(world, source.client.client_id, source.secret, "admin")
    police = await _client_token(world, other_source.client.client_id, other_source.secret, "admin")
    operator = await world.staff_token(Role.OPERATOR)
    authority = await world.staff_token(Role.AUTHORITY)

    application = {
        "scenario": DEMO_SCENARIO,
        "requirements": [
            {"dataset": "enterprises", "modes": ["verify"], "fields": ["credit_code", "name"]}
        ],
        "purpose": "贷前核验",
        "period_start": world.clock.now().date().isoformat(),
        "period_end": (world.clock.now().replace(year=world.clock.now().year + 1))
        .date()
        .isoformat(),
        "safeguards": "专线",
    }
    # The account token is the merchant's surface; a data token or no token is refused.
    assert (await _call(world, "POST", "/v1/applications", data_token, application))[0] == 401
    assert (await _call(world, "POST", "/v1/applications", None, application))[0] == 401
    status, created = await _call(world, "POST", "/v1/applications", account, application)
    assert status == 201, created
    app_id = created["id"]
    # An account token reaches no data.
    body = {"values": {"credit_code": world.sample["credit_code"], "name": "x"}}
    resp = await world.client.post(
        f"/v1/scenarios/{DEMO_SCENARIO}/datasets/enterprises/verify",
        json=body,
        headers={"Authorization": f"Bearer {account}"},
    )
    assert resp.status == 401

    compliance = f"/admin/applications/{app_id}/compliance"
    assert (await _call(world, "POST", compliance, market, {"decision": "approve"}))[0] == 403
    status, checked = await _call(world, "POST", compliance, operator, {"decision": "approve"})
    assert status == 200 and checked["status"] == "department-review"
    # The police department sees nothing of it; the market regulator reviews it.
    assert (await _call(world, "GET", f"/admin/applications/{app_id}", police))[0] == 404
    status, listed = await _call(world, "GET", "/admin/applications", police)
    assert listed["applications"] == []
    status, tasks = await _call(world, "GET", "/admin/tasks", market)
    assert [t["kind"] for t in tasks["tasks"]] == ["review"]
    review = f"/admin/applications/{app_id}/review"
    assert (await _call(world, "POST", review, police, {"decision": "approve"}))[0] == 409
    extension = {"working_days": 3, "reason": "需要补充材料"}
    status, extended = await _call(
        world, "POST", f"/admin/applications/{app_id}/extension", market, extension
    )
    assert status == 200 and extended["reviews"][0]["extended_until"]
    status, approved = await _call(world, "POST", review, market, {"decision": "approve"})
    assert status == 200 and approved["status"] == "approved"

    agreement = {
        "shares": {"owner": "40", "operator": "35", "processor": "25"},
        "fees": "免费 (公益)",
        "termination": "违规即终止",
    }
    path = f"/admin/applications/{app_id}/agreement"
    assert (await _call(world, "POST", path, operator, agreement))[0] == 403
    status, concluded = await _call(world, "POST", path, authority, agreement)
    assert status == 201, concluded
    assert [g["dataset"] for g in concluded["scope"]] == ["enterprises"]
    status, seen = await _call(world, "GET", f"/v1/applications/{app_id}", account)
    assert seen["status"] == "agreed" and seen["agreement_id"] == concluded["agreement_id"]
    status, mine = await _call(world, "GET", "/v1/tasks", account)
    assert status == 200 and mine["tasks"] == []


async def test_public_onboarding_is_rate_limited_per_address(world: World) -> None:
    limit = world.gateway.settings.server.onboarding_per_hour
    for i in range(limit):
        body = onboarding_body() | {
            "merchant_id": f"m-{i}",
            "credit_code": demo_credit_code(f"R{i}"),
        }
        assert (await _call(world, "POST", "/v1/onboarding", body=body))[0] == 201
    resp = await world.client.post("/v1/onboarding", json=onboarding_body())
    assert resp.status == 429 and int(resp.headers["Retry-After"]) > 0
    problem = await resp.json(content_type=None)
    assert problem["type"] == "/problems/rate-limited"
