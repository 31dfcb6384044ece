"""Which checkpoint key checks a note: the one whose key id the note's signature names.

The one place a checkpoint key is chosen. A verifier holds a :class:`KeyRing`: the keys
the user trusts (``dsgw verify --key``), or the gateway's own active and retired checkpoint
keys (:func:`gateway_key_ring`; checkpoint keys are never pruned). Each note names the key
that signed it, so a routine ``dsgw keys rotate checkpoint`` leaves every older checkpoint
verifiable, and a stored ``key_id`` can be compared with the key that really signed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.evidence.checkpoint import Checkpoint, parse_checkpoint
from gateway.evidence.errors import CheckpointError
from gateway.evidence.notes import NoteVerifier, signature_key_ids, verify_note
from keys.keystore import KeyInfo, KeyPurpose, Keystore

__all__ = [
    "CheckpointKeys",
    "KeyRing",
    "checkpoint_verifiers",
    "gateway_key_ring",
    "key_ring",
    "published_checkpoint",
]


class KeyRing:
    """The checkpoint keys a verifier trusts, found by the (name, key id) each note names.

    A keystore's ring holds the active key and every retired one, so checkpoints signed
    before a rotation keep verifying.
    """

    def __init__(self, verifiers: Iterable[NoteVerifier]) -> None:
        self._by_id: dict[tuple[str, bytes], NoteVerifier] = {}
        for verifier in verifiers:
            self._by_id.setdefault((verifier.name, verifier.key_id), verifier)

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> KeyRing:
        """A ring of C2SP verifier key strings (what a user passes as trusted keys).
        Raises :class:`gateway.errors.ValidationError` for a malformed one."""
        return cls(NoteVerifier.from_text(text) for text in texts)

    def __iter__(self) -> Iterator[NoteVerifier]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def signer_of(self, note: str) -> NoteVerifier:
        """The trusted key whose id a signature line of ``note`` names (not yet verified).

        Raises :class:`CheckpointError` when the note names none of the ring's keys.
        """
        named = signature_key_ids(note)
        for key in named:
            if key in self._by_id:
                return self._by_id[key]
        listed = ", ".join(f"{name} {kid.hex()}" for name, kid in named) or "no key"
        known = ", ".join(f"{v.name} {v.key_id.hex()}" for v in self) or "none"
        raise CheckpointError(f"checkpoint: signed by {listed}, none of the trusted keys ({known})")

    def verify(self, note: str) -> tuple[Checkpoint, NoteVerifier]:
        """Verify ``note`` with the key it names; the checkpoint and that key.

        Raises :class:`CheckpointError` naming the failing step.
        """
        signer = self.signer_of(note)
        return parse_checkpoint(verify_note(note, signer.name, signer.key)), signer


CheckpointKeys = KeyRing | tuple[str, Ed25519PublicKey]
"""What audits accept as the checkpoint key: a ring, or one (name, key) pair."""


def key_ring(keys: CheckpointKeys) -> KeyRing:
    """``keys`` as a ring (a single (name, key) pair makes a ring of one)."""
    if isinstance(keys, KeyRing):
        return keys
    return KeyRing([NoteVerifier(keys[0], keys[1])])


def checkpoint_verifiers(keystore: Keystore, deployment: str) -> list[tuple[KeyInfo, NoteVerifier]]:
    """Each checkpoint key of ``keystore`` (active first, then retired: never pruned) with
    its verifier key under the deployment's name, for listing them (``dsgw keys
    verifiers``)."""
    return [
        (info, NoteVerifier(deployment, keystore.public_key(info.kid)))
        for info in keystore.keys_of(KeyPurpose.CHECKPOINT)
    ]


def gateway_key_ring(keystore: Keystore, deployment: str) -> KeyRing:
    """Every checkpoint key of ``keystore``, active and retired, under the deployment's
    name: what verifies any checkpoint this deployment signed."""
    return KeyRing(verifier for _info, verifier in checkpoint_verifiers(keystore, deployment))


def published_checkpoint(checkpoint: Checkpoint, keys: KeyRing) -> dict[str, Any]:
    """The checkpoint as served, with the verifier key of the key that signed it (after a
    rotation, a retired one). Raises :class:`CheckpointError` if no key of ``keys`` did."""
    return checkpoint.to_json() | {"verifier_key": keys.signer_of(checkpoint.note).to_text()}
