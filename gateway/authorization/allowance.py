"""The quota store a process uses: in-process, or shared through Redis when ``redis_url``
is set, both seeded from the call log (a restart does not reset a day's count)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.authorization.quotas import CallAllowance, QuotaTracker
from gateway.db.schema import LogEntryRow
from gateway.dependencies import DependencyHealth
from gateway.settings import Settings

if TYPE_CHECKING:
    from gateway.authorization.shared_quotas import RedisQuotaTracker

__all__ = ["call_allowance"]


def call_allowance(
    settings: Settings, engine: AsyncEngine, health: DependencyHealth
) -> tuple[CallAllowance, RedisQuotaTracker | None]:
    """The allowance the data plane consumes, and the Redis tracker to close (if any)."""

    async def count_calls(
        merchant_id: str, scenario_id: str, start: dt.datetime, end: dt.datetime
    ) -> int:
        async with engine.connect() as conn:
            value = await conn.scalar(
                select(func.count())
                .select_from(LogEntryRow)
                .where(
                    LogEntryRow.stream == "calls",
                    LogEntryRow.kind == "data",
                    LogEntryRow.merchant_id == merchant_id,
                    LogEntryRow.scenario_id == scenario_id,
                    LogEntryRow.decision == "allow",
                    LogEntryRow.recorded_at >= start,
                    LogEntryRow.recorded_at < end,
                )
            )
        return int(value or 0)

    quotas: CallAllowance = QuotaTracker(count_calls, zone=settings.zone)
    shared_quotas = None
    if settings.cluster.redis_url:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError

        from gateway.authorization.shared_quotas import RedisQuotaTracker  # Redis set only

        shared_quotas = RedisQuotaTracker(
            Redis.from_url(
                settings.cluster.redis_url,
                socket_timeout=2,
                socket_connect_timeout=2,
                # Once, on a fresh connection, after a connection error: a pooled
                # connection to a Redis that restarted fails its first command, which
                # must not refuse a call (nor log an outage) once Redis is back. Never
                # after a timeout: the command may have run.
                retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            ),
            count_calls,
            prefix=f"dsgw:{settings.deployment}:",
            health=health,
            zone=settings.zone,
        )
        quotas = shared_quotas
    return quotas, shared_quotas
