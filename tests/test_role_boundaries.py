"""Role boundaries (who may revoke or see whose tokens and records), data tokens that are
only ever a merchant's, the maximum token lifetime, what ``/readyz`` tells strangers, and
names that never reach metrics or reports unless they exist: over a real server, on SQLite
and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import secrets
from typing import Any
from zoneinfo import ZoneInfo

import jwt
import pytest
from aiohttp import encode_basic_auth
from prometheus_client.parser import text_string_to_metric_families

from gateway.api.visibility import without_url_secrets
from gateway.authorization.boundaries import BOUNDARIES, Party, Reach
from gateway.authorization.roles import PERMISSIONS, Action, Role
from gateway.cli.demo import DEMO_SCENARIO
from gateway.errors import ForbiddenError
from gateway.governance.service import LOCAL_ADMIN, Actor
from keys.keystore import KeyPurpose
from tests.support.world import World
from tests.test_alerts import alerts, fired, monitor

BEIJING = ZoneInfo("Asia/Shanghai")


def _jti(token: str) -> str:
    return str(jwt.decode(token, options={"verify_signature": False})["jti"])


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _verify_body(world: World) -> dict[str, Any]:
    return {
        "values": {
            "credit_code": world.sample["credit_code"],
            "legal_rep_name": world.sample["legal_rep_name"],
        }
    }


async def _post(world: World, token: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    resp = await world.client.post(path, json=body, headers=_auth(token))
    return resp.status, await resp.json(content_type=None)


async def _revoke(world: World, by: str, jti: str) -> tuple[int, Any]:
    return await _post(world, by, f"/admin/tokens/{jti}/revoke", {"reason": "test"})


async def _works(world: World, admin_token: str) -> bool:
    """Whether a staff token still opens the admin API (401 once revoked)."""
    resp = await world.client.get("/admin/scenarios", headers=_auth(admin_token))
    return resp.status == 200


async def _staff(world: World, role: Role, department: str | None = None) -> str:
    """A token of a new staff client of ``role``."""
    issued = await world.gateway.governance.clients.issue_client(
        LOCAL_ADMIN, role=role, department=department
    )
    assert issued.secret is not None
    return await world.token("admin", (issued.client.client_id, issued.secret))


def _sign(world: World, claims: dict[str, Any]) -> str:
    """A token signed with the gateway's own active token key, as issue() signs."""
    keystore = world.gateway.keystore
    kid = keystore.active(KeyPurpose.TOKEN_SIGNING).kid
    return jwt.encode(
        claims, keystore.signing_key(kid), algorithm="EdDSA", headers={"kid": kid, "typ": "at+jwt"}
    )


# -- revocation -----------------------------------------------------------------------------


async def test_operator_cannot_revoke_its_supervisors_tokens(world: World) -> None:
    operator = await world.staff_token(Role.OPERATOR)
    supervisor = await world.staff_token(Role.SUPERVISOR)
    authority = await world.staff_token(Role.AUTHORITY)
    for victim in (supervisor, authority):
        status, problem = await _revoke(world, operator, _jti(victim))
        assert status == 403, problem
        assert problem["type"] == "/problems/forbidden"
        assert problem["party"] in ("supervisor", "authority")
        assert await _works(world, victim)
    # Refused changes leave no governance record of a revocation.
    resp = await world.client.get("/admin/calls?stream=governance", headers=_auth(supervisor))
    kinds = [e["record"]["kind"] for e in (await resp.json())["entries"]]
    assert "token.revoked" not in kinds

    # The operator revokes merchants' tokens and its own staff's.
    merchant = await world.token()
    assert (await _revoke(world, operator, _jti(merchant)))[0] == 200
    status, body, _ = await world.data(merchant, "enterprises", "verify", _verify_body(world))
    assert status == 401 and body["type"] == "/problems/token-revoked"
    colleague = await _staff(world, Role.OPERATOR)
    assert (await _revoke(world, operator, _jti(colleague)))[0] == 200
    assert not await _works(world, colleague)


