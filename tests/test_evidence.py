"""The evidence package: models that parse strictly and write today's wire format, a key
ring that picks the key a note names, and the one verification."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.chain.errors import ChainError
from gateway.chain.verify import verify_anchor, verify_on_chain
from gateway.errors import DsgwError, ValidationError
from gateway.evidence import (
    Anchor,
    Checkpoint,
    CheckpointError,
    EvidenceBundle,
    KeyRing,
    NoteSigner,
    NoteVerifier,
    checkpoint_verifiers,
    gateway_key_ring,
    published_checkpoint,
    verify,
)
from gateway.ledger.bundles import verify_bundle
from keys.keystore import KeyPurpose, Keystore

DATA = Path(__file__).parent / "data" / "evidence"


def _load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((DATA / name).read_text())
    return document


def _key() -> str:
    return (DATA / "verifier-key.txt").read_text().strip()


@pytest.mark.parametrize("name", ["bundle-calls.json", "bundle-calls-anchored.json"])
def test_bundles_handed_out_before_keep_their_format_and_verify(name: str) -> None:
    document = _load(name)
    bundle = EvidenceBundle.from_json(document)
    # Byte for byte the same document, members in the same order.
    assert json.dumps(bundle.to_json()) == json.dumps(document)
    check = verify(bundle, KeyRing.from_texts([_key()]))
    assert check.record["merchant"] == "xingchen-credit"
    assert check.checkpoint is not None and check.checkpoint.size == 2
    assert check.steps[0].startswith("record hashes to leaf ")
    anchored = bundle.anchor is not None
    assert any(s.startswith("anchor names this checkpoint") for s in check.steps) == anchored
    assert any("not anchored" in w for w in check.warnings) == (not anchored)
    # The CLI's entry point gives the same answer.
    old_way = verify_bundle(document, trusted_key=_key())
    assert (old_way.steps, old_way.warnings) == (check.steps, check.warnings)
    own = verify_bundle(document)
    assert any("taken from the bundle itself" in w for w in own.warnings)


def test_checkpoint_document_round_trips() -> None:
    served = _load("checkpoint-calls.json")
    head = Checkpoint.from_json(served)
    assert head.stream == "calls" and head.size == 2
    ring = KeyRing.from_texts([_key()])
    assert published_checkpoint(head, ring) == served
    with pytest.raises(ValidationError, match="member size disagrees"):
        Checkpoint.from_json(served | {"size": 3})
    with pytest.raises(ValidationError, match="member note"):
        Checkpoint.from_json({"size": 2})
    with pytest.raises(ValidationError, match="signature block"):
        Checkpoint.from_json({"note": "dsgw.local/calls\n2\n"})


def _without(document: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    copy = json.loads(json.dumps(document))
    where = copy
    for step in path[:-1]:
        where = where[step]
    del where[path[-1]]
    return copy


@pytest.mark.parametrize(
    ("path", "named"),
    [
        (("format",), "format"),
        (("stream",), "member stream"),
        (("seq",), "member seq"),
        (("algorithm",), "algorithm"),
        (("record",), "member record"),
        (("salt",), "member salt"),
        (("leaf_hash",), "member leaf_hash"),
        (("inclusion_proof",), "member inclusion_proof"),
        (("inclusion_proof", "path"), "path"),
        (("checkpoint",), "member checkpoint"),
        (("checkpoint", "note"), "member note"),
        (("anchor", "tx_hash"), "anchor lacks tx_hash"),
        (("anchor", "root"), "anchor lacks root"),
    ],
)
def test_a_missing_member_is_named(path: tuple[str, ...], named: str) -> None:
    document = _without(_load("bundle-calls-anchored.json"), path)
    with pytest.raises(ValidationError, match=named):
        EvidenceBundle.from_json(document)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"seq": "1"}, "member seq is missing or not an integer"),
        ({"seq": True}, "member seq"),
        ({"stream": 5}, "member stream"),
        ({"salt": "zz"}, "must be hex"),
        ({"record": "not json"}, "record is not JSON"),
        ({"record": "[1]"}, "record is not a JSON object"),
        ({"checkpoint": {"note": "x", "verifier_key": 5}}, "verifier_key must be a string"),
        ({"checkpoint": {"note": "x", "witness": "y"}}, "checkpoint has members"),
        ({"witnessed_by": "someone"}, "no verifier checks: witnessed_by"),
        (
            {"inclusion_proof": {"leaf_index": 1, "tree_size": 2, "path": [], "root": "00"}},
            "inclusion_proof has members no verifier checks: root",
        ),
        ({"anchor": []}, "anchor must be an object or null"),
    ],
)
def test_a_bad_member_is_named(change: dict[str, Any], named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        EvidenceBundle.from_json(_load("bundle-calls.json") | change)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"size": -1}, r"anchor\.size must be a non-negative integer"),
        ({"chain_id": "1"}, r"anchor\.chain_id"),
        ({"contract": "0x12"}, r"anchor\.contract"),
        ({"tx_hash": "0x" + "CD" * 32}, r"anchor\.tx_hash"),
        ({"root": 5}, r"anchor\.root must be a string"),
        ({"extra": 1}, "anchor has members no verifier checks: extra"),
    ],
)
def test_a_bad_anchor_member_is_named(change: dict[str, Any], named: str) -> None:
    document = _load("bundle-calls-anchored.json")
    with pytest.raises(ValidationError, match=named):
        Anchor.from_json(document["anchor"] | change)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"size": 3}, r"anchor\.size 3"),
        ({"root": "00" * 32}, r"anchor\.root"),
        ({"stream_id": "0x" + "00" * 32}, r"anchor\.stream_id"),
    ],
)
def test_an_anchor_for_another_checkpoint_is_refused(change: dict[str, Any], named: str) -> None:
    document = _load("bundle-calls-anchored.json")
    document["anchor"] |= change
    with pytest.raises(CheckpointError, match=named):
        verify(EvidenceBundle.from_json(document), KeyRing.from_texts([_key()]))


def test_the_ring_picks_the_key_the_note_names() -> None:
    bundle = EvidenceBundle.from_json(_load("bundle-calls.json"))
    real = NoteVerifier.from_text(_key())
    # Another key of the same deployment: a key rotation's new key, say.
    other = NoteVerifier(real.name, Ed25519PrivateKey.generate().public_key())
    check = verify(bundle, KeyRing([other, real]))
    assert check.steps[1].endswith(f"key {real.key_id.hex()}")
    assert not check.warnings[:-1]  # only "not anchored": the bundle names the same key
    with pytest.raises(CheckpointError, match=f"none of the trusted keys.*{other.key_id.hex()}"):
        verify(bundle, KeyRing([other]))
    # A bundle naming a key other than the trusted signer says so.
    renamed = EvidenceBundle.from_json(
        _load("bundle-calls.json")
        | {"checkpoint": {"note": bundle.note, "verifier_key": other.to_text()}}
    )
    assert any("names another verifier key" in w for w in verify(renamed, KeyRing([real])).warnings)


def test_the_published_key_is_the_signer_even_when_retired() -> None:
    retired = NoteSigner("dsgw.example", Ed25519PrivateKey.generate())
    active = NoteSigner("dsgw.example", Ed25519PrivateKey.generate())
    note = retired.sign(Checkpoint.body("dsgw.example/calls", 3, b"\x01" * 32, "sha256"))
    ring = KeyRing(NoteVerifier(s.name, s.key.public_key()) for s in (active, retired))
    head, signer = ring.verify(note)
    assert signer.key_id == retired.key_id and head.size == 3
    assert (
        published_checkpoint(
            Checkpoint(head.origin, head.size, head.root, head.algorithm, note), ring
        )["verifier_key"]
        == NoteVerifier(retired.name, retired.key.public_key()).to_text()
    )


async def test_a_malformed_anchor_is_refused_before_any_rpc() -> None:
    bundle = EvidenceBundle.from_json(_load("bundle-calls-anchored.json"))
    head = verify(bundle, KeyRing.from_texts([_key()])).checkpoint
    assert head is not None
    anchor = _load("bundle-calls-anchored.json")["anchor"]
    del anchor["tx_hash"]
    with pytest.raises(ChainError, match="anchor lacks tx_hash"):
        await verify_anchor(anchor, head, "http://127.0.0.1:9")


async def test_the_chain_step_needs_an_anchor() -> None:
    bundle = EvidenceBundle.from_json(_load("bundle-calls.json"))
    check = verify(bundle, KeyRing.from_texts([_key()]))
    with pytest.raises(DsgwError, match="no anchor to check on chain"):
        await verify_on_chain(bundle, check, "http://127.0.0.1:9")


def test_the_gateway_ring_holds_every_checkpoint_key_of_the_keystore(tmp_path: Path) -> None:
    store = Keystore.create(tmp_path / "keystore.json", b"passphrase", scrypt_n=2**14)
    first = store.generate(KeyPurpose.CHECKPOINT, now=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    old = NoteSigner("dsgw.example", store.signing_key(first.kid))
    note = old.sign(Checkpoint.body("dsgw.example/calls", 1, b"\x02" * 32, "sha256"))
    store.rotate(KeyPurpose.CHECKPOINT, now=dt.datetime(2026, 2, 1, tzinfo=dt.UTC))
    listed = checkpoint_verifiers(store, "dsgw.example")
    assert [info.retired_at is None for info, _ in listed] == [True, False]
    ring = gateway_key_ring(store, "dsgw.example")
    assert len(ring) == 2
    # The retired key, which the note names, verifies it after the rotation.
    assert ring.verify(note)[1].key_id == old.key_id == listed[1][1].key_id
