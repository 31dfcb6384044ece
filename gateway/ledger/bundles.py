"""Evidence bundles: one self-contained JSON document proving that a record was in the log.

A bundle holds the record's canonical bytes and salt, its RFC 9162 inclusion proof, the
signed checkpoint the proof leads to (with the verifier key of the key that signed it, which
after a key rotation is a retired key for older records), and, once anchoring runs, the
anchor transaction of that checkpoint. :func:`verify_bundle` checks it with no database
and no gateway; the chain check needs only a JSON-RPC endpoint.

Every member of a bundle is either checked or refused: a member this module does not know
is an error, not something a reader might trust unchecked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_utils.crypto import keccak
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.schema import CheckpointRow
from gateway.errors import NotFoundError, ValidationError
from gateway.ledger.checkpoints import (
    Checkpoint,
    Checkpointer,
    CheckpointError,
    KeyRing,
    NoteVerifier,
    checkpoint_from_row,
)
from gateway.ledger.hashing import HashAlgorithm, leaf_hash
from gateway.ledger.log import read_entry
from gateway.ledger.merkle import InclusionProof, verify_inclusion
from gateway.ledger.tree import MerkleTree

__all__ = [
    "ANCHOR_MEMBERS",
    "BUNDLE_FORMAT",
    "BundleCheck",
    "build_bundle",
    "parse_verifier_key",
    "verify_bundle",
]

BUNDLE_FORMAT = "dsgw-evidence-bundle/1"


_MEMBERS = frozenset(
    {
        "format",
        "stream",
        "seq",
        "algorithm",
        "record",
        "salt",
        "leaf_hash",
        "inclusion_proof",
        "checkpoint",
        "anchor",
    }
)
_CHECKPOINT_MEMBERS = frozenset({"note", "verifier_key"})
ANCHOR_MEMBERS = frozenset(
    {"chain_id", "contract", "stream_id", "size", "root", "tx_hash", "block_number"}
)
"""The members of a bundle's ``anchor``: each compared with the checkpoint here and with
the chain by :func:`gateway.chain.verify.verify_anchor`."""
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_TX_HASH = re.compile(r"0x[0-9a-f]{64}")


def parse_verifier_key(text: str) -> NoteVerifier:
    """``name+keyid+base64(0x01 || key)`` (C2SP signed-note verifier key) to a verifier."""
    return NoteVerifier.from_text(text)


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
    checkpoint_keys: KeyRing,
    at_size: int | None = None,
) -> dict[str, Any]:
    """Assemble the evidence bundle of record ``stream/seq``. Its verifier key is the key
    of ``checkpoint_keys`` (the keystore's active and retired checkpoint keys) that signed
    the covering checkpoint, whichever is active now.

    Raises :class:`NotFoundError` when the record does not exist, :class:`CheckpointError`
    when no key of the ring signed the checkpoint.
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
            "verifier_key": checkpoint_keys.signer_of(head.note).to_text(),
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


def _unknown(document: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    extra = sorted(set(document) - allowed)
    if extra:
        raise ValidationError(f"bundle: {where} has members no verifier checks: {', '.join(extra)}")


def _check_anchor(anchor: Mapping[str, Any], head: Checkpoint) -> None:
    """The anchor's members against the checkpoint (the chain checks the rest)."""
    _unknown(anchor, ANCHOR_MEMBERS, "anchor")
    missing = sorted(ANCHOR_MEMBERS - set(anchor))
    if missing:
        raise ValidationError(f"bundle: anchor lacks {', '.join(missing)}")
    for name in ("chain_id", "size", "block_number"):
        value = anchor[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValidationError(f"bundle: anchor.{name} must be a non-negative integer")
    if not isinstance(anchor["contract"], str) or not _ADDRESS.fullmatch(anchor["contract"]):
        raise ValidationError("bundle: anchor.contract must be a 0x-prefixed 20-byte address")
    if not isinstance(anchor["tx_hash"], str) or not _TX_HASH.fullmatch(anchor["tx_hash"]):
        raise ValidationError("bundle: anchor.tx_hash must be 0x and 64 lowercase hex digits")
    if anchor["stream_id"] != "0x" + keccak(text=head.stream).hex():
        raise CheckpointError(
            f"bundle: anchor.stream_id is not the registry id of stream {head.stream}"
        )
    if anchor["size"] != head.size:
        raise CheckpointError(
            f"bundle: anchor.size {anchor['size']} is not the checkpoint's size {head.size}"
        )
    if anchor["root"] != head.root.hex():
        raise CheckpointError("bundle: anchor.root is not the signed checkpoint's root")


def verify_bundle(
    document: Mapping[str, Any], *, trusted_key: str | Sequence[str] | None = None
) -> BundleCheck:
    """Verify a bundle offline: record -> leaf hash -> inclusion proof -> signed checkpoint,
    and the anchor's members against the checkpoint (the chain itself is checked by
    :func:`gateway.chain.verify.verify_anchor`).

    ``trusted_key`` is the verifier key (or keys: the operator's current and retired ones)
    the caller already trusts; the one whose key id the checkpoint's signature names is
    used. Without it the bundle's own key is used and a warning says so (anyone can sign
    their own checkpoint: the chain anchor or a pinned key is what makes the signature
    meaningful). Members no step checks are refused.
    Raises :class:`ValidationError` or :class:`CheckpointError` naming the failing step.
    """
    check = BundleCheck()
    if document.get("format") != BUNDLE_FORMAT:
        raise ValidationError(f"bundle: format must be {BUNDLE_FORMAT}")
    _unknown(document, _MEMBERS, "the bundle")
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
    _unknown(checkpoint, _CHECKPOINT_MEMBERS, "checkpoint")
    note = _field(checkpoint, "note", str)
    own_text = checkpoint.get("verifier_key")
    if own_text is not None and not isinstance(own_text, str):
        raise ValidationError("bundle: checkpoint.verifier_key must be a string")
    own = parse_verifier_key(own_text) if own_text is not None else None
    if trusted_key is None:
        if own is None:
            raise ValidationError("bundle: no verifier key in the bundle and none trusted")
        ring = KeyRing([own])
        check.warnings.append(
            "checkpoint key taken from the bundle itself; pass the operator's verifier key "
            "(or check the chain anchor) to make the signature meaningful"
        )
    else:
        trusted = [trusted_key] if isinstance(trusted_key, str) else list(trusted_key)
        ring = KeyRing(parse_verifier_key(text) for text in trusted)
    head, signer = ring.verify(note)
    if trusted_key is not None and own is not None and own.to_text() != signer.to_text():
        check.warnings.append(
            "the bundle names another verifier key than the trusted one that signed it"
        )
    if head.algorithm != algorithm:
        raise CheckpointError("bundle: the checkpoint's hash algorithm differs from the record's")
    check.checkpoint = head
    check.steps.append(
        f"checkpoint {head.origin} size {head.size} signed by {signer.name} "
        f"key {signer.key_id.hex()}"
    )
    if head.stream != document.get("stream"):
        raise CheckpointError("bundle: the checkpoint is for another stream")

    proof = InclusionProof.from_dict(_field(document, "inclusion_proof", dict))
    seq = document.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise ValidationError("bundle: member seq is missing or not an integer")
    if proof.leaf_index != seq or proof.tree_size != head.size:
        raise CheckpointError("bundle: the proof is for another record or tree size")
    if not verify_inclusion(algorithm, leaf, proof, head.root):
        raise CheckpointError("bundle: the inclusion proof does not lead to the signed root")
    check.steps.append(f"record {head.stream}/{proof.leaf_index} is in that tree")

    anchor = document.get("anchor")
    if anchor is None:
        check.warnings.append("the checkpoint is not anchored on chain (yet)")
    elif not isinstance(anchor, dict):
        raise ValidationError("bundle: anchor must be an object or null")
    else:
        _check_anchor(anchor, head)
        check.steps.append(
            f"anchor names this checkpoint (size {head.size}, its root) in transaction "
            f"{anchor['tx_hash']}"
        )
    return check