async def test_supervisor_and_authority_reach_as_written(world: World) -> None:
    supervisor = await world.staff_token(Role.SUPERVISOR)
    authority = await world.staff_token(Role.AUTHORITY)
    # The supervisor stops the operator, not the bureau that delegated to it.
    operator = await world.staff_token(Role.OPERATOR)
    assert (await _revoke(world, supervisor, _jti(operator)))[0] == 200
    assert not await _works(world, operator)
    status, problem = await _revoke(world, supervisor, _jti(authority))
    assert status == 403 and problem["party"] == "authority"
    assert await _works(world, authority)
    # The bureau stops anyone, its delegate included.
    assert (await _revoke(world, authority, _jti(supervisor)))[0] == 200
    assert not await _works(world, supervisor)
    # Source departments and the exchange revoke nobody's.
    merchant = _jti(await world.token())
    for role, department in ((Role.SOURCE, "市市场监督管理局"), (Role.EXCHANGE, None)):
        token = await _staff(world, role, department)
        assert (await _revoke(world, token, merchant))[0] == 403


async def test_merchant_revocation_reaches_merchants_only(world: World) -> None:
    operator = await world.staff_token(Role.OPERATOR)
    supervisor = await world.staff_token(Role.SUPERVISOR)
    merchant = await world.token()
    source = await _staff(world, Role.SOURCE, "市市场监督管理局")
    path = f"/admin/merchants/{world.merchant_id}/revoke-tokens"
    assert (await _post(world, source, path, {"reason": "x"}))[0] == 403
    status, body = await _post(world, operator, path, {"reason": "contract ended"})
    assert status == 200 and body["revoked"] >= 1
    assert (await world.data(merchant, "enterprises", "verify", _verify_body(world)))[0] == 401
    assert await _works(world, supervisor) and await _works(world, operator)


async def test_disabling_clients_follows_the_same_boundary(world: World) -> None:
    """Disabling a client stops its holder as surely as revoking its tokens (the service
    is where the boundary lives; the CLI and any future route share it)."""
    gov = world.gateway.governance
    operator = Actor("operator-x", Role.OPERATOR)
    supervisor_client = world.staff[Role.SUPERVISOR][0]
    with pytest.raises(ForbiddenError):
        await gov.clients.set_client_status(operator, supervisor_client, "disabled", "test")
    assert await _works(world, await world.staff_token(Role.SUPERVISOR))
    merchant = await world.token()
    await gov.clients.set_client_status(
        operator, world.merchant_client[0], "disabled", "offboarded"
    )
    status, body, _ = await world.data(merchant, "enterprises", "verify", _verify_body(world))
    assert status == 401 and body["type"] == "/problems/token-revoked"
    # Its own staff's credentials, too (a colleague who left).
    colleague = await gov.clients.issue_client(LOCAL_ADMIN, role=Role.OPERATOR)
    assert colleague.secret is not None
    token = await world.token("admin", (colleague.client.client_id, colleague.secret))
    await gov.clients.set_client_status(operator, colleague.client.client_id, "disabled", "left")
    assert not await _works(world, token)


def test_boundaries_agree_with_permissions() -> None:
    """A role that reaches someone holds the permission to act: the two tables cannot
    drift apart; and the operator never reaches its supervisors."""
    for role, reaches in BOUNDARIES.items():
        if reaches.get(Reach.REVOKE):
            assert Action.REVOKE_TOKEN in PERMISSIONS[role]
        if reaches.get(Reach.SEE_TOKEN_IDS):
            assert Action.READ_CALLS in PERMISSIONS[role]
    assert set(BOUNDARIES) == set(Role)
    operator = BOUNDARIES[Role.OPERATOR]
    assert not {Party.SUPERVISOR, Party.AUTHORITY} & operator[Reach.REVOKE]
    assert not {Party(r.value) for r in Role} & operator[Reach.SEE_TOKEN_IDS]


