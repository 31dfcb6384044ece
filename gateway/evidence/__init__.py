"""Evidence: checkpoints, anchors and bundles, their wire formats, and their verification.

The public face. Parse at the edge with ``EvidenceBundle.from_json`` (or
``Checkpoint.from_json``, ``Anchor.from_json``), then :func:`verify` with a
:class:`KeyRing` that picks each note's key by the key id the note names. Assembling a
bundle from the store is :mod:`gateway.evidence.build` (not imported here: verifying needs
no database). Checking an anchor on chain is :func:`gateway.chain.verify.verify_anchor`.
"""

from __future__ import annotations

from gateway.evidence.anchor import ANCHOR_MEMBERS, Anchor, registry_stream_id
from gateway.evidence.bundle import BUNDLE_FORMAT, EvidenceBundle
from gateway.evidence.checkpoint import Checkpoint, parse_checkpoint
from gateway.evidence.errors import CheckpointError
from gateway.evidence.keys import (
    CheckpointKeys,
    KeyRing,
    checkpoint_verifiers,
    gateway_key_ring,
    key_ring,
    published_checkpoint,
)
from gateway.evidence.notes import (
    NoteSigner,
    NoteVerifier,
    signature_key_ids,
    verifier_key,
    verify_note,
)
from gateway.evidence.verify import Verification, verify

__all__ = [
    "ANCHOR_MEMBERS",
    "BUNDLE_FORMAT",
    "Anchor",
    "Checkpoint",
    "CheckpointError",
    "CheckpointKeys",
    "EvidenceBundle",
    "KeyRing",
    "NoteSigner",
    "NoteVerifier",
    "Verification",
    "checkpoint_verifiers",
    "gateway_key_ring",
    "key_ring",
    "parse_checkpoint",
    "published_checkpoint",
    "registry_stream_id",
    "signature_key_ids",
    "verifier_key",
    "verify",
    "verify_note",
]
