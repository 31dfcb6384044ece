"""The anchoring backlog, read from the database alone: for ``dsgw status`` and metrics,
also while the chain is down and no worker runs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.clock import utc
from gateway.db.schema import AnchorRegistryRow, AnchorRow, CheckpointRow
from gateway.errors import DsgwError
from gateway.ledger.log import STREAMS

__all__ = ["AnchoringStatus", "StreamAnchoring", "anchoring_status"]


@dataclass(frozen=True, slots=True)
class StreamAnchoring:
    """One stream: its newest checkpoint, its newest final anchor, and what lies between.

    ``unanchored_checkpoints`` counts the checkpoints newer than the newest final anchor (the
    backlog); ``unanchored_entries`` the log entries they add; ``oldest_unanchored_at`` is
    when the oldest of them was made (the anchoring lag).
    """

    stream: str
    checkpoint_size: int | None
    checkpoint_algorithm: str | None
    final_size: int | None
    final_block: int | None
    in_flight: tuple[tuple[int, str], ...]
    unanchored_checkpoints: int
    unanchored_entries: int
    oldest_unanchored_at: dt.datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "checkpoint_size": self.checkpoint_size,
            "checkpoint_algorithm": self.checkpoint_algorithm,
            "final_size": self.final_size,
            "final_block": self.final_block,
            "in_flight": [{"size": size, "status": status} for size, status in self.in_flight],
            "unanchored_checkpoints": self.unanchored_checkpoints,
            "unanchored_entries": self.unanchored_entries,
            "oldest_unanchored_at": (
                self.oldest_unanchored_at.isoformat() if self.oldest_unanchored_at else None
            ),
        }


@dataclass(frozen=True, slots=True)
class AnchoringStatus:
    """The backlog of one registry (``chain_id``, ``contract``); both None if no registry
    was ever used, in which case every checkpoint is unanchored."""

    chain_id: int | None
    contract: str | None
    streams: tuple[StreamAnchoring, ...]
    anchors: Mapping[str, int]
    """Number of anchors per status."""

    @property
    def backlog(self) -> int:
        """Checkpoints not yet covered by a final anchor, over all streams."""
        return sum(s.unanchored_checkpoints for s in self.streams)

    def to_dict(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "contract": self.contract,
            "backlog": self.backlog,
            "anchors": dict(self.anchors),
            "streams": [s.to_dict() for s in self.streams],
        }


async def anchoring_status(
    engine: AsyncEngine,
    *,
    chain_id: int | None = None,
    contract: str | None = None,
    streams: Sequence[str] = STREAMS,
) -> AnchoringStatus:
    """The backlog of the registry (``chain_id``, ``contract``), by default the registry
    used most recently. Reads the database only.

    Raises :class:`DsgwError` if the store cannot be read.
    """
    try:
        async with engine.connect() as conn:
            if chain_id is None or contract is None:
                recent = (
                    await conn.execute(
                        select(AnchorRegistryRow.chain_id, AnchorRegistryRow.address)
                        .order_by(AnchorRegistryRow.updated_at.desc())
                        .limit(1)
                    )
                ).first()
                if recent is not None:
                    chain_id, contract = int(recent[0]), str(recent[1])
            here = (AnchorRow.chain_id == chain_id, AnchorRow.contract == contract)
            counts = {
                str(status): int(n)
                for status, n in await conn.execute(
                    select(AnchorRow.status, func.count()).where(*here).group_by(AnchorRow.status)
                )
            }
            result = []
            for stream in streams:
                newest = (
                    await conn.execute(
                        select(CheckpointRow.size, CheckpointRow.algorithm)
                        .where(CheckpointRow.stream == stream)
                        .order_by(CheckpointRow.size.desc())
                        .limit(1)
                    )
                ).first()
                final = (
                    await conn.execute(
                        select(AnchorRow.size, AnchorRow.block_number)
                        .where(*here, AnchorRow.stream == stream, AnchorRow.status == "final")
                        .order_by(AnchorRow.size.desc())
                        .limit(1)
                    )
                ).first()
                final_size = int(final[0]) if final is not None else 0
                behind = (
                    await conn.execute(
                        select(func.count(), func.min(CheckpointRow.created_at)).where(
                            CheckpointRow.stream == stream, CheckpointRow.size > final_size
                        )
                    )
                ).one()
                in_flight = await conn.execute(
                    select(AnchorRow.size, AnchorRow.status)
                    .where(
                        *here,
                        AnchorRow.stream == stream,
                        AnchorRow.status.in_(("queued", "pending", "mined")),
                    )
                    .order_by(AnchorRow.size)
                )
                checkpoint_size = int(newest[0]) if newest is not None else None
                result.append(
                    StreamAnchoring(
                        stream=stream,
                        checkpoint_size=checkpoint_size,
                        checkpoint_algorithm=str(newest[1]) if newest is not None else None,
                        final_size=int(final[0]) if final is not None else None,
                        final_block=(
                            int(final[1]) if final is not None and final[1] is not None else None
                        ),
                        in_flight=tuple((int(size), str(status)) for size, status in in_flight),
                        unanchored_checkpoints=int(behind[0]),
                        unanchored_entries=max(0, (checkpoint_size or 0) - final_size),
                        oldest_unanchored_at=utc(behind[1]) if behind[1] is not None else None,
                    )
                )
    except SQLAlchemyError as exc:
        raise DsgwError(f"anchoring: reading the anchoring status failed: {exc}") from exc
    return AnchoringStatus(
        chain_id=chain_id,
        contract=contract,
        streams=tuple(result),
        anchors=MappingProxyType(counts),
    )
