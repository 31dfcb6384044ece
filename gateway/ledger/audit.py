"""Recomputing every stream from the database and reporting where it was tampered with.

What the audit trusts: nothing stored but the checkpoint key's public half. It re-derives
each leaf hash from the stored record and salt, re-links the hash chain, rebuilds the tree
root at every signed checkpoint's size and checks the signature. Each disagreement becomes
a :class:`Finding` with the record position it concerns:

- ``edited``: the record no longer hashes to its stored leaf hash;
- ``deleted``: a position is missing from the sequence;
- ``chain``: a record's link does not follow from its predecessor (inserted, reordered,
  or rewritten records with recomputed leaves);
- ``checkpoint``: the rebuilt tree disagrees with a signed checkpoint, so records in
  ``[previous good checkpoint, this checkpoint)`` were rewritten consistently by someone
  without the checkpoint key; or a checkpoint's signature does not verify.

- ``anchor`` (with anchored roots, from ``dsgw audit --chain``): a root the chain anchored at
  some size is not the rebuilt tree's root there, so records below that size were rewritten
  after they were anchored. For SM3 streams, which the registry anchors without consistency
  proofs, this is what shows that the anchored roots are consistent with each other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.schema import CheckpointRow, LogEntryRow
from gateway.evidence.errors import CheckpointError
from gateway.evidence.keys import CheckpointKeys, KeyRing, key_ring
from gateway.ledger.hashing import (
    GENESIS,
    HashAlgorithm,
    entry_hash,
    hash_function,
    leaf_hash,
    node_hash,
)

__all__ = ["AnchoredRoot", "AuditReport", "Finding", "audit_stream"]

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class Finding:
    stream: str
    seq: int
    kind: str
    detail: str

    def to_dict(self) -> dict[str, object]:
        return {"stream": self.stream, "seq": self.seq, "kind": self.kind, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class AnchoredRoot:
    """A root some witness (the chain) holds for the stream at ``size``; ``where`` says
    where, for the finding."""

    size: int
    root: bytes
    where: str


@dataclass(frozen=True, slots=True)
class AuditReport:
    stream: str
    records: int
    checkpoints: int
    findings: tuple[Finding, ...]
    anchors: int = 0

    @property
    def clean(self) -> bool:
        return not self.findings


class _RootBuilder:
    """Incremental RFC 9162 root: a stack of perfect subtrees (the tree's right edge), so
    the root at any size is available while streaming leaves, in O(log n) memory."""

    def __init__(self, algorithm: HashAlgorithm) -> None:
        self._algorithm: HashAlgorithm = algorithm
        self._stack: list[tuple[int, bytes]] = []  # (subtree size, hash), sizes decreasing
        self.size = 0

    def add(self, leaf: bytes) -> None:
        size, value = 1, leaf
        while self._stack and self._stack[-1][0] == size:
            left_size, left = self._stack.pop()
            value = node_hash(self._algorithm, left, value)
            size += left_size
        self._stack.append((size, value))
        self.size += 1

    def root(self) -> bytes:
        if not self._stack:
            return hash_function(self._algorithm)(b"")
        value = self._stack[-1][1]
        for _size, left in reversed(self._stack[:-1]):
            value = node_hash(self._algorithm, left, value)
        return value


async def audit_stream(
    engine: AsyncEngine,
    stream: str,
    *,
    algorithm: HashAlgorithm,
    checkpoint_key: CheckpointKeys | None,
    anchored: Sequence[AnchoredRoot] = (),
    progress: Progress | None = None,
    batch: int = 20_000,
) -> AuditReport:
    """Audit one stream; read-only. ``anchored`` roots are compared with the rebuilt tree
    at their sizes like checkpoints. Raises :class:`DsgwError` only if the store is
    unreachable — every inconsistency is a finding, never an exception.

    ``checkpoint_key`` is the keystore's ring of checkpoint keys (active and retired): each
    checkpoint is verified with the key its signature line and its row name, so checkpoints
    signed before a key rotation verify as before."""
    ring = key_ring(checkpoint_key) if checkpoint_key is not None else None
    findings: list[Finding] = []

    def found(seq: int, kind: str, detail: str) -> None:
        findings.append(Finding(stream, seq, kind, detail))

    async with engine.connect() as conn:
        checkpoints = (
            await conn.execute(
                select(
                    CheckpointRow.size, CheckpointRow.root, CheckpointRow.note, CheckpointRow.key_id
                )
                .where(CheckpointRow.stream == stream)
                .order_by(CheckpointRow.size)
            )
        ).all()
    pending = list(checkpoints)
    witnessed = sorted(anchored, key=lambda a: a.size)
    good_size = 0
    good_anchor = 0
    tree = _RootBuilder(algorithm)
    previous = GENESIS
    expected = 0
    last_seq = -1
    while True:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(
                        LogEntryRow.seq,
                        LogEntryRow.payload,
                        LogEntryRow.salt,
                        LogEntryRow.leaf_hash,
                        LogEntryRow.prev_hash,
                        LogEntryRow.entry_hash,
                    )
                    .where(LogEntryRow.stream == stream, LogEntryRow.seq > last_seq)
                    .order_by(LogEntryRow.seq)
                    .limit(batch)
                )
            ).all()
        if not rows:
            break
        for row in rows:
            seq = row.seq
            while expected < seq:
                found(expected, "deleted", f"record {stream}/{expected} is missing")
                expected += 1
            stored_leaf = bytes(row.leaf_hash)
            recomputed = leaf_hash(algorithm, bytes(row.salt), row.payload.encode("utf-8"))
            if recomputed != stored_leaf:
                found(seq, "edited", f"record {stream}/{seq} does not match its leaf hash")
            if bytes(row.prev_hash) != previous:
                found(seq, "chain", f"record {stream}/{seq} does not link to its predecessor")
            if bytes(row.entry_hash) != entry_hash(algorithm, bytes(row.prev_hash), stored_leaf):
                found(seq, "chain", f"record {stream}/{seq} has a wrong entry hash")
            previous = bytes(row.entry_hash)
            tree.add(recomputed)
            expected = seq + 1
            last_seq = seq
            while pending and pending[0].size == tree.size:
                cp = pending.pop(0)
                problem = _check_checkpoint(cp, tree.root(), ring)
                if problem:
                    found(
                        good_size,
                        "checkpoint",
                        f"checkpoint at size {cp.size}: {problem}; records "
                        f"{stream}/{good_size}..{cp.size - 1} differ from what was signed",
                    )
                else:
                    good_size = cp.size
            while witnessed and witnessed[0].size == tree.size:
                anchor = witnessed.pop(0)
                if anchor.root != tree.root():
                    found(
                        good_anchor,
                        "anchor",
                        f"the root anchored at size {anchor.size} ({anchor.where}) is not the "
                        f"rebuilt tree's: records {stream}/{good_anchor}..{anchor.size - 1} "
                        "were rewritten after they were anchored",
                    )
                else:
                    good_anchor = anchor.size
        if progress is not None:
            progress(len(rows))
    for cp in pending:
        found(
            tree.size,
            "deleted",
            f"checkpoint at size {cp.size} but the stream has only {tree.size} records",
        )
    for anchor in witnessed:
        found(
            tree.size,
            "deleted",
            f"the chain anchored size {anchor.size} ({anchor.where}) but the stream has only "
            f"{tree.size} records",
        )
    return AuditReport(stream, tree.size, len(checkpoints), tuple(findings), len(anchored))


def _check_checkpoint(cp: Any, root: bytes, ring: KeyRing | None) -> str | None:
    if bytes(cp.root) != root:
        return "the rebuilt tree root differs from the signed root"
    if ring is not None:
        try:
            parsed, signer = ring.verify(cp.note)
        except CheckpointError as exc:
            return str(exc)
        if parsed.size != cp.size or parsed.root != root:
            return "the signed note names another size or root than its row"
        if cp.key_id != signer.key_id.hex():
            return (
                f"the row names key id {cp.key_id}, but key {signer.key_id.hex()} signed the note"
            )
    return None
