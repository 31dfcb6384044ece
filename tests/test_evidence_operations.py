"""Evidence that survives routine operations (issue 14, item 5), over the real CLI and anvil:
a checkpoint key rotation, a bundle written by ``dsgw bundle`` and checked with ``--rpc``,
a relative data directory, a second process and a change of leader on one chain directory.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from gateway.chain.backends import AnvilBackend
from gateway.chain.verify import verify_on_chain
from gateway.cli.demo import DEMO_MERCHANT
from gateway.evidence import EvidenceBundle, KeyRing
from gateway.evidence import verify as verify_evidence
from gateway.runtime import Gateway
from gateway.settings import Settings, load_settings
from tests.support.world import FixedClock, build_world

DSGW = [sys.executable, "-m", "gateway.cli"]
PASSPHRASE = "test passphrase"


def _settings(tmp_path: Path, source_dir: Path, chain: str) -> Settings:
    """A data directory of its own (anvil keeps its state there) on the shared sources."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "sources").symlink_to(source_dir / "sources")
    return load_settings(
        None,
        environ={},
        data_dir=data_dir,
        keystore_passphrase=PASSPHRASE,
        secret_hash_time_cost=1,
        secret_hash_memory_kib=8192,
        chain=chain,
    )


def dsgw(
    data_dir: Path | str, *args: str, cwd: Path | None = None, **settings: str
) -> subprocess.CompletedProcess[str]:
    """``dsgw --data-dir DATA_DIR ARGS`` as a user runs it, in a process of its own;
    ``settings`` as ``DSGW_*`` variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSGW_")}
    env |= {"DSGW_KEYSTORE_PASSPHRASE": PASSPHRASE, "COLUMNS": "200"}
    env |= {f"DSGW_{name.upper()}": value for name, value in settings.items()}
    return subprocess.run(
        [*DSGW, "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=180,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, f"{result.args}:\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout) if result.stdout.lstrip().startswith(("{", "[")) else None


def verify(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DSGW, "verify", str(path), "--json", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


async def test_rotation_keeps_old_checkpoints_and_bundles_verifiable(
    tmp_path: Path, source_dir: Path, clock: FixedClock
) -> None:
    settings = _settings(tmp_path, source_dir, "none")
    gateway, _creds = await build_world(settings, clock)
    try:
        old_head = await gateway.checkpointer.checkpoint("governance")
        assert old_head is not None
    finally:
        await gateway.close()
    data_dir = settings.data_dir
    (old_key,) = [k["verifier_key"] for k in ok(dsgw(data_dir, "keys", "verifiers", "--json"))]

    ok(dsgw(data_dir, "keys", "rotate", "checkpoint"))
    keys = ok(dsgw(data_dir, "keys", "verifiers", "--json"))
    assert [k["retired_at"] is None for k in keys] == [True, False]
    new_key = keys[0]["verifier_key"]
    assert keys[1]["verifier_key"] == old_key and new_key != old_key

    # An older record's bundle, fetched after the rotation, names the key that signed its
    # checkpoint (the retired one), not the active one.
    old_bundle = tmp_path / "old.json"
    ok(dsgw(data_dir, "bundle", "governance", "0", "--out", str(old_bundle)))
    document = json.loads(old_bundle.read_text())
    assert document["checkpoint"]["verifier_key"] == old_key
    assert ok(verify(old_bundle))["verified"] is True
    # The operator publishes every key; the verifier picks the one the checkpoint names.
    assert ok(verify(old_bundle, "--key", new_key, "--key", old_key))["verified"] is True
    refused = verify(old_bundle, "--key", new_key)
    assert refused.returncode == 6
    assert "none of the trusted keys" in json.loads(refused.stdout)["error"]

    ok(dsgw(data_dir, "merchant", "suspend", DEMO_MERCHANT, "--reason", "after the rotation"))
    signed = ok(dsgw(data_dir, "checkpoint", "--json"))
    new_size = next(c["size"] for c in signed if c["stream"] == "governance")
    assert new_size > old_head.size

    # The whole history audits clean: each checkpoint is checked with the key it names.
    audit = ok(dsgw(data_dir, "audit", "--json"))
    assert audit["findings"] == []
    assert next(s for s in audit["streams"] if s["stream"] == "governance")["checkpoints"] == 2

    new_bundle = tmp_path / "new.json"
    new_seq = str(new_size - 1)  # the suspension, under a checkpoint of the new key
    ok(dsgw(data_dir, "bundle", "governance", new_seq, "--out", str(new_bundle)))
    assert json.loads(new_bundle.read_text())["checkpoint"]["verifier_key"] == new_key
    assert ok(verify(new_bundle, "--key", new_key, "--key", old_key))["verified"] is True


async def _anchored(gateway: Gateway, stream: str, seq: int) -> dict[str, Any]:
    for _ in range(480):
        bundle = await gateway.evidence.bundle(stream, seq)
        if bundle["anchor"] is not None:
            return bundle
        await asyncio.sleep(0.25)
    raise AssertionError("the checkpoint was not anchored in time")


def _listening_lines(backend: AnvilBackend) -> int:
    return backend.log_file.read_bytes().count(b"Listening on")


async def test_cli_bundle_carries_the_anchor_and_every_field_is_checked(
    tmp_path: Path, source_dir: Path, clock: FixedClock
) -> None:
    settings = _settings(tmp_path, source_dir, "anvil")
    gateway, _creds = await build_world(settings, clock)
    try:
        assert gateway.anchoring is not None
        await asyncio.wait_for(gateway.anchoring.ready.wait(), 120)
        head = await gateway.checkpointer.checkpoint("governance")
        assert head is not None
        served = await _anchored(gateway, "governance", 1)
        backend = gateway.anchoring.backend
        assert isinstance(backend, AnvilBackend) and backend.url is not None
        rpc = backend.url

        # `dsgw bundle` runs no anchoring worker: it reads the final anchor from the store.
        path = tmp_path / "bundle.json"
        ok(dsgw(settings.data_dir, "bundle", "governance", "1", "--out", str(path)))
        bundle = json.loads(path.read_text())
        assert bundle["anchor"] == served["anchor"]
        assert bundle["anchor"]["size"] == head.size
        result = ok(verify(path, "--rpc", rpc))
        assert result["verified"] is True
        assert any("anchored governance" in step for step in result["steps"])
        # The package's chain step establishes what `dsgw verify --rpc` prints.
        model = EvidenceBundle.from_json(bundle)
        check = verify_evidence(model, KeyRing.from_texts([bundle["checkpoint"]["verifier_key"]]))
        await verify_on_chain(model, check, rpc)
        assert check.steps == result["steps"]

        def refused(change: dict[str, Any], *args: str) -> str:
            forged = json.loads(json.dumps(bundle))
            for member, value in change.items():
                where = forged["anchor"] if member != "extra" else forged
                where[member] = value
            forged_path = tmp_path / "forged.json"
            forged_path.write_text(json.dumps(forged))
            answer = verify(forged_path, *args)
            assert answer.returncode == 6, answer.stdout
            return str(json.loads(answer.stdout)["error"])

        # Offline, the anchor is compared with the signed checkpoint ...
        assert "anchor.root" in refused({"root": "00" * 32})
        assert "anchor.size" in refused({"size": head.size + 1})
        assert "anchor.stream_id" in refused({"stream_id": "0x" + "00" * 32})
        # ... with the chain, the block and the chain id too ...
        block = bundle["anchor"]["block_number"]
        assert "block" in refused({"block_number": block + 1}, "--rpc", rpc)
        chain_id = bundle["anchor"]["chain_id"]
        assert "chain" in refused({"chain_id": chain_id + 1}, "--rpc", rpc)
        # ... and a member no step checks is refused rather than left to be trusted.
        assert "no verifier checks" in refused({"extra": "trust me"})
        assert "no verifier checks" in refused({"witnessed_by": "someone"})
    finally:
        await gateway.close()


async def test_one_node_serves_one_directory_whoever_starts_it(
    tmp_path: Path, source_dir: Path, clock: FixedClock
) -> None:
    settings = _settings(tmp_path, source_dir, "anvil")
    gateway, _creds = await build_world(settings, clock)
    try:
        assert gateway.anchoring is not None
        await asyncio.wait_for(gateway.anchoring.ready.wait(), 120)
        await _anchored(gateway, "governance", 0)
        node = gateway.anchoring.backend
        assert isinstance(node, AnvilBackend) and node.running and not node.attached
        pid_file = node.state_file.parent / "anvil.pid"
        published = pid_file.read_text()
        assert _listening_lines(node) == 1

        # Another process, naming the directory by a relative path, attaches to the running
        # node: `audit --chain` starts no anvil and leaves the node's pid file alone.
        audit = ok(dsgw("data", "audit", "--chain", "--json", cwd=tmp_path))
        assert audit["findings"] == [] and audit["streams"][0]["anchors"] is not None
        bundle = tmp_path / "b.json"
        ok(dsgw("data", "bundle", "governance", "0", "--out", "b.json", cwd=tmp_path))
        assert json.loads(bundle.read_text())["anchor"] is not None
        assert _listening_lines(node) == 1
        assert pid_file.read_text() == published and node.running

        # A second gateway (here: a backend through a symlink to the same directory)
        # attaches, and closing it stops nothing.
        link = tmp_path / "link"
        link.symlink_to(settings.data_dir)
        relative = load_settings(None, environ={}, data_dir=link)
        assert relative.data_dir == settings.data_dir
        second = AnvilBackend(link / "chain")
        await second.start()
        assert second.attached and second.url == node.url
        assert await second.w3.eth.block_number >= 1
        await second.close()
        assert node.running and pid_file.read_text() == published

        # A change of leader: the new leader attaches while the old one still runs the
        # node; once the old leader stops it, the new one starts it on the same state.
        leader = AnvilBackend(settings.data_dir / "chain")
        await leader.start()
        assert leader.attached
        height = await leader.w3.eth.block_number
        await gateway.background.stop_anchoring()  # the old leader is deposed and stops its node
        assert not leader.running
        await leader.start()
        try:
            assert not leader.attached and leader.running
            assert await leader.w3.eth.block_number >= height  # the same chain state
            assert _listening_lines(leader) == 2  # one node at a time, never two
            # The deposed gateway, elected again, attaches to the new leader's node.
            await gateway.background.start_anchoring()
            assert gateway.anchoring is not None
            await asyncio.wait_for(gateway.anchoring.ready.wait(), 120)
            again = gateway.anchoring.backend
            assert isinstance(again, AnvilBackend) and again.attached
            assert _listening_lines(leader) == 2
        finally:
            await gateway.background.stop_anchoring()
            await leader.close()
        assert not pid_file.exists()
    finally:
        await gateway.close()


def test_settings_resolve_the_data_directory_once(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    here = Path.cwd()
    os.chdir(tmp_path)
    try:
        relative = load_settings(None, environ={}, data_dir="alias")
    finally:
        os.chdir(here)
    assert relative.data_dir == (tmp_path / "real").resolve()
    assert relative.replace(chain="none").data_dir == relative.data_dir
    assert str(relative.data_dir) in relative.resolved_database_url


async def test_cli_bundle_asks_the_chain_when_the_anchor_became_final_later(
    tmp_path: Path, source_dir: Path, clock: FixedClock
) -> None:
    from sqlalchemy import select

    from gateway.db.schema import AnchorRow, AnchorTransactionRow

    settings = _settings(tmp_path, source_dir, "anvil").replace(chain_confirmations=3)
    # The node is the test's, mining only when told: the gateway attaches to it.
    node = AnvilBackend(settings.data_dir / "chain", no_mining=True)
    await node.start()
    try:
        gateway, _creds = await build_world(settings, clock)
        try:
            assert gateway.anchoring is not None
            await asyncio.wait_for(gateway.anchoring.ready.wait(), 120)
            backend = gateway.anchoring.backend
            assert isinstance(backend, AnvilBackend) and backend.attached
            head = await gateway.checkpointer.checkpoint("governance")
            assert head is not None

            async def anchor_status(what: Any) -> list[str]:
                async with gateway.engine.connect() as conn:
                    return [str(s) for s in (await conn.execute(what)).scalars()]

            sent = select(AnchorTransactionRow.status).where(AnchorTransactionRow.status == "sent")
            governance = select(AnchorRow.status).where(
                AnchorRow.stream == "governance", AnchorRow.size == head.size
            )
            for _ in range(600):
                if await anchor_status(sent):
                    break
                await asyncio.sleep(0.1)
            await node.mine(1)  # one block: mined, one confirmation of the three needed
            for _ in range(600):
                if await anchor_status(governance) == ["mined"]:
                    break
                await asyncio.sleep(0.1)
            assert await anchor_status(governance) == ["mined"]
            await gateway.background.stop_anchoring()  # no worker any more; the node keeps running
        finally:
            await gateway.close()

        path = tmp_path / "bundle.json"
        args = ("bundle", "governance", "0", "--out", str(path))
        ok(dsgw(settings.data_dir, *args, chain_confirmations="3"))
        assert json.loads(path.read_text())["anchor"] is None  # not final yet
        await node.mine(2)  # now it is, on chain; the store still says mined
        ok(dsgw(settings.data_dir, *args, chain_confirmations="3"))
        anchor = json.loads(path.read_text())["anchor"]
        assert anchor is not None and anchor["size"] == head.size
        assert node.url is not None
        assert ok(verify(path, "--rpc", node.url))["verified"] is True
    finally:
        await node.close()
