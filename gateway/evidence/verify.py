"""The one verification of an evidence bundle: what the CLI, the API and reports all run.

Offline, with no database and no gateway: record -> leaf hash -> inclusion proof ->
signed checkpoint (with the key the checkpoint names) -> the anchor's members against that
checkpoint. Whether the chain holds the anchor is :func:`gateway.chain.verify.verify_anchor`
(it needs a JSON-RPC node).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.errors import ValidationError
from gateway.evidence.bundle import EvidenceBundle
from gateway.evidence.checkpoint import Checkpoint
from gateway.evidence.errors import CheckpointError
from gateway.evidence.keys import KeyRing
from gateway.evidence.notes import NoteVerifier
from gateway.ledger.hashing import leaf_hash
from gateway.ledger.merkle import verify_inclusion

__all__ = ["Verification", "verify"]

_SELF_SIGNED = (
    "checkpoint key taken from the bundle itself; pass the operator's verifier key "
    "(or check the chain anchor) to make the signature meaningful"
)


@dataclass(slots=True)
class Verification:
    """What :func:`verify` established, step by step, and any warnings. Mutable: a chain
    check (``dsgw verify --rpc``) appends its own steps and warnings."""

    record: dict[str, Any] = field(default_factory=dict)
    checkpoint: Checkpoint | None = None
    steps: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def verify(bundle: EvidenceBundle, keys: KeyRing | None = None) -> Verification:
    """Verify ``bundle`` offline.

    ``keys`` are the verifier keys the caller already trusts (the operator's current and
    retired ones); the one whose key id the checkpoint's signature names is used. Without
    them the bundle's own key is used and a warning says so (anyone can sign their own
    checkpoint: the chain anchor or a pinned key is what makes the signature meaningful).
    Raises :class:`CheckpointError` (or :class:`ValidationError` for a malformed key)
    naming the failing step.
    """
    check = Verification()
    leaf = leaf_hash(bundle.algorithm, bundle.salt, bundle.record.encode("utf-8"))
    if leaf != bundle.leaf_hash:
        raise CheckpointError("bundle: the record does not hash to the bundle's leaf hash")
    check.record = bundle.record_json
    check.steps.append(f"record hashes to leaf {leaf.hex()}")

    own = NoteVerifier.from_text(bundle.verifier_key) if bundle.verifier_key is not None else None
    if keys is None:
        if own is None:
            raise ValidationError("bundle: no verifier key in the bundle and none trusted")
        keys = KeyRing([own])
        check.warnings.append(_SELF_SIGNED)
        trusted = False
    else:
        trusted = True
    head, signer = keys.verify(bundle.note)
    if trusted and own is not None and own.to_text() != signer.to_text():
        check.warnings.append(
            "the bundle names another verifier key than the trusted one that signed it"
        )
    if head.algorithm != bundle.algorithm:
        raise CheckpointError("bundle: the checkpoint's hash algorithm differs from the record's")
    check.checkpoint = head
    check.steps.append(
        f"checkpoint {head.origin} size {head.size} signed by {signer.name} "
        f"key {signer.key_id.hex()}"
    )
    if head.stream != bundle.stream:
        raise CheckpointError("bundle: the checkpoint is for another stream")

    proof = bundle.inclusion_proof
    if proof.leaf_index != bundle.seq or proof.tree_size != head.size:
        raise CheckpointError("bundle: the proof is for another record or tree size")
    if not verify_inclusion(bundle.algorithm, leaf, proof, head.root):
        raise CheckpointError("bundle: the inclusion proof does not lead to the signed root")
    check.steps.append(f"record {head.stream}/{proof.leaf_index} is in that tree")

    if bundle.anchor is None:
        check.warnings.append("the checkpoint is not anchored on chain (yet)")
    else:
        bundle.anchor.check(head)
        check.steps.append(
            f"anchor names this checkpoint (size {head.size}, its root) in transaction "
            f"{bundle.anchor.tx_hash}"
        )
    return check
