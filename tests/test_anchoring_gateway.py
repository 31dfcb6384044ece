"""A gateway with anchoring on: checkpoints reach the chain and bundles carry the anchor."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.api.app import create_app
from gateway.authorization.roles import Role
from gateway.chain.audit import chain_evidence
from gateway.chain.backends import AnvilBackend
from gateway.cli.demo import DEMO_MERCHANT, DEMO_SCENARIO, demo_credit_code
from gateway.db.schema import CheckpointRow, LogEntryRow
from gateway.governance.service import LOCAL_ADMIN
from gateway.ledger.audit import AuditReport, audit_stream
from gateway.ledger.bundles import verify_bundle
from gateway.ledger.hashing import HashAlgorithm, entry_hash, leaf_hash
from gateway.runtime import Gateway
from gateway.settings import Settings, load_settings
from tests.support.world import FixedClock, build_world

DSGW = [sys.executable, "-m", "gateway.cli"]


async def test_checkpoints_are_anchored_and_bundles_name_the_anchor(
    settings: Settings, clock: FixedClock
) -> None:
    gateway, creds = await build_world(settings, clock)
    await gateway.close()
    chained = settings.replace(chain="embedded")
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
                bundle = await gateway.evidence.bundle("calls", seq)
                if bundle["anchor"] is not None:
                    break
                await asyncio.sleep(0.25)
            anchor = bundle["anchor"]
            assert isinstance(anchor, dict), "the checkpoint was not anchored in time"
            assert anchor["size"] == head.size and anchor["root"] == head.root.hex()
            check = verify_bundle(bundle)
            assert not any("not anchored" in w for w in check.warnings)

            resp = await client.post(
                "/oauth/token",
                data={"grant_type": "client_credentials", "scope": "admin"},
                headers={"Authorization": encode_basic_auth(*creds["staff"][Role.OPERATOR])},
            )
            staff = (await resp.json())["access_token"]
            resp = await client.get("/metrics", headers={"Authorization": f"Bearer {staff}"})
            metrics = {
                (s.name, s.labels.get("stream")): s.value
                for family in text_string_to_metric_families(await resp.text())
                for s in family.samples
            }
            assert metrics[("dsgw_anchored_size", "calls")] == head.size
            assert metrics[("dsgw_chain_reachable", None)] == 1
            assert metrics[("dsgw_anchoring_consecutive_failures", None)] == 0
            assert metrics[("dsgw_chain_head_block", None)] >= 1
        finally:
            await client.close()
    finally:
        await gateway.close()


def _anvil_settings(tmp_path: Path, source_dir: Path) -> Settings:
    """A data directory of its own (anvil keeps its state there) on the shared sources."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "sources").symlink_to(source_dir / "sources")
    return load_settings(
        None,
        environ={},
        data_dir=data_dir,
        keystore_passphrase="test passphrase",
        secret_hash_time_cost=1,
        secret_hash_memory_kib=8192,
        chain="anvil",
    )


async def test_bundle_verified_against_anvil_with_only_the_rpc_url(
    tmp_path: Path, source_dir: Path, clock: FixedClock
) -> None:
    settings = _anvil_settings(tmp_path, source_dir)
    data_dir = settings.data_dir
    gateway, _creds = await build_world(settings, clock)
    try:
        assert gateway.anchoring is not None
        await asyncio.wait_for(gateway.anchoring.ready.wait(), 120)
        head = await gateway.checkpointer.checkpoint("governance")
        assert head is not None
        bundle: dict[str, object] = {}
        for _ in range(240):
            bundle = await gateway.evidence.bundle("governance", 2)
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

        # `audit --chain` attaches to the node the gateway runs ...
        audit = dsgw("audit", "--chain", "--json", "--stream", "governance")
        assert isinstance(audit, dict) and audit["findings"] == []
        assert audit["streams"][0]["anchors"] >= 1
        # ... and, with the gateway's node stopped, starts it from its state file. A rewrite
        # that the database alone no longer shows is named by the anchored root.
        await gateway.anchoring.close()
        edited = await _rewrite_governance(gateway.engine, "sha256")
        assert dsgw("audit", "--json", "--stream", "governance") == {
            "streams": [
                {"stream": "governance", "records": head.size, "checkpoints": 0, "anchors": None}
            ],
            "findings": [],
        }
        tampered = subprocess.run(
            [*DSGW, "--data-dir", str(data_dir), "audit", "--chain", "--json"],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            env=env | {"DSGW_KEYSTORE_PASSPHRASE": "test passphrase"},
        )
        assert tampered.returncode == 5, tampered.stderr
        (finding,) = json.loads(tampered.stdout)["findings"]
        assert finding["stream"] == "governance" and finding["kind"] == "anchor"
        assert finding["seq"] <= edited
        assert "rewritten after they were anchored" in finding["detail"]
    finally:
        await gateway.close()


