"""The world most HTTP tests start from: a gateway with the demo catalog, one merchant with an
agreement and client credentials, staff clients, served over loopback HTTP."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import encode_basic_auth
from aiohttp.test_utils import TestClient, TestServer

from gateway.api.server import GatewayRunner
from gateway.authorization.roles import Role
from gateway.cli.demo_data import DEMO_SCENARIO, register_demo_world
from gateway.clock import FixedClock
from gateway.governance.service import LOCAL_ADMIN
from gateway.runtime import Gateway, initialise
from gateway.settings import Settings

__all__ = [
    "ROWS",
    "TEST_PASSPHRASE",
    "TEST_SCRYPT_N",
    "FixedClock",
    "GatewayTestServer",
    "World",
    "build_world",
]

# Rows per synthetic source table (social insurance has three times as many).
ROWS = 400
TEST_PASSPHRASE = "test passphrase"
# The lowest scrypt cost the keystore accepts (production keystores are made at 2**15): the
# keystore is still sealed and verified exactly as in production, at a quarter of the cost of
# each of the two derivations every world build makes.
TEST_SCRYPT_N = 2**14


class GatewayTestServer(TestServer):
    """The test server with the gateway's own runner (:mod:`gateway.api.server`), so that
    requests the HTTP parser refuses take the same path as under ``dsgw serve``."""

    async def _make_runner(self, **kwargs: Any) -> GatewayRunner:
        return GatewayRunner(self.app, **kwargs)


@dataclass
class World:
    """A gateway with the demo catalog, one merchant with an agreement, staff clients."""

    gateway: Gateway
    client: TestClient  # type: ignore[type-arg]
    clock: FixedClock
    merchant_id: str
    merchant_client: tuple[str, str]
    staff: dict[Role, tuple[str, str]]
    sample: dict[str, Any]

    async def token(
        self, scope: str = f"scenario:{DEMO_SCENARIO}", creds: tuple[str, str] | None = None
    ) -> str:
        client_id, secret = creds or self.merchant_client
        resp = await self.client.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", "scope": scope},
            headers={"Authorization": encode_basic_auth(client_id, secret)},
        )
        body = await resp.json(content_type=None)
        assert resp.status == 200, body
        return str(body["access_token"])

    async def staff_token(self, role: Role) -> str:
        return await self.token("admin", self.staff[role])

    async def data(
        self, token: str, dataset: str, mode: str, body: Any, scenario: str = DEMO_SCENARIO
    ) -> tuple[int, Any, Any]:
        resp = await self.client.post(
            f"/v1/scenarios/{scenario}/datasets/{dataset}/{mode}",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        )
        return resp.status, await resp.json(content_type=None), resp.headers


async def build_world(settings: Settings, clock: FixedClock) -> tuple[Gateway, dict[str, Any]]:
    """Initialise the store, open a gateway and register the demo catalog, the demo merchant
    with an agreement for a year, and one client per staff role; returns the gateway and the
    credentials (``{"merchant": (id, secret), "staff": {role: (id, secret)}}``)."""
    await initialise(settings, clock=clock)
    gateway = await Gateway.open(settings, clock=clock)
    world = await register_demo_world(gateway, agreement_id="agr-demo")
    staff = {}
    for role in (Role.OPERATOR, Role.AUTHORITY, Role.SUPERVISOR):
        issued = await gateway.governance.clients.issue_client(LOCAL_ADMIN, role=role)
        assert issued.secret
        staff[role] = (issued.client.client_id, issued.secret)
    return gateway, {"merchant": (world.client_id, world.client_secret), "staff": staff}
