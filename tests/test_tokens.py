"""Token endpoint and token verification against a real server on loopback."""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
from typing import Any

import jwt
from aiohttp import encode_basic_auth
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.authorization.roles import Role
from gateway.cli.demo import DEMO_MERCHANT, DEMO_SCENARIO
from gateway.governance.models import MerchantStatus, ScenarioStatus
from gateway.governance.service import LOCAL_ADMIN
from gateway.runtime import Gateway
from keys.jwk import ed25519_jwk
from keys.keystore import KeyPurpose, Keystore
from tests.support.world import World


def _verify_body(world: World) -> dict[str, Any]:
    return {
        "values": {
            "credit_code": world.sample["credit_code"],
            "legal_rep_name": world.sample["legal_rep_name"],
        }
    }


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def test_token_is_eddsa_jwt_bound_to_scenario(world: World) -> None:
    token = await world.token()
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA" and header["typ"] == "at+jwt" and header["kid"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["scenario"] == DEMO_SCENARIO
    assert claims["agreement"] == "agr-demo"
    assert claims["sub"] == DEMO_MERCHANT
    assert claims["aud"] == world.gateway.settings.audience
    assert claims["exp"] - claims["iat"] == 900
    jwks = await (await world.client.get("/.well-known/jwks.json")).json()
    assert header["kid"] in {k["kid"] for k in jwks["keys"]}
    assert all(k["kty"] == "OKP" and k["crv"] == "Ed25519" for k in jwks["keys"])


async def test_token_request_failures_are_problems_and_logged(world: World) -> None:
    client_id, secret = world.merchant_client
    cases = [
        (
            {"grant_type": "client_credentials", "scope": f"scenario:{DEMO_SCENARIO}"},
            encode_basic_auth(client_id, secret + "x"),
            401,
            "invalid_client",
        ),
        (
            {"grant_type": "client_credentials", "scope": f"scenario:{DEMO_SCENARIO}"},
            encode_basic_auth("nobody", secret),
            401,
            "invalid_client",
        ),
        (
            {"grant_type": "client_credentials"},
            encode_basic_auth(client_id, secret),
            400,
            "invalid_scope",
        ),
        (
            {"grant_type": "password", "scope": f"scenario:{DEMO_SCENARIO}"},
            encode_basic_auth(client_id, secret),
            400,
            "unsupported_grant_type",
        ),
        (
            {"grant_type": "client_credentials", "scope": "scenario:no-such"},
            encode_basic_auth(client_id, secret),
            403,
            "invalid_scope",
        ),
        (
            {
                "grant_type": "client_credentials",
                "scope": f"scenario:{DEMO_SCENARIO}",
                "client_id": client_id,
                "client_secret": secret,
            },
            encode_basic_auth(client_id, secret),
            400,
            "invalid_request",
        ),
    ]
    for form, auth, status, error in cases:
        resp = await world.client.post("/oauth/token", data=form, headers={"Authorization": auth})
        body = await resp.json(content_type=None)
        assert resp.status == status, (form, body)
        assert resp.content_type == "application/problem+json"
        assert body["error"] == error
        assert resp.headers["Dsgw-Record-Id"].startswith("calls/")
    resp = await world.client.post("/oauth/token", json={"grant_type": "client_credentials"})
    assert resp.status == 415