async def _rewrite_governance(engine: AsyncEngine, algorithm: HashAlgorithm) -> int:
    """What an attacker with the database does to hide an edit (the demo merchant's
    registration names someone else): recompute every later leaf and link, and drop the
    signed checkpoints that would betray it. Returns the edited record's position."""
    async with engine.begin() as conn:
        rows = (
            await conn.execute(
                select(LogEntryRow.__table__)
                .where(LogEntryRow.stream == "governance")
                .order_by(LogEntryRow.seq)
            )
        ).all()
        seq = next(row.seq for row in rows if DEMO_MERCHANT in row.payload)
        rows = [row for row in rows if row.seq >= seq]
        previous = bytes(rows[0].prev_hash)
        for row in rows:
            payload = row.payload
            if row.seq == seq:
                payload = payload.replace(DEMO_MERCHANT, "someone-else")
            leaf = leaf_hash(algorithm, bytes(row.salt), payload.encode())
            link = entry_hash(algorithm, previous, leaf)
            await conn.execute(
                update(LogEntryRow)
                .where(LogEntryRow.stream == "governance", LogEntryRow.seq == row.seq)
                .values(payload=payload, leaf_hash=leaf, prev_hash=previous, entry_hash=link)
            )
            previous = link
        await conn.execute(delete(CheckpointRow).where(CheckpointRow.stream == "governance"))
    return int(seq)


async def test_sm3_log_is_anchored_and_audited_against_the_chain(
    settings: Settings, clock: FixedClock
) -> None:
    """SM3: the registry takes the roots without proofs; `audit --chain` is what shows the
    anchored roots belong to one append-only log, and it catches a rewrite that the database
    alone no longer betrays."""
    sm3 = settings.replace(ledger_hash_algorithm="sm3", chain="embedded")
    gateway, _creds = await build_world(sm3, clock)
    try:
        anchoring = gateway.anchoring
        assert anchoring is not None
        await asyncio.wait_for(anchoring.ready.wait(), 60)
        assert anchoring.worker is not None
        registry = anchoring.worker.registry
        for n in range(2):  # two anchors of the stream, the second without a proof
            await gateway.governance.merchants.register_merchant(
                LOCAL_ADMIN, f"m-{n}", "某某公司", demo_credit_code(f"Q{n}")
            )
            head = await gateway.checkpointer.checkpoint("governance")
            assert head is not None and head.algorithm == "sm3"
            for _ in range(240):
                if (await registry.latest("governance")).size == head.size:
                    break
                anchoring.notify()
                await asyncio.sleep(0.05)
            clock.advance(dt.timedelta(seconds=10))
        events = await registry.anchored_events("governance")
        assert len(events) >= 2 and not any(e.proof_checked for e in events)
        assert events[-1].root == head.root

        async def audit(chain: bool) -> AuditReport:
            evidence = await chain_evidence(gateway.engine, registry, "governance", algorithm="sm3")
            return await audit_stream(
                gateway.engine,
                "governance",
                algorithm="sm3",
                checkpoint_key=None,
                anchored=evidence.anchored if chain else (),
            )

        clean = await audit(chain=True)
        assert clean.clean and clean.anchors == len(events)
        await anchoring.close()  # the attacker's edit is not meant to be anchored
        edited = await _rewrite_governance(gateway.engine, "sm3")
        assert (await audit(chain=False)).clean  # the database alone agrees with itself
        found = (await audit(chain=True)).findings
        assert {f.kind for f in found} == {"anchor"}
        assert found[0].seq <= edited and "rewritten after they were anchored" in found[0].detail
    finally:
        await gateway.close()


async def test_the_gateways_anvil_is_restarted_when_it_dies(
    tmp_path: Path, source_dir: Path, clock: FixedClock
) -> None:
    gateway, _creds = await build_world(_anvil_settings(tmp_path, source_dir), clock)
    try:
        anchoring = gateway.anchoring
        assert anchoring is not None
        anchoring._watch_interval = 0.1
        await asyncio.wait_for(anchoring.ready.wait(), 120)
        backend = anchoring.backend
        assert isinstance(backend, AnvilBackend) and backend._process is not None
        backend._process.kill()  # the node dies under the gateway
        await asyncio.to_thread(backend._process.wait)
        head = await gateway.checkpointer.checkpoint("governance")
        assert head is not None
        for _ in range(400):
            bundle = await gateway.evidence.bundle("governance", head.size - 1)
            anchor = bundle["anchor"]
            if isinstance(anchor, dict) and anchor["size"] == head.size:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the checkpoint was not anchored after anvil died")
        assert backend.running
    finally:
        await gateway.close()
