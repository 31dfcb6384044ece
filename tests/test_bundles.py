"""Evidence bundles: built by the gateway, verified with nothing but the bundle."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.authorization.roles import Role
from gateway.errors import DsgwError
from gateway.evidence import EvidenceBundle, verifier_key
from gateway.ledger.bundles import verify_bundle
from tests.support.world import World


async def _call(world: World) -> tuple[str, int]:
    token = await world.token()
    body = {
        "values": {
            "credit_code": world.sample["credit_code"],
            "legal_rep_name": world.sample["legal_rep_name"],
        }
    }
    _, _, headers = await world.data(token, "enterprises", "verify", body)
    return token, int(headers["Dsgw-Record-Id"].split("/")[1])


async def test_merchant_bundle_verifies_offline(world: World) -> None:
    token, seq = await _call(world)
    auth = {"Authorization": f"Bearer {token}"}
    resp = await world.client.get(f"/v1/calls/{seq}/bundle", headers=auth)
    bundle = await resp.json()
    assert resp.status == 200, bundle
    trusted = (await (await world.client.get("/v1/ledger/calls/checkpoint", headers=auth)).json())[
        "verifier_key"
    ]
    check = verify_bundle(json.loads(json.dumps(bundle)), trusted_key=trusted)
    assert EvidenceBundle.from_json(bundle).to_json() == bundle
    assert check.record["merchant"] == world.merchant_id
    assert check.checkpoint is not None and check.checkpoint.size > seq
    assert any("not anchored" in w for w in check.warnings)

    tampered = json.loads(json.dumps(bundle))
    tampered["record"] = tampered["record"].replace('"allow"', '"deny"')
    with pytest.raises(DsgwError, match="leaf hash"):
        verify_bundle(tampered, trusted_key=trusted)
    moved = json.loads(json.dumps(bundle))
    moved["inclusion_proof"]["path"][0] = "00" * 32
    with pytest.raises(DsgwError, match="inclusion proof"):
        verify_bundle(moved, trusted_key=trusted)
    impostor = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(DsgwError):
        verify_bundle(bundle, trusted_key=verifier_key(world.gateway.settings.deployment, impostor))


async def test_bundles_are_scoped_by_role(world: World) -> None:
    token, seq = await _call(world)
    # The token request itself is another record of this merchant; the governance stream's
    # first record is not the merchant's.
    resp = await world.client.get(
        "/v1/calls/999999/bundle", headers={"Authorization": f"Bearer {token}"}
    )
    assert resp.status == 404
    operator = await world.staff_token(Role.OPERATOR)
    resp = await world.client.get(
        "/admin/bundles/governance/0", headers={"Authorization": f"Bearer {operator}"}
    )
    bundle = await resp.json()
    assert resp.status == 200, bundle
    assert verify_bundle(bundle).record["kind"] == "dataset.registered"
    resp = await world.client.get(
        f"/admin/bundles/calls/{seq}", headers={"Authorization": f"Bearer {token}"}
    )
    assert resp.status == 401
