"""Anchoring health for the security report: per stream, the anchors of the quarter, how long
records waited for a final anchor, and the backlog when the report was made.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.chain.status import anchoring_status
from gateway.clock import utc
from gateway.db.schema import AnchorRow, AnchorTransactionRow, CheckpointRow, LogEntryRow
from gateway.reports.periods import Period
from gateway.reports.queries import in_period

__all__ = ["AnchoringSection", "StreamAnchoringHealth", "gather_anchoring"]


@dataclass(frozen=True, slots=True)
class StreamAnchoringHealth:
    stream: str
    checkpoints: int
    """Checkpoints signed in the quarter."""
    anchors: tuple[tuple[str, int], ...]
    """Anchors made in the quarter by their current status."""
    final_in_quarter: int
    """Anchors that became final in the quarter."""
    final_size_at_end: int
    requeues: int
    max_lag: dt.timedelta | None
    """Largest time from a record to the final anchor that first covered it, over the
    anchors that became final in the quarter."""
    max_lag_record: str | None
    unanchored_checkpoints: int
    unanchored_records: int
    oldest_unanchored_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class AnchoringSection:
    backend: str
    chain_id: int | None
    contract: str | None
    streams: tuple[StreamAnchoringHealth, ...]
    transactions: tuple[tuple[str, int], ...]
    """Anchor transactions signed in the quarter by status."""
    resent_anchors: int
    """Anchors of the quarter that needed more than one transaction (fee bump, re-send)."""

    @property
    def enabled(self) -> bool:
        return self.backend != "none"

    @property
    def backlog(self) -> int:
        return sum(s.unanchored_checkpoints for s in self.streams)

    @property
    def final_anchors(self) -> int:
        return sum(s.final_in_quarter for s in self.streams)

    @property
    def max_lag(self) -> dt.timedelta | None:
        lags = [s.max_lag for s in self.streams if s.max_lag is not None]
        return max(lags) if lags else None


async def gather_anchoring(engine: AsyncEngine, period: Period, backend: str) -> AnchoringSection:
    status = await anchoring_status(engine)
    chain_id, contract = status.chain_id, status.contract
    registry = (AnchorRow.chain_id == chain_id, AnchorRow.contract == contract)
    streams = []
    async with engine.connect() as conn:
        for current in status.streams:
            stream = current.stream
            checkpoints = await conn.scalar(
                select(func.count())
                .select_from(CheckpointRow)
                .where(CheckpointRow.stream == stream, in_period(CheckpointRow.created_at, period))
            )
            anchors = sorted(
                (str(s), int(n))
                for s, n in await conn.execute(
                    select(AnchorRow.status, func.count())
                    .where(
                        *registry,
                        AnchorRow.stream == stream,
                        in_period(AnchorRow.created_at, period),
                    )
                    .group_by(AnchorRow.status)
                )
            )
            requeues = await conn.scalar(
                select(func.coalesce(func.sum(AnchorRow.requeues), 0)).where(
                    *registry, AnchorRow.stream == stream, in_period(AnchorRow.created_at, period)
                )
            )
            finals = (
                await conn.execute(
                    select(AnchorRow.size, AnchorRow.final_at)
                    .where(
                        *registry,
                        AnchorRow.stream == stream,
                        AnchorRow.status == "final",
                        in_period(AnchorRow.final_at, period),
                    )
                    .order_by(AnchorRow.size)
                )
            ).all()
            max_lag: dt.timedelta | None = None
            lag_record: str | None = None
            final_at_end = 0
            if finals:
                before = await conn.scalar(
                    select(func.max(AnchorRow.size)).where(
                        *registry,
                        AnchorRow.stream == stream,
                        AnchorRow.status == "final",
                        AnchorRow.size < finals[0].size,
                    )
                )
                previous = int(before or 0)
                firsts: list[tuple[int, dt.datetime]] = []
                for size, final_at in finals:
                    if int(size) > previous and final_at is not None:
                        firsts.append((previous, utc(final_at)))
                        previous = int(size)
                final_at_end = previous
                recorded = await _recorded_at(conn, stream, [seq for seq, _ in firsts])
                for seq, final_at in firsts:
                    if seq in recorded:
                        lag = final_at - recorded[seq]
                        if max_lag is None or lag > max_lag:
                            max_lag, lag_record = lag, f"{stream}/{seq}"
            else:
                final_at_end = int(
                    await conn.scalar(
                        select(func.coalesce(func.max(AnchorRow.size), 0)).where(
                            *registry,
                            AnchorRow.stream == stream,
                            AnchorRow.status == "final",
                            AnchorRow.final_at < period.end,
                        )
                    )
                    or 0
                )
            streams.append(
                StreamAnchoringHealth(
                    stream=stream,
                    checkpoints=int(checkpoints or 0),
                    anchors=tuple(anchors),
                    final_in_quarter=len(finals),
                    final_size_at_end=final_at_end,
                    requeues=int(requeues or 0),
                    max_lag=max_lag,
                    max_lag_record=lag_record,
                    unanchored_checkpoints=current.unanchored_checkpoints,
                    unanchored_records=current.unanchored_entries,
                    oldest_unanchored_at=current.oldest_unanchored_at,
                )
            )
        tx_here = (
            AnchorTransactionRow.chain_id == chain_id,
            in_period(AnchorTransactionRow.created_at, period),
        )
        transactions = sorted(
            (str(s), int(n))
            for s, n in await conn.execute(
                select(AnchorTransactionRow.status, func.count())
                .where(*tx_here)
                .group_by(AnchorTransactionRow.status)
            )
        )
        several = (
            select(AnchorTransactionRow.anchor_id)
            .where(*tx_here)
            .group_by(AnchorTransactionRow.anchor_id)
            .having(func.count() > 1)
            .subquery()
        )
        resent = await conn.scalar(select(func.count()).select_from(several))
    return AnchoringSection(
        backend=backend,
        chain_id=chain_id,
        contract=contract,
        streams=tuple(streams),
        transactions=tuple(transactions),
        resent_anchors=int(resent or 0),
    )


async def _recorded_at(
    conn: AsyncConnection, stream: str, seqs: Sequence[int]
) -> dict[int, dt.datetime]:
    """``recorded_at`` of the records ``seqs`` of ``stream``, by primary-key lookups in
    chunks (one per anchor that became final, so cheap)."""
    out: dict[int, dt.datetime] = {}
    for start in range(0, len(seqs), 500):
        chunk = list(seqs[start : start + 500])
        rows = await conn.execute(
            select(LogEntryRow.seq, LogEntryRow.recorded_at).where(
                LogEntryRow.stream == stream, LogEntryRow.seq.in_(chunk)
            )
        )
        out.update({int(seq): utc(at) for seq, at in rows})
    return out