# -- records --------------------------------------------------------------------------------


async def test_staff_token_ids_only_for_authority_and_supervisor(world: World) -> None:
    supervisor = await world.staff_token(Role.SUPERVISOR)
    authority = await world.staff_token(Role.AUTHORITY)
    operator = await world.staff_token(Role.OPERATOR)
    merchant = await world.token()
    assert (await world.data(merchant, "enterprises", "verify", _verify_body(world)))[0] == 200
    resp = await world.client.get("/admin/scenarios", headers=_auth(supervisor))
    supervisor_record = resp.headers["Dsgw-Record-Id"]
    # A staff revocation names a staff token id in the governance stream.
    colleague = await _staff(world, Role.SUPERVISOR)
    assert (await _revoke(world, supervisor, _jti(colleague)))[0] == 200
    # A refused attempt's record names the token in its path, never in its reason.
    assert (await _revoke(world, supervisor, _jti(authority)))[0] == 403
    hidden = {_jti(supervisor), _jti(authority), _jti(colleague)}

    async def read(token: str, stream: str) -> tuple[str, list[dict[str, Any]]]:
        resp = await world.client.get(
            f"/admin/calls?stream={stream}&limit=500", headers=_auth(token)
        )
        assert resp.status == 200
        text = await resp.text()
        return text, json.loads(text)["entries"]

    for stream in ("calls", "governance"):
        text, entries = await read(operator, stream)
        assert not [jti for jti in hidden if jti in text], stream
        assert any(e.get("withheld") for e in entries), stream
        for entry in entries:
            for member in entry.get("withheld", []):
                assert entry["record"][member] is None
    text, calls = await read(operator, "calls")
    assert _jti(merchant) in text  # merchants' token ids: the operator revokes those
    assert not [e for e in calls if e.get("withheld") and e["record"]["merchant"]]
    for reader in (supervisor, authority):
        for stream in ("calls", "governance"):
            text, entries = await read(reader, stream)
            assert not [e for e in entries if "withheld" in e]
        assert _jti(supervisor) in (await read(reader, "calls"))[0]
        assert _jti(colleague) in (await read(reader, "governance"))[0]

    # Bundles: the record as logged or nothing.
    resp = await world.client.get(f"/admin/bundles/{supervisor_record}", headers=_auth(operator))
    problem = await resp.json()
    assert resp.status == 403 and problem["type"] == "/problems/forbidden", problem
    assert _jti(supervisor) not in json.dumps(problem)
    resp = await world.client.get(f"/admin/bundles/{supervisor_record}", headers=_auth(authority))
    assert resp.status == 200
    assert json.loads((await resp.json())["record"])["token_id"] == _jti(supervisor)
    merchant_record = next(e for e in calls if e["record"]["merchant"])["record_id"]
    resp = await world.client.get(f"/admin/bundles/{merchant_record}", headers=_auth(operator))
    assert resp.status == 200


async def test_departments_and_exchange_read_no_records(world: World) -> None:
    supervisor = await world.staff_token(Role.SUPERVISOR)
    resp = await world.client.get("/admin/scenarios", headers=_auth(supervisor))
    record = resp.headers["Dsgw-Record-Id"]
    for role, department in ((Role.SOURCE, "市市场监督管理局"), (Role.EXCHANGE, None)):
        token = await _staff(world, role, department)
        for path in ("/admin/calls", f"/admin/bundles/{record}"):
            resp = await world.client.get(path, headers=_auth(token))
            assert resp.status == 403, (role, path)
    assert (await world.client.get("/admin/calls", headers=_auth(supervisor))).status == 200


# -- tokens ---------------------------------------------------------------------------------


