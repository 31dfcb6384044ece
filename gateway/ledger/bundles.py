"""Evidence bundles: one self-contained JSON document proving that a record was in the log.

A bundle holds the record's canonical bytes and salt, its RFC 9162 inclusion proof, the
signed checkpoint the proof leads to (with the verifier key), and, once anchoring runs, the
anchor transaction of that checkpoint. :func:`verify_bundle` checks it with no database
and no gateway; the chain check needs only a JSON-RPC endpoint.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.schema import CheckpointRow
from gateway.errors import NotFoundError, ValidationError
from gateway.ledger.checkpoints import (
    Checkpoint,
    Checkpointer,
    CheckpointError,
    checkpoint_from_row,
    parse_checkpoint,
    verifier_key,
    verify_note,
)
from gateway.ledger.hashing import HashAlgorithm, leaf_hash
from gateway.ledger.log import read_entry
from gateway.ledger.merkle import InclusionProof, verify_inclusion
from gateway.ledger.tree import MerkleTree

__all__ = [
    "BUNDLE_FORMAT",
    "BundleCheck",
    "build_bundle",
    "parse_verifier_key",
    "verify_bundle",
]

BUNDLE_FORMAT = "dsgw-evidence-bundle/1"


def parse_verifier_key(text: str) -> tuple[str, Ed25519PublicKey]:
    """``name+keyid+base64(0x01 || key)`` (C2SP signed-note verifier key) to name and key."""
    try:
        name, _key_id, encoded = text.split("+", 2)
        raw = base64.b64decode(encoded, validate=True)
    except ValueError as exc:
        raise ValidationError("verifier key must look like name+keyid+base64key") from exc
    if len(raw) != 33 or raw[0] != 1:
        raise ValidationError("verifier key is not an Ed25519 signed-note key")
    key = Ed25519PublicKey.from_public_bytes(raw[1:])
    if verifier_key(name, key) != text:
        raise ValidationError("verifier key id does not match its key")
    return name, key


async def _covering_checkpoint(
    engine: AsyncEngine,
    stream: str,
    seq: int,
    checkpointer: Checkpointer,
    at_size: int | None = None,
) -> Checkpoint:
    """The checkpoint of ``at_size`` (an anchored one), else the newest that includes
    record ``seq``, signing one if none does yet."""
    for attempt in range(2):
        query = select(CheckpointRow.__table__).where(CheckpointRow.stream == stream)
        if at_size is not None:
            query = query.where(CheckpointRow.size == at_size)
        else:
            query = query.where(CheckpointRow.size > seq)
        async with engine.connect() as conn:
            row = (await conn.execute(query.order_by(CheckpointRow.size.desc()).limit(1))).first()
        if row is not None:
            return checkpoint_from_row(row)
        if attempt == 0:
            await checkpointer.checkpoint(stream)
    raise NotFoundError(f"no checkpoint covers {stream}/{seq} yet")


async def build_bundle(
    engine: AsyncEngine,
    checkpointer: Checkpointer,
    stream: str,
    seq: int,
    *,
    algorithm: HashAlgorithm,
    key_name: str,
    checkpoint_key: Ed25519PublicKey,
    at_size: int | None = None,
) -> dict[str, Any]:
    """Assemble the evidence bundle of record ``stream/seq``.

    Raises :class:`NotFoundError` when the record does not exist.
    """
    entry = await read_entry(engine, stream, seq)
    if entry is None:
        raise NotFoundError(f"no record {stream}/{seq}")
    head = await _covering_checkpoint(engine, stream, seq, checkpointer, at_size)
    proof = await MerkleTree(engine, stream, algorithm=algorithm).inclusion_proof(seq, head.size)
    return {
        "format": BUNDLE_FORMAT,
        "stream": stream,
        "seq": seq,
        "algorithm": algorithm,
        "record": entry.payload.decode("utf-8"),
        "salt": entry.salt.hex(),
        "leaf_hash": entry.leaf_hash.hex(),
        "inclusion_proof": proof.to_dict(),
        "checkpoint": {
            "note": head.note,
            "verifier_key": verifier_key(key_name, checkpoint_key),
        },
        "anchor": None,
    }


@dataclass(slots=True)
class BundleCheck:
    """What :func:`verify_bundle` established, step by step, and any warnings."""

    record: dict[str, Any] = field(default_factory=dict)
    checkpoint: Checkpoint | None = None
    steps: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _field(document: Mapping[str, Any], name: str, kind: type) -> Any:
    value = document.get(name)
    if not isinstance(value, kind):
        raise ValidationError(f"bundle: member {name} is missing or not a {kind.__name__}")
    return value


def verify_bundle(document: Mapping[str, Any], *, trusted_key: str | None = None) -> BundleCheck:
    """Verify a bundle offline: record -> leaf hash -> inclusion proof -> signed checkpoint.

    ``trusted_key`` is the verifier key the caller already trusts; without it the bundle's
    own key is used and a warning says so (anyone can sign their own checkpoint: the chain
    anchor or a pinned key is what makes the signature meaningful).
    Raises :class:`ValidationError` or :class:`CheckpointError` naming the failing step.
    """
    check = BundleCheck()
    if document.get("format") != BUNDLE_FORMAT:
        raise ValidationError(f"bundle: format must be {BUNDLE_FORMAT}")
    algorithm = document.get("algorithm")
    if algorithm not in ("sha256", "sm3"):
        raise ValidationError("bundle: algorithm must be sha256 or sm3")
    record_text = _field(document, "record", str)
    try:
        salt = bytes.fromhex(_field(document, "salt", str))
        claimed_leaf = bytes.fromhex(_field(document, "leaf_hash", str))
    except ValueError as exc:
        raise ValidationError("bundle: salt and leaf_hash must be hex") from exc
    leaf = leaf_hash(algorithm, salt, record_text.encode("utf-8"))
    if leaf != claimed_leaf:
        raise CheckpointError("bundle: the record does not hash to the bundle's leaf hash")
    try:
        check.record = json.loads(record_text)
    except json.JSONDecodeError as exc:
        raise ValidationError("bundle: record is not JSON") from exc
    check.steps.append(f"record hashes to leaf {leaf.hex()}")

    checkpoint = _field(document, "checkpoint", dict)
    key_text = trusted_key or _field(checkpoint, "verifier_key", str)
    if trusted_key is None:
        check.warnings.append(
            "checkpoint key taken from the bundle itself; pass the operator's verifier key "
            "(or check the chain anchor) to make the signature meaningful"
        )
    elif checkpoint.get("verifier_key") not in (None, trusted_key):
        check.warnings.append("the bundle names another verifier key than the trusted one")
    name, key = parse_verifier_key(key_text)
    head = parse_checkpoint(verify_note(_field(checkpoint, "note", str), name, key))
    if head.algorithm != algorithm:
        raise CheckpointError("bundle: the checkpoint's hash algorithm differs from the record's")
    check.checkpoint = head
    check.steps.append(f"checkpoint {head.origin} size {head.size} signed by {name}")
    if head.stream != document.get("stream"):
        raise CheckpointError("bundle: the checkpoint is for another stream")

    proof = InclusionProof.from_dict(_field(document, "inclusion_proof", dict))
    if proof.leaf_index != document.get("seq") or proof.tree_size != head.size:
        raise CheckpointError("bundle: the proof is for another record or tree size")
    if not verify_inclusion(algorithm, leaf, proof, head.root):
        raise CheckpointError("bundle: the inclusion proof does not lead to the signed root")
    check.steps.append(f"record {head.stream}/{proof.leaf_index} is in that tree")

    if document.get("anchor") is None:
        check.warnings.append("the checkpoint is not anchored on chain (yet)")
    return check
