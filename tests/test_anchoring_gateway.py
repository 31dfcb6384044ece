"""A gateway with anchoring on: checkpoints reach the chain and bundles carry the anchor."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

from gateway.api.app import create_app
from gateway.chain.backends import AnvilBackend
from gateway.cli.demo import DEMO_SCENARIO
from gateway.ledger.bundles import verify_bundle
from gateway.runtime import Gateway
from gateway.settings import Settings, load_settings
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


async def test_bundle_verified_against_anvil_with_only_the_rpc_url(
    tmp_path: Path, source_dir: Path, clock: FixedClock
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "sources").symlink_to(source_dir / "sources")
    settings = load_settings(
        None,
        environ={},
        data_dir=data_dir,
        keystore_passphrase="test passphrase",
        secret_hash_time_cost=1,
        secret_hash_memory_kib=8192,
        chain="anvil",
    )
    gateway, _creds = await build_world(settings, clock)
    try:
        assert gateway.anchoring is not None
        await asyncio.wait_for(gateway.anchoring.ready.wait(), 120)
        head = await gateway.checkpointer.checkpoint("governance")
        assert head is not None
        bundle: dict[str, object] = {}
        for _ in range(240):
            bundle = await gateway.bundle("governance", 2)
            if bundle["anchor"] is not None:
                break
            await asyncio.sleep(0.25)
        assert bundle["anchor"] is not None, "not anchored in time"
        path = tmp_path / "bundle.json"
        path.write_text(json.dumps(bundle))
        backend = gateway.anchoring.backend
        assert isinstance(backend, AnvilBackend) and backend.url is not None
        rpc = backend.url
        env = {k: v for k, v in os.environ.items() if not k.startswith("DSGW_")}

        def dsgw_verify() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "gateway.cli", "verify", str(path), "--rpc", rpc, "--json"],
                capture_output=True,
                text=True,
                env=env,
                check=False,
                timeout=120,
            )

        ok = dsgw_verify()
        assert ok.returncode == 0, ok.stderr
        result = json.loads(ok.stdout)
        assert result["verified"] is True
        assert any("anchored governance" in step for step in result["steps"])
        forged = json.loads(path.read_text())
        forged["anchor"]["tx_hash"] = "0x" + "11" * 32
        path.write_text(json.dumps(forged))
        bad = dsgw_verify()
        assert bad.returncode == 6
        assert "no such transaction" in json.loads(bad.stdout)["error"]

        def dsgw(*args: str) -> object:
            result = subprocess.run(
                [sys.executable, "-m", "gateway.cli", "--data-dir", str(data_dir), *args],
                capture_output=True,
                text=True,
                check=False,
                timeout=120,
                env=env | {"DSGW_KEYSTORE_PASSPHRASE": "test passphrase"},
            )
            assert result.returncode == 0, result.stderr
            return json.loads(result.stdout)

        anchors = dsgw("anchors", "--json", "--stream", "governance")
        assert isinstance(anchors, list)
        assert any(a["status"] == "final" and a["size"] == head.size for a in anchors)
        status = dsgw("status", "--json")
        assert isinstance(status, dict)
        governance = next(s for s in status["anchoring"]["streams"] if s["stream"] == "governance")
        assert governance["final_size"] == head.size
    finally:
        await gateway.close()
