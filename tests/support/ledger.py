"""Checks of a log stream as stored, shared by the log and cluster tests."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.schema import LogEntryRow
from gateway.ledger.hashing import GENESIS, HashAlgorithm, entry_hash, leaf_hash

__all__ = ["chain_is_valid"]


async def chain_is_valid(
    engine: AsyncEngine, stream: str, algorithm: HashAlgorithm = "sha256"
) -> int:
    """Assert ``stream`` is seq 0..n-1 with no gap or double, each record's leaf and link
    hashes right; returns n."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(LogEntryRow).where(LogEntryRow.stream == stream).order_by(LogEntryRow.seq)
            )
        ).all()
    previous = GENESIS
    for expected_seq, row in enumerate(rows):
        assert row.seq == expected_seq
        leaf = leaf_hash(algorithm, bytes(row.salt), row.payload.encode())
        assert bytes(row.leaf_hash) == leaf
        assert bytes(row.prev_hash) == previous
        assert bytes(row.entry_hash) == entry_hash(algorithm, previous, leaf)
        previous = bytes(row.entry_hash)
    return len(rows)