async def test_algorithm_confusion_and_forgery_refused(world: World) -> None:
    token = await world.token()
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    public_key = world.gateway.keystore.public_key(header["kid"])
    raw_public = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    forged = [
        # alg=none
        _b64({"alg": "none", "typ": "at+jwt", "kid": header["kid"]}) + "." + _b64(claims) + ".",
        # HS256 keyed with the public key (classic algorithm confusion)
        jwt.encode(
            claims, raw_public, algorithm="HS256", headers={"kid": header["kid"], "typ": "at+jwt"}
        ),
        # EdDSA signed by a key the gateway never issued, reusing the kid
        jwt.encode(
            claims,
            Ed25519PrivateKey.generate(),
            algorithm="EdDSA",
            headers={"kid": header["kid"], "typ": "at+jwt"},
        ),
        # payload changed after signing (another scenario)
        token.split(".")[0]
        + "."
        + _b64({**claims, "scenario": "other"})
        + "."
        + token.split(".")[2],
        "garbage",
        "a.b.c",
        "x" * 5000,
    ]
    for bad in forged:
        status, body, headers = await world.data(bad, "enterprises", "verify", _verify_body(world))
        assert status == 401, (bad[:40], body)
        assert body["type"] == "/problems/invalid-token"
        assert "Dsgw-Record-Id" in headers
    resp = await world.client.post(
        f"/v1/scenarios/{DEMO_SCENARIO}/datasets/enterprises/verify", json=_verify_body(world)
    )
    assert resp.status == 401


async def test_admin_token_is_not_a_data_token_and_vice_versa(world: World) -> None:
    admin = await world.staff_token(Role.OPERATOR)
    status, body, _ = await world.data(admin, "enterprises", "verify", _verify_body(world))
    assert status == 401 and "audience" in body["detail"]
    merchant = await world.token()
    resp = await world.client.get("/admin/calls", headers={"Authorization": f"Bearer {merchant}"})
    assert resp.status == 401


async def test_expired_token_refused(world: World) -> None:
    token = await world.token()
    status, _, _ = await world.data(token, "enterprises", "verify", _verify_body(world))
    assert status == 200
    world.clock.advance(dt.timedelta(minutes=16))
    status, body, _ = await world.data(token, "enterprises", "verify", _verify_body(world))
    assert status == 401 and "expired" in body["detail"]


async def test_token_never_outlives_agreement(world: World) -> None:
    gov = world.gateway.governance
    now = world.clock.now()
    await gov.merchants.register_merchant(LOCAL_ADMIN, "short-term", "短期公司", _uscc("SHORT"))
    await gov.agreements.grant_agreement(
        LOCAL_ADMIN,
        merchant_id="short-term",
        scenario_id=DEMO_SCENARIO,
        starts_at=now - dt.timedelta(days=1),
        ends_at=now + dt.timedelta(minutes=5),
        shares=(50, 25, 25),
    )
    issued = await gov.clients.issue_client(LOCAL_ADMIN, merchant_id="short-term")
    assert issued.secret
    resp = await world.client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": f"scenario:{DEMO_SCENARIO}"},
        headers={"Authorization": encode_basic_auth(issued.client.client_id, issued.secret)},
    )
    body = await resp.json()
    assert resp.status == 200 and body["expires_in"] <= 300
    world.clock.advance(dt.timedelta(minutes=6))
    resp = await world.client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": f"scenario:{DEMO_SCENARIO}"},
        headers={"Authorization": encode_basic_auth(issued.client.client_id, issued.secret)},
    )
    assert resp.status == 403


def _uscc(seed: str) -> str:
    from gateway.cli.demo import demo_credit_code

    return demo_credit_code(seed)