async def test_a_data_token_is_only_ever_a_merchants(world: World) -> None:
    merchant = await world.token()
    claims = jwt.decode(merchant, options={"verify_signature": False})
    fresh = {**claims, "jti": secrets.token_urlsafe(16)}
    # The same claims signed here pass: the key and the signing are the gateway's own...
    status, _, _ = await world.data(
        _sign(world, fresh), "enterprises", "verify", _verify_body(world)
    )
    assert status == 200
    # ...so what refuses the next ones is the claims, not the signature.
    for role in ("operator", "authority"):
        forged = _sign(world, {**fresh, "role": role})
        status, body, headers = await world.data(
            forged, "enterprises", "verify", _verify_body(world)
        )
        assert status == 401 and body["type"] == "/problems/invalid-token", body
        assert "role" in body["detail"] and "Dsgw-Record-Id" in headers
    # A data token of a staff client, or naming another merchant, is not its client's.
    staff_client = world.staff[Role.OPERATOR][0]
    for changed in ({"client_id": staff_client}, {"sub": "some-other-merchant"}):
        status, body, _ = await world.data(
            _sign(world, {**fresh, **changed}), "enterprises", "verify", _verify_body(world)
        )
        assert status == 401 and body["type"] == "/problems/invalid-token", (changed, body)
    # A staff token claims its client's role, never another.
    operator = await world.staff_token(Role.OPERATOR)
    admin_claims = jwt.decode(operator, options={"verify_signature": False})
    resp = await world.client.post(
        f"/admin/tokens/{_jti(await world.staff_token(Role.SUPERVISOR))}/revoke",
        json={"reason": "x"},
        headers=_auth(_sign(world, {**admin_claims, "role": "authority"})),
    )
    assert resp.status == 401 and "role" in (await resp.json())["detail"]


async def test_a_too_long_lived_token_is_refused(world: World) -> None:
    merchant = await world.token()
    claims = jwt.decode(merchant, options={"verify_signature": False})
    lifetime = world.gateway.settings.token.lifetime_seconds
    issued = claims["iat"]
    longest = {**claims, "jti": secrets.token_urlsafe(16), "exp": issued + lifetime}
    assert (await world.data(_sign(world, longest), "enterprises", "verify", _verify_body(world)))[
        0
    ] == 200
    for extra in (1, 86_400 * 365):
        long_lived = {**claims, "jti": secrets.token_urlsafe(16), "exp": issued + lifetime + extra}
        status, body, _ = await world.data(
            _sign(world, long_lived), "enterprises", "verify", _verify_body(world)
        )
        assert status == 401 and body["type"] == "/problems/invalid-token"
        assert "lives longer" in body["detail"]
    admin = jwt.decode(
        await world.staff_token(Role.SUPERVISOR), options={"verify_signature": False}
    )
    forever = _sign(world, {**admin, "jti": secrets.token_urlsafe(16), "exp": issued + 86_400})
    resp = await world.client.get("/admin/scenarios", headers=_auth(forever))
    assert resp.status == 401


# -- readiness ------------------------------------------------------------------------------


async def test_readyz_tells_strangers_the_status_only(world: World) -> None:
    data_dir = str(world.gateway.settings.data_dir)
    for headers in (
        {},
        _auth("not-a-token"),
        _auth(await world.token()),  # a merchant's
        _auth(await world.staff_token(Role.AUTHORITY)),  # staff without metrics.read
        {"Authorization": encode_basic_auth(*world.staff[Role.OPERATOR])},
    ):
        resp = await world.client.get("/readyz", headers=headers)
        assert resp.status == 200
        text = await resp.text()
        assert json.loads(text) == {"status": "ready"}, headers
        assert data_dir not in text
    for role in (Role.OPERATOR, Role.SUPERVISOR):
        resp = await world.client.get("/readyz", headers=_auth(await world.staff_token(role)))
        body = await resp.json()
        assert resp.status == 200 and body["status"] == "ready"
        assert body["checks"]["database"]["ok"] is True
    # Not ready: strangers still learn the status and nothing else.
    await world.gateway.log.close()
    resp = await world.client.get("/readyz")
    assert resp.status == 503 and await resp.json() == {"status": "unavailable"}


