"""The evidence bundle model: one self-contained JSON document proving a record was logged.

A bundle holds the record's canonical bytes and salt, its RFC 9162 inclusion proof, the
signed checkpoint the proof leads to (with the verifier key of the key that signed it,
which after a key rotation is a retired key for older records), and, once anchoring runs,
the anchor transaction of that checkpoint.

:meth:`EvidenceBundle.from_json` parses strictly: a member this module does not know is
an error, not something a reader might trust unchecked, and a missing or mistyped member is
a :class:`ValidationError` naming it. :meth:`EvidenceBundle.to_json` writes exactly the
format handed out since ``dsgw-evidence-bundle/1``, so bundles already given out still parse.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import ValidationError
from gateway.evidence.anchor import Anchor
from gateway.ledger.hashing import HashAlgorithm
from gateway.ledger.merkle import InclusionProof

__all__ = ["BUNDLE_FORMAT", "EvidenceBundle"]

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
_PROOF_MEMBERS = frozenset({"leaf_index", "tree_size", "path"})


def _unknown(document: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    extra = sorted(set(document) - allowed)
    if extra:
        raise ValidationError(f"bundle: {where} has members no verifier checks: {', '.join(extra)}")


_KINDS = {str: "a str", int: "an integer", dict: "a dict"}


def _member(document: Mapping[str, Any], name: str, kind: type) -> Any:
    value = document.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValidationError(f"bundle: member {name} is missing or not {_KINDS[kind]}")
    return value


def _hex(document: Mapping[str, Any], name: str) -> bytes:
    try:
        return bytes.fromhex(_member(document, name, str))
    except ValueError as exc:
        raise ValidationError("bundle: salt and leaf_hash must be hex") from exc


@dataclass(frozen=True, slots=True)
class EvidenceBundle:
    """Record ``stream/seq`` with the proof, checkpoint and anchor that make it evidence.

    ``record`` is the record's canonical JSON text (the hashed bytes, kept verbatim);
    ``note`` the signed checkpoint note; ``verifier_key`` the key string the bundle itself
    names (only a hint: a verifier trusts its own keys).
    """

    stream: str
    seq: int
    algorithm: HashAlgorithm
    record: str
    salt: bytes
    leaf_hash: bytes
    inclusion_proof: InclusionProof
    note: str
    verifier_key: str | None
    anchor: Anchor | None = None

    @property
    def record_json(self) -> dict[str, Any]:
        """The record, parsed (checked to be a JSON object by :meth:`from_json`)."""
        value: dict[str, Any] = json.loads(self.record)
        return value

    @classmethod
    def from_json(cls, document: object) -> EvidenceBundle:
        """Parse a bundle document. Raises :class:`ValidationError` naming the bad member
        (never a ``KeyError``); nothing is verified yet (see :func:`gateway.evidence.verify`)."""
        if not isinstance(document, Mapping):
            raise ValidationError("bundle: the document is not a JSON object")
        if document.get("format") != BUNDLE_FORMAT:
            raise ValidationError(f"bundle: format must be {BUNDLE_FORMAT}")
        _unknown(document, _MEMBERS, "the bundle")
        algorithm = document.get("algorithm")
        if algorithm not in ("sha256", "sm3"):
            raise ValidationError("bundle: algorithm must be sha256 or sm3")
        record = _member(document, "record", str)
        salt, leaf = _hex(document, "salt"), _hex(document, "leaf_hash")
        try:
            parsed = json.loads(record)
        except json.JSONDecodeError as exc:
            raise ValidationError("bundle: record is not JSON") from exc
        if not isinstance(parsed, dict):
            raise ValidationError("bundle: record is not a JSON object")
        checkpoint = _member(document, "checkpoint", dict)
        _unknown(checkpoint, _CHECKPOINT_MEMBERS, "checkpoint")
        note = _member(checkpoint, "note", str)
        own = checkpoint.get("verifier_key")
        if own is not None and not isinstance(own, str):
            raise ValidationError("bundle: checkpoint.verifier_key must be a string")
        proof = _member(document, "inclusion_proof", dict)
        _unknown(proof, _PROOF_MEMBERS, "inclusion_proof")
        anchor = document.get("anchor")
        return cls(
            stream=_member(document, "stream", str),
            seq=_member(document, "seq", int),
            algorithm="sm3" if algorithm == "sm3" else "sha256",
            record=record,
            salt=salt,
            leaf_hash=leaf,
            inclusion_proof=InclusionProof.from_dict(proof),
            note=note,
            verifier_key=own,
            anchor=None if anchor is None else Anchor.from_json(anchor),
        )

    def to_json(self) -> dict[str, Any]:
        """The bundle document, members in the order bundles have always had."""
        checkpoint: dict[str, Any] = {"note": self.note}
        if self.verifier_key is not None:
            checkpoint["verifier_key"] = self.verifier_key
        return {
            "format": BUNDLE_FORMAT,
            "stream": self.stream,
            "seq": self.seq,
            "algorithm": self.algorithm,
            "record": self.record,
            "salt": self.salt.hex(),
            "leaf_hash": self.leaf_hash.hex(),
            "inclusion_proof": self.inclusion_proof.to_dict(),
            "checkpoint": checkpoint,
            "anchor": None if self.anchor is None else self.anchor.to_json(),
        }