async def test_revocation_by_operator_is_effective_on_next_call(world: World) -> None:
    token = await world.token()
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    assert (await world.data(token, "enterprises", "verify", _verify_body(world)))[0] == 200
    admin = await world.staff_token(Role.OPERATOR)
    resp = await world.client.post(
        f"/admin/tokens/{jti}/revoke",
        json={"reason": "leaked"},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert resp.status == 200, await resp.text()
    status, body, _ = await world.data(token, "enterprises", "verify", _verify_body(world))
    assert status == 401 and body["type"] == "/problems/token-revoked"


async def test_changes_from_another_process_apply_on_next_call(world: World) -> None:
    """The CLI runs in its own process with its own Gateway; the serving process must see
    its suspension on the very next call."""
    token = await world.token()
    assert (await world.data(token, "enterprises", "verify", _verify_body(world)))[0] == 200
    other = await Gateway.open(world.gateway.settings, clock=world.clock)
    try:
        await other.governance.merchants.set_merchant_status(
            LOCAL_ADMIN, DEMO_MERCHANT, MerchantStatus.SUSPENDED, "audit finding"
        )
        status, body, _ = await world.data(token, "enterprises", "verify", _verify_body(world))
        assert status == 403 and body["type"] == "/problems/suspended"
        await other.governance.merchants.set_merchant_status(
            LOCAL_ADMIN, DEMO_MERCHANT, MerchantStatus.ACTIVE
        )
        assert (await world.data(token, "enterprises", "verify", _verify_body(world)))[0] == 200
        await other.governance.scenarios.set_scenario_status(
            LOCAL_ADMIN, DEMO_SCENARIO, ScenarioStatus.SUSPENDED, "review"
        )
        status, body, _ = await world.data(token, "enterprises", "verify", _verify_body(world))
        assert status == 403 and body["type"] == "/problems/suspended"
    finally:
        await other.close()


async def test_key_rotation_keeps_old_tokens_valid(world: World) -> None:
    old_token = await world.token()
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    settings = world.gateway.settings
    store = Keystore.open(settings.keystore_path, b"test passphrase")
    new = store.rotate(KeyPurpose.TOKEN_SIGNING, now=world.clock.now())
    assert (await world.data(old_token, "enterprises", "verify", _verify_body(world)))[0] == 200
    world.gateway.keystore.reload_if_changed()
    new_token = await world.token()
    assert jwt.get_unverified_header(new_token)["kid"] == new.kid
    jwks = await (await world.client.get("/.well-known/jwks.json")).json()
    assert {old_kid, new.kid} <= {k["kid"] for k in jwks["keys"]}
    assert (await world.data(new_token, "enterprises", "verify", _verify_body(world)))[0] == 200
    assert (await world.data(old_token, "enterprises", "verify", _verify_body(world)))[0] == 200


async def test_private_key_jwt_client_assertion(world: World) -> None:
    key = Ed25519PrivateKey.generate()
    jwk = ed25519_jwk(key.public_key(), "merchant-key-1")
    issued = await world.gateway.governance.clients.issue_client(
        LOCAL_ADMIN, merchant_id=DEMO_MERCHANT, public_jwk=jwk, with_secret=False
    )
    client_id = issued.client.client_id
    now = int(world.clock.now().timestamp())

    def assertion(**over: Any) -> str:
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": world.gateway.settings.token_endpoint,
            "exp": now + 120,
            "iat": now,
            "jti": secrets.token_hex(12),
        } | over
        return jwt.encode(claims, key, algorithm="EdDSA")

    async def request(token: str) -> tuple[int, Any]:
        resp = await world.client.post(
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "scope": f"scenario:{DEMO_SCENARIO}",
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": token,
            },
        )
        return resp.status, await resp.json(content_type=None)

    good = assertion()
    status, body = await request(good)
    assert status == 200, body
    assert (await request(good))[0] == 401  # replayed jti
    assert (await request(assertion(aud="https://elsewhere/token")))[0] == 401
    assert (await request(assertion(exp=now - 120)))[0] == 401
    assert (await request(assertion(exp=now + 3600)))[0] == 401
    # A time no datetime can hold is a malformed claim (401), not an overflow (500).
    for exp in (10**20, 2**63, -(10**12)):
        assert (await request(assertion(exp=exp)))[0] == 401, exp
    other_key = Ed25519PrivateKey.generate()
    forged = jwt.encode(
        {
            "iss": client_id,
            "sub": client_id,
            "aud": world.gateway.settings.token_endpoint,
            "exp": now + 60,
            "jti": secrets.token_hex(12),
        },
        other_key,
        algorithm="EdDSA",
    )
    assert (await request(forged))[0] == 401