def test_readiness_details_never_carry_url_secrets() -> None:
    body = {
        "checks": {
            "chain": {
                "node": "the JSON-RPC node at https://user:s3cret@rpc.example:8545/v3/KEY?k=1",
                "ok": False,
            },
            "database": {"detail": "postgresql://dsgw:pw@db:5432/dsgw failed", "ok": False},
        }
    }
    assert without_url_secrets(body) == {
        "checks": {
            "chain": {"node": "the JSON-RPC node at https://rpc.example:8545", "ok": False},
            "database": {"detail": "postgresql://db:5432 failed", "ok": False},
        }
    }


# -- metrics and reports --------------------------------------------------------------------


async def test_unknown_names_count_under_one_unknown(world: World) -> None:
    attacker = [f"evil-{secrets.token_hex(4)}" for _ in range(3)]
    for name in attacker:  # no token at all
        resp = await world.client.post(
            f"/v1/scenarios/{name}/datasets/{name}/verify", json=_verify_body(world)
        )
        assert resp.status == 401
    resp = await world.client.post(  # an existing scenario, a dataset that is not
        f"/v1/scenarios/{DEMO_SCENARIO}/datasets/{attacker[0]}-ds/query", json={}
    )
    assert resp.status == 401
    merchant = await world.token()
    status, _, _ = await world.data(merchant, f"{attacker[1]}-ds", "verify", _verify_body(world))
    assert 400 <= status < 500
    assert (await world.data(merchant, "enterprises", "verify", _verify_body(world)))[0] == 200
    client_id, secret = world.merchant_client
    resp = await world.client.post(  # a token request for a scenario that does not exist
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": f"scenario:{attacker[2]}-tok"},
        headers={"Authorization": encode_basic_auth(client_id, secret)},
    )
    assert resp.status == 403

    operator = await world.staff_token(Role.OPERATOR)
    resp = await world.client.get("/metrics", headers=_auth(operator))
    text = await resp.text()
    assert resp.status == 200 and "evil" not in text
    requests = [
        s
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "dsgw_requests_total"
    ]
    unknown = sum(
        s.value
        for s in requests
        if s.labels["scenario"] == "unknown" and s.labels["kind"] == "data"
    )
    assert unknown == 3
    assert {s.labels["scenario"] for s in requests} <= {"", "unknown", DEMO_SCENARIO}
    assert any(s.labels["scenario"] == "unknown" and s.labels["kind"] == "token" for s in requests)

    today = world.clock.now().astimezone(BEIJING).date()
    period = f"{today - dt.timedelta(days=1)}..{today + dt.timedelta(days=1)}"
    for fmt in ("md", "html"):
        resp = await world.client.get(
            f"/admin/reports/operations?period={period}&format={fmt}", headers=_auth(operator)
        )
        report = await resp.text()
        assert resp.status == 200, report
        assert "evil" not in report
        assert "unknown" in report and DEMO_SCENARIO in report


async def test_alerts_name_only_what_exists(world: World) -> None:
    """Alerts feed the security report: a client id or dataset sent by a stranger names
    none of them."""
    attacker = f"evil-{secrets.token_hex(4)}"
    for i in range(5):
        resp = await world.client.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", "scope": f"scenario:{DEMO_SCENARIO}"},
            headers={"Authorization": encode_basic_auth(f"{attacker}-{i}", "guess")},
        )
        assert resp.status == 401
    merchant = await world.token()
    for i in range(5):
        status, body, _ = await world.data(
            merchant, f"{attacker}-ds{i}", "verify", _verify_body(world), scenario=f"{attacker}-s"
        )
        assert status == 403, body
    await monitor(world).run_once()
    found = await alerts(world)
    assert "evil" not in repr(found)
    assert "client:unknown" in {a.key for a in fired(found, "invalid-tokens")}
    [burst] = fired(found, "refusal-burst")
    assert burst.evidence["figures"]["datasets"] == {"unknown": 5}
