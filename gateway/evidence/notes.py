"""C2SP signed notes: the signature format of checkpoints, and the verifier key strings.

A note is text, a blank line, and signature lines ``— name base64(key id || signature)``.
The Ed25519 key id is the first four bytes of SHA-256(name || 0x0A || 0x01 || public key),
as C2SP signed-note prescribes; the verifier key string is ``name+hex(key id)+base64(0x01 ||
public key)``. Every note thus names the key that signed it, which is how a
:class:`gateway.evidence.keys.KeyRing` picks the key to check it with.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.errors import ValidationError
from gateway.evidence.errors import CheckpointError

__all__ = ["NoteSigner", "NoteVerifier", "signature_key_ids", "verifier_key", "verify_note"]

_DASH = "\u2014"  # the em dash that starts a signature line
_ED25519 = b"\x01"


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _key_id(name: str, public_key: Ed25519PublicKey) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + _ED25519 + _raw(public_key)).digest()[:4]


def verifier_key(name: str, public_key: Ed25519PublicKey) -> str:
    """The C2SP verifier key string a witness or client configures to check our notes."""
    return (
        f"{name}+{_key_id(name, public_key).hex()}+"
        + base64.b64encode(_ED25519 + _raw(public_key)).decode()
    )


@dataclass(frozen=True, slots=True)
class NoteSigner:
    """The gateway's checkpoint signing key under the deployment's name."""

    name: str
    key: Ed25519PrivateKey

    def __post_init__(self) -> None:
        if not self.name or any(c.isspace() or c == "+" for c in self.name):
            raise ValidationError("checkpoint key name must be non-empty without spaces or '+'")

    @property
    def key_id(self) -> bytes:
        return _key_id(self.name, self.key.public_key())

    def sign(self, text: str) -> str:
        """The signed note: ``text`` (ending in a newline), a blank line, one signature."""
        if not text.endswith("\n"):
            raise ValueError("note text must end with a newline")
        signature = self.key.sign(text.encode("utf-8"))
        encoded = base64.b64encode(self.key_id + signature).decode()
        return f"{text}\n{_DASH} {self.name} {encoded}\n"


def verify_note(note: str, name: str, public_key: Ed25519PublicKey) -> str:
    """Return the note's text if one of its signatures is ``name``'s valid signature.

    Raises :class:`CheckpointError` naming the failing step otherwise.
    """
    text, sep, signatures = note.rpartition("\n\n")
    if not sep:
        raise CheckpointError("checkpoint: no signature block")
    text += "\n"
    wanted = _key_id(name, public_key)
    for line in signatures.splitlines():
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != _DASH or parts[1] != name:
            continue
        try:
            blob = base64.b64decode(parts[2], validate=True)
        except ValueError:
            continue
        if len(blob) != 68 or blob[:4] != wanted:
            continue
        try:
            public_key.verify(blob[4:], text.encode("utf-8"))
        except InvalidSignature as exc:
            raise CheckpointError(
                f"checkpoint: signature by {name} does not verify for key {wanted.hex()}"
            ) from exc
        return text
    raise CheckpointError(f"checkpoint: no signature by {name} with key id {wanted.hex()}")


def signature_key_ids(note: str) -> list[tuple[str, bytes]]:
    """The (key name, key id) of every well-formed signature line of ``note``, in order:
    what the note says about which keys signed it (nothing is verified here)."""
    _text, sep, signatures = note.rpartition("\n\n")
    found: list[tuple[str, bytes]] = []
    for line in signatures.splitlines() if sep else ():
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != _DASH:
            continue
        try:
            blob = base64.b64decode(parts[2], validate=True)
        except ValueError:
            continue
        if len(blob) == 68:
            found.append((parts[1], blob[:4]))
    return found


@dataclass(frozen=True, slots=True)
class NoteVerifier:
    """One checkpoint verifier key: the key name (the deployment) and its Ed25519 key."""

    name: str
    key: Ed25519PublicKey

    @property
    def key_id(self) -> bytes:
        return _key_id(self.name, self.key)

    def to_text(self) -> str:
        """The C2SP verifier key string (``name+keyid+base64key``)."""
        return verifier_key(self.name, self.key)

    @classmethod
    def from_text(cls, text: str) -> NoteVerifier:
        """Parse a C2SP verifier key string; :class:`ValidationError` if it is malformed or
        its key id is not its key's."""
        try:
            name, _key_id_hex, encoded = text.split("+", 2)
            raw = base64.b64decode(encoded, validate=True)
        except ValueError as exc:
            raise ValidationError("verifier key must look like name+keyid+base64key") from exc
        if len(raw) != 33 or raw[:1] != _ED25519:
            raise ValidationError("verifier key is not an Ed25519 signed-note key")
        verifier = cls(name, Ed25519PublicKey.from_public_bytes(raw[1:]))
        if verifier.to_text() != text:
            raise ValidationError("verifier key id does not match its key")
        return verifier
