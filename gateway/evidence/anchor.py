"""The anchor model: where on chain the registry accepted a checkpoint's (size, root).

A bundle's ``anchor`` member. :meth:`Anchor.check` compares it with the signed checkpoint
offline; :func:`gateway.chain.verify.verify_anchor` asks a JSON-RPC node whether the chain
holds it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import ValidationError
from gateway.evidence.checkpoint import Checkpoint
from gateway.evidence.errors import CheckpointError

__all__ = ["ANCHOR_MEMBERS", "Anchor", "registry_stream_id"]

ANCHOR_MEMBERS = frozenset(
    {"chain_id", "contract", "stream_id", "size", "root", "tx_hash", "block_number"}
)
"""The members of a bundle's ``anchor``: each compared with the checkpoint by
:meth:`Anchor.check` and with the chain by :func:`gateway.chain.verify.verify_anchor`."""
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_TX_HASH = re.compile(r"0x[0-9a-f]{64}")


def registry_stream_id(stream: str) -> str:
    """The anchor registry's id of ``stream`` (keccak-256 of its name), 0x-prefixed hex."""
    from eth_utils.crypto import keccak  # loaded when an anchor is read, not with the models

    return "0x" + keccak(text=stream).hex()


@dataclass(frozen=True, slots=True)
class Anchor:
    """One anchoring transaction, as the bundle states it (hex strings as on the wire)."""

    chain_id: int
    contract: str
    stream_id: str
    size: int
    root: str
    tx_hash: str
    block_number: int

    @classmethod
    def from_json(cls, document: object) -> Anchor:
        """Parse a bundle's anchor; every member is required and no other is allowed.
        Raises :class:`ValidationError` naming the bad member."""
        if not isinstance(document, Mapping):
            raise ValidationError("bundle: anchor must be an object or null")
        extra = sorted(set(document) - ANCHOR_MEMBERS)
        if extra:
            raise ValidationError(
                f"bundle: anchor has members no verifier checks: {', '.join(extra)}"
            )
        missing = sorted(ANCHOR_MEMBERS - set(document))
        if missing:
            raise ValidationError(f"bundle: anchor lacks {', '.join(missing)}")
        for name in ("chain_id", "size", "block_number"):
            value = document[name]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValidationError(f"bundle: anchor.{name} must be a non-negative integer")
        contract, tx_hash = document["contract"], document["tx_hash"]
        if not isinstance(contract, str) or not _ADDRESS.fullmatch(contract):
            raise ValidationError("bundle: anchor.contract must be a 0x-prefixed 20-byte address")
        if not isinstance(tx_hash, str) or not _TX_HASH.fullmatch(tx_hash):
            raise ValidationError("bundle: anchor.tx_hash must be 0x and 64 lowercase hex digits")
        for name in ("stream_id", "root"):
            if not isinstance(document[name], str):
                raise ValidationError(f"bundle: anchor.{name} must be a string")
        return cls(
            chain_id=document["chain_id"],
            contract=contract,
            stream_id=document["stream_id"],
            size=document["size"],
            root=document["root"],
            tx_hash=tx_hash,
            block_number=document["block_number"],
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "contract": self.contract,
            "stream_id": self.stream_id,
            "size": self.size,
            "root": self.root,
            "tx_hash": self.tx_hash,
            "block_number": self.block_number,
        }

    def check(self, head: Checkpoint) -> None:
        """The anchor names ``head``: its stream, size and root (the chain checks the rest).
        Raises :class:`CheckpointError` naming the member that differs."""
        if self.stream_id != registry_stream_id(head.stream):
            raise CheckpointError(
                f"bundle: anchor.stream_id is not the registry id of stream {head.stream}"
            )
        if self.size != head.size:
            raise CheckpointError(
                f"bundle: anchor.size {self.size} is not the checkpoint's size {head.size}"
            )
        if self.root != head.root.hex():
            raise CheckpointError("bundle: anchor.root is not the signed checkpoint's root")
