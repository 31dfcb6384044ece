"""What every report states about itself: the deployment, the period, when and by whom it
was made, and the log heads it was made against.

The heads make a report checkable: each is a signed checkpoint (tree size and root) that a
reader can later tie to the log with a consistency proof (``dsgw proof consistency``), so
the figures cannot be quietly recomputed over a rewritten log.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.clock import utc
from gateway.db.schema import CheckpointRow, LogEntryRow, MerchantRow, ScenarioRow
from gateway.ledger.checkpoints import Checkpointer
from gateway.ledger.log import STREAMS
from gateway.reports.periods import Period

__all__ = ["Names", "ReportHeader", "StreamHead", "load_names", "read_heads", "sign_heads"]


@dataclass(frozen=True, slots=True)
class StreamHead:
    """One log stream when the report was made: its record count and newest signed
    checkpoint (None while the stream has none)."""

    stream: str
    records: int
    checkpoint_size: int | None
    checkpoint_root: str | None
    checkpoint_at: dt.datetime | None
    algorithm: str | None


@dataclass(frozen=True, slots=True)
class ReportHeader:
    deployment: str
    period: Period
    generated_at: dt.datetime
    generated_by: str
    heads: tuple[StreamHead, ...]

    @property
    def complete(self) -> bool:
        """Whether the period was over when the report was made; if not, its figures run
        up to the generation time only."""
        return self.generated_at >= self.period.end

    @property
    def as_of(self) -> dt.datetime:
        """The instant "at the end of the period" means: its end, or now if still running."""
        return min(self.generated_at, self.period.end)


@dataclass(frozen=True, slots=True)
class Names:
    """Display names of merchants and scenarios, by id."""

    merchants: dict[str, str]
    scenarios: dict[str, str]

    def merchant(self, merchant_id: str | None) -> str:
        if merchant_id is None:
            return "-"
        return self.merchants.get(merchant_id, "")

    def scenario(self, scenario_id: str | None) -> str:
        if scenario_id is None:
            return "-"
        return self.scenarios.get(scenario_id, "")


async def sign_heads(checkpointer: Checkpointer) -> None:
    """Sign a checkpoint of every stream that grew, so the report's heads cover every
    record written before it (another gateway process may sign the same size first)."""
    for stream in STREAMS:
        await checkpointer.checkpoint(stream)


async def read_heads(engine: AsyncEngine) -> tuple[StreamHead, ...]:
    heads = []
    async with engine.connect() as conn:
        for stream in STREAMS:
            records = await conn.scalar(
                select(func.count()).select_from(LogEntryRow).where(LogEntryRow.stream == stream)
            )
            newest = (
                await conn.execute(
                    select(
                        CheckpointRow.size,
                        CheckpointRow.root,
                        CheckpointRow.created_at,
                        CheckpointRow.algorithm,
                    )
                    .where(CheckpointRow.stream == stream)
                    .order_by(CheckpointRow.size.desc())
                    .limit(1)
                )
            ).first()
            heads.append(
                StreamHead(
                    stream=stream,
                    records=int(records or 0),
                    checkpoint_size=int(newest.size) if newest else None,
                    checkpoint_root=bytes(newest.root).hex() if newest else None,
                    checkpoint_at=utc(newest.created_at) if newest else None,
                    algorithm=str(newest.algorithm) if newest else None,
                )
            )
    return tuple(heads)


async def load_names(engine: AsyncEngine) -> Names:
    async with engine.connect() as conn:
        merchants = {
            str(row.id): str(row.name)
            for row in await conn.execute(select(MerchantRow.id, MerchantRow.name))
        }
        scenarios = {
            str(row.id): str(row.name)
            for row in await conn.execute(select(ScenarioRow.id, ScenarioRow.name))
        }
    return Names(merchants, scenarios)
