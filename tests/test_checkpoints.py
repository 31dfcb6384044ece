"""Signed checkpoints (C2SP tlog-checkpoint) and the ledger API over loopback HTTP."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import event

from gateway.authorization.roles import Role
from gateway.cli.demo import demo_credit_code
from gateway.evidence import (
    Checkpoint,
    CheckpointError,
    NoteSigner,
    parse_checkpoint,
    verifier_key,
    verify_note,
)
from gateway.governance.service import LOCAL_ADMIN
from gateway.ledger import checkpoints
from gateway.ledger.checkpoints import latest_checkpoint
from gateway.ledger.hashing import leaf_hash
from gateway.ledger.log import read_entry
from gateway.ledger.merkle import (
    ConsistencyProof,
    InclusionProof,
    verify_consistency,
    verify_inclusion,
)
from gateway.ledger.tree import MerkleTree
from keys.keystore import KeyPurpose
from tests.support.world import World


def test_signed_note_format_and_verification() -> None:
    key = Ed25519PrivateKey.generate()
    signer = NoteSigner("dsgw.example", key)
    text = Checkpoint.body("dsgw.example/calls", 42, bytes(range(32)), "sha256")
    assert text == "dsgw.example/calls\n42\n" + base64.b64encode(bytes(range(32))).decode() + "\n"
    note = signer.sign(text)
    body, sig_block = note.split("\n\n")
    assert body + "\n" == text
    assert sig_block.startswith("\u2014 dsgw.example ")
    assert base64.b64decode(sig_block.split(" ")[2])[:4] == signer.key_id
    assert verify_note(note, "dsgw.example", key.public_key()) == text
    parsed = parse_checkpoint(text)
    assert (parsed.origin, parsed.size, parsed.root) == ("dsgw.example/calls", 42, bytes(range(32)))
    vkey = verifier_key("dsgw.example", key.public_key())
    name, key_id, encoded = vkey.split("+", 2)
    assert name == "dsgw.example" and key_id == signer.key_id.hex()
    assert base64.b64decode(encoded)[0] == 1
    with pytest.raises(CheckpointError):
        verify_note(note.replace("\n42\n", "\n43\n"), "dsgw.example", key.public_key())
    with pytest.raises(CheckpointError):
        verify_note(note, "dsgw.example", Ed25519PrivateKey.generate().public_key())
    sm3 = Checkpoint.body("o/calls", 1, b"\x00" * 32, "sm3")
    assert sm3.endswith("\nhash sm3\n") and parse_checkpoint(sm3).algorithm == "sm3"


async def test_checkpoint_and_proofs_over_http(world: World) -> None:
    token = await world.token()
    body = {"values": {"credit_code": world.sample["credit_code"], "name": "x"}}
    record_ids = []
    for _ in range(5):
        _, _, headers = await world.data(token, "enterprises", "verify", body)
        record_ids.append(int(headers["Dsgw-Record-Id"].split("/")[1]))
    checkpoint = await world.gateway.checkpointer.checkpoint("calls")
    assert checkpoint is not None and checkpoint.size >= 6
    auth = {"Authorization": f"Bearer {token}"}
    resp = await world.client.get("/v1/ledger/calls/checkpoint", headers=auth)
    document = await resp.json()
    assert resp.status == 200, document
    public = world.gateway.keystore.public_key(
        world.gateway.keystore.active(KeyPurpose.CHECKPOINT).kid
    )
    assert document["verifier_key"] == verifier_key(world.gateway.settings.deployment, public)
    text = verify_note(document["note"], world.gateway.settings.deployment, public)
    head = parse_checkpoint(text)
    assert head.origin == f"{world.gateway.settings.deployment}/calls"
    assert head.size == document["size"] and head.root.hex() == document["root"]

    # Inclusion of each of the merchant's records, recomputed from the record itself.
    for seq in record_ids:
        resp = await world.client.get(f"/v1/calls/{seq}", headers=auth)
        record = await resp.json()
        entry = await read_entry(world.gateway.engine, "calls", seq)
        assert entry is not None
        leaf = leaf_hash("sha256", bytes.fromhex(record["salt"]), entry.payload)
        assert leaf.hex() == record["leaf_hash"]
        resp = await world.client.get(f"/v1/ledger/calls/proof/inclusion?index={seq}", headers=auth)
        proof = InclusionProof.from_dict(await resp.json())
        assert verify_inclusion("sha256", leaf, proof, head.root)
        assert not verify_inclusion("sha256", b"\x00" * 32, proof, head.root)

    # More calls, a newer checkpoint, and the consistency proof between the two heads.
    for _ in range(3):
        await world.data(token, "enterprises", "verify", body)
    newer = await world.gateway.checkpointer.checkpoint("calls")
    assert newer is not None and newer.size > head.size
    admin = await world.staff_token(Role.OPERATOR)
    resp = await world.client.get(
        f"/v1/ledger/calls/proof/consistency?first={head.size}&second={newer.size}",
        headers={"Authorization": f"Bearer {admin}"},
    )
    proof = ConsistencyProof.from_dict(await resp.json())
    assert verify_consistency("sha256", proof, head.root, newer.root)


async def test_ledger_api_refusals(world: World) -> None:
    token = await world.token()
    auth = {"Authorization": f"Bearer {token}"}
    assert (await world.client.get("/v1/ledger/calls/checkpoint")).status == 401
    resp = await world.client.get("/v1/ledger/secrets/checkpoint", headers=auth)
    assert resp.status == 404
    resp = await world.client.get("/v1/ledger/products/checkpoint", headers=auth)
    assert resp.status == 404 and "no checkpoint" in (await resp.json())["detail"]
    await world.gateway.checkpointer.checkpoint("calls")
    for query in ("index=-1", "index=abc", "index=999999", "index=0&size=0", ""):
        resp = await world.client.get(f"/v1/ledger/calls/proof/inclusion?{query}", headers=auth)
        assert 400 <= resp.status < 500, (query, await resp.text())
        assert resp.content_type == "application/problem+json"
    resp = await world.client.get(
        "/v1/ledger/calls/proof/consistency?first=5&second=2", headers=auth
    )
    assert resp.status == 400


async def test_checkpoint_only_when_the_tree_grew(world: World) -> None:
    cp = world.gateway.checkpointer
    first = await cp.checkpoint("governance")
    assert first is not None
    assert await cp.checkpoint("governance") is None  # nothing new
    # The time/size bound: not forced, just signed -> no new one until a bound is reached.
    await world.gateway.governance.merchants.register_merchant(
        LOCAL_ADMIN, "later", "后来公司", demo_credit_code("L")
    )
    assert await cp.checkpoint("governance", force=False) is None
    world.clock.advance(dt.timedelta(seconds=6))
    later = await cp.checkpoint("governance", force=False)
    assert later is not None and later.size == first.size + 1
    assert json.loads(json.dumps(later.to_dict()))["stream"] == "governance"


async def test_a_round_reads_the_heads_only_until_a_stream_is_due(world: World) -> None:
    """The background round costs one statement while no stream is due a checkpoint,
    whatever the load; a stream that grew is signed once its time bound passes, even
    when nothing else arrives."""
    cp = world.gateway.checkpointer
    await cp.run_round()  # signs every stream that has records (none was signed yet)
    statements: list[str] = []
    engine = world.gateway.engine.sync_engine

    def capture(_c: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", capture)
    try:
        signed = cp.signed
        await cp.run_round()
        assert len(statements) == 1 and cp.signed == signed  # the heads, nothing due
        first = await cp.checkpoint("governance")  # nothing new: not signed
        assert first is None
        await world.gateway.governance.merchants.register_merchant(
            LOCAL_ADMIN, "later", "后来公司", demo_credit_code("L")
        )
        statements.clear()
        await cp.run_round()  # grown, but within the time and size bounds
        assert len(statements) == 1 and cp.signed == signed
        world.clock.advance(dt.timedelta(seconds=6))
        await cp.run_round()
        assert cp.signed == signed + 1
        statements.clear()
        await cp.run_round()
        assert len(statements) == 1 and cp.signed == signed + 1
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    newest = await latest_checkpoint(world.gateway.engine, "governance")
    assert newest.size == await MerkleTree(world.gateway.engine, "governance").size()


async def test_a_round_folds_a_grown_stream_ahead_of_its_checkpoint(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between checkpoints a stream is folded every FOLD_EVERY records, so that no fold
    takes the records of a whole checkpoint interval at once; nothing is signed early."""
    cp = world.gateway.checkpointer
    await cp.run_round()
    signed = cp.signed
    monkeypatch.setattr(checkpoints, "FOLD_EVERY", 2)
    tree = MerkleTree(world.gateway.engine, "governance")
    before = await latest_checkpoint(world.gateway.engine, "governance")
    for name in ("later-1", "later-2"):
        await world.gateway.governance.merchants.register_merchant(
            LOCAL_ADMIN, name, "后来公司", demo_credit_code(name[-1])
        )
    assert await tree.size() <= before.size + 1  # a trailing leaf counts unfolded
    await cp.run_round()
    assert cp.signed == signed  # within the time bound: not signed
    assert await tree.size() >= before.size + 2  # but folded
    assert (await latest_checkpoint(world.gateway.engine, "governance")).size == before.size
