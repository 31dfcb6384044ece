"""A gateway with anchoring on: checkpoints reach the chain and bundles carry the anchor."""

from __future__ import annotations

import asyncio
import dataclasses

from gateway.api.app import create_app
from gateway.cli.demo import DEMO_SCENARIO
from gateway.ledger.bundles import verify_bundle
from gateway.runtime import Gateway
from gateway.settings import Settings
from tests.conftest import FixedClock, build_world


async def test_checkpoints_are_anchored_and_bundles_name_the_anchor(
    settings: Settings, clock: FixedClock
) -> None:
    gateway, creds = await build_world(settings, clock)
    await gateway.close()
    chained = dataclasses.replace(settings, chain="embedded")
    gateway = await Gateway.open(chained, clock=clock)
    try:
        assert gateway.anchoring is not None
        await asyncio.wait_for(gateway.anchoring.ready.wait(), 60)
        from aiohttp import encode_basic_auth
        from aiohttp.test_utils import TestClient, TestServer

        client = TestClient(TestServer(create_app(gateway), host="127.0.0.1"))
        await client.start_server()
        try:
            resp = await client.post(
                "/oauth/token",
                data={"grant_type": "client_credentials", "scope": f"scenario:{DEMO_SCENARIO}"},
                headers={"Authorization": encode_basic_auth(*creds["merchant"])},
            )
            token = (await resp.json())["access_token"]
            resp = await client.post(
                f"/v1/scenarios/{DEMO_SCENARIO}/datasets/enterprises/verify",
                json={"values": {"credit_code": "91430100MA4L000000", "name": "x"}},
                headers={"Authorization": f"Bearer {token}"},
            )
            seq = int(resp.headers["Dsgw-Record-Id"].split("/")[1])
            head = await gateway.checkpointer.checkpoint("calls")
            assert head is not None
            bundle: dict[str, object] = {}
            for _ in range(240):
                bundle = await gateway.bundle("calls", seq)
                if bundle["anchor"] is not None:
                    break
                await asyncio.sleep(0.25)
            anchor = bundle["anchor"]
            assert isinstance(anchor, dict), "the checkpoint was not anchored in time"
            assert anchor["size"] == head.size and anchor["root"] == head.root.hex()
            check = verify_bundle(bundle)
            assert not any("not anchored" in w for w in check.warnings)
        finally:
            await client.close()
    finally:
        await gateway.close()
