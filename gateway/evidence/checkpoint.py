"""The checkpoint model: one signed tree head of a log stream (C2SP ``tlog-checkpoint``).

::

    dsgw.local/calls            <- origin: the deployment and the stream
    12345                       <- tree size
    2vWtS...=                   <- base64 root hash
                                <- (SM3 deployments add the extension line "hash sm3")
    — dsgw.local AbCd...==      <- signature line: key name, base64(key id || Ed25519 sig)

A :class:`Checkpoint` is the parsed body; whether its signature holds is the business of
:meth:`gateway.evidence.keys.KeyRing.verify`, which returns one only for a note it verified.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import ValidationError
from gateway.evidence.errors import CheckpointError
from gateway.ledger.hashing import HashAlgorithm

__all__ = ["Checkpoint", "parse_checkpoint"]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A tree head (size, root) of the stream its origin names, with the note it came in."""

    origin: str
    size: int
    root: bytes
    algorithm: HashAlgorithm
    note: str

    @property
    def stream(self) -> str:
        return self.origin.rsplit("/", 1)[-1]

    @staticmethod
    def body(origin: str, size: int, root: bytes, algorithm: HashAlgorithm) -> str:
        """The note text the signer signs for this tree head."""
        lines = [origin, str(size), base64.b64encode(root).decode()]
        if algorithm != "sha256":
            lines.append(f"hash {algorithm}")
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        """The checkpoint as the ledger API serves it (the API adds ``verifier_key``)."""
        return {
            "origin": self.origin,
            "stream": self.stream,
            "size": self.size,
            "root": self.root.hex(),
            "algorithm": self.algorithm,
            "note": self.note,
        }

    def to_dict(self) -> dict[str, Any]:
        """The older name of :meth:`to_json`."""
        return self.to_json()

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> Checkpoint:
        """Parse a served checkpoint (not its signature): the note is the truth, and every
        other member given must agree with it. Raises :class:`ValidationError` naming the
        member that is missing or disagrees."""
        if not isinstance(document, Mapping):
            raise ValidationError("checkpoint: the document is not a JSON object")
        note = document.get("note")
        if not isinstance(note, str):
            raise ValidationError("checkpoint: member note is missing or not a str")
        text, sep, _signatures = note.rpartition("\n\n")
        if not sep:
            raise ValidationError("checkpoint: no signature block")
        try:
            head = parse_checkpoint(text + "\n", note=note)
        except CheckpointError as exc:
            raise ValidationError(exc.detail) from exc
        for name, value in head.to_json().items():
            if name in document and document[name] != value:
                raise ValidationError(f"checkpoint: member {name} disagrees with the note")
        return head


def parse_checkpoint(text: str, *, note: str | None = None) -> Checkpoint:
    """Parse a verified note text (see :func:`gateway.evidence.notes.verify_note`) into a
    checkpoint; ``note`` is the signed note it came from (default: ``text`` itself).
    Raises :class:`CheckpointError` when the text is not a checkpoint body."""
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise CheckpointError("checkpoint: expected origin, size and root lines")
    origin, size_text, root_text, *extensions = lines[:-1]
    if not size_text.isdigit():
        raise CheckpointError(f"checkpoint: size {size_text!r} is not a decimal number")
    try:
        root = base64.b64decode(root_text, validate=True)
    except ValueError as exc:
        raise CheckpointError("checkpoint: root is not base64") from exc
    algorithm: HashAlgorithm = "sha256"
    for line in extensions:
        if line == "hash sm3":
            algorithm = "sm3"
    return Checkpoint(origin, int(size_text), root, algorithm, text if note is None else note)
