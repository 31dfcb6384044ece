"""Rate limits and daily quotas per merchant and scenario.

Rate: a token bucket holding ``rate_per_minute`` calls, refilled continuously, so a merchant
may burst up to a minute's allowance and then proceeds at the steady rate.
Daily quota: allowed calls per calendar day in the deployment's zone (setting ``timezone``;
China Standard Time, UTC+8, no DST, by default). The
counter starts from the call log on first use each day, so a restart does not reset it.

This store is exact within one process. A deployment with several gateway processes shares
the counters through Redis instead (:mod:`gateway.authorization.shared_quotas`, setting
``redis_url``).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from gateway.errors import QuotaExceededError, RateLimitedError
from gateway.governance.models import Quotas

__all__ = ["CST", "CallAllowance", "KeyedRateLimiter", "QuotaTracker", "day_bounds"]

CST = dt.timezone(dt.timedelta(hours=8), "CST")


def day_bounds(now: dt.datetime, zone: dt.tzinfo = CST) -> tuple[dt.datetime, dt.datetime]:
    """The day in ``zone`` containing ``now``, as UTC instants (a day with a daylight
    saving change is its real length, not 24 hours)."""
    day = now.astimezone(zone).date()
    start = dt.datetime.combine(day, dt.time(0), tzinfo=zone)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=zone)
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: dt.datetime


# Counts allowed data calls of (merchant, scenario) in [start, end) from the log.
CountCalls = Callable[[str, str, dt.datetime, dt.datetime], Awaitable[int]]


class CallAllowance(Protocol):
    """What the data plane needs of a quota store, in-process or shared."""

    async def consume(
        self, merchant_id: str, scenario_id: str, quotas: Quotas, now: dt.datetime
    ) -> None: ...


class QuotaTracker:
    def __init__(self, count_calls: CountCalls, *, zone: dt.tzinfo = CST) -> None:
        """``zone``: whose calendar days the daily quota counts (setting ``timezone``)."""
        self._count_calls = count_calls
        self._zone = zone
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._daily: dict[tuple[str, str], tuple[dt.datetime, int]] = {}

    async def consume(
        self, merchant_id: str, scenario_id: str, quotas: Quotas, now: dt.datetime
    ) -> None:
        """Take one call from the merchant's allowance or raise a 429 error with the number
        of seconds after which a retry can succeed."""
        key = (merchant_id, scenario_id)
        capacity = float(quotas.rate_per_minute)
        per_second = capacity / 60.0
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(capacity, now)
        elapsed = max(0.0, (now - bucket.updated).total_seconds())
        tokens = min(capacity, bucket.tokens + elapsed * per_second)
        if tokens < 1.0:
            bucket.tokens, bucket.updated = tokens, now
            retry = max(1, math.ceil((1.0 - tokens) / per_second))
            raise RateLimitedError(
                f"rate limit of {quotas.rate_per_minute} calls per minute for scenario "
                f"{scenario_id} reached; retry in {retry} s",
                retry_after=retry,
            )
        if quotas.daily_calls is not None:
            start, end = day_bounds(now, self._zone)
            day_start, used = self._daily.get(key, (None, 0))
            if day_start != start:
                used = await self._count_calls(merchant_id, scenario_id, start, end)
            if used >= quotas.daily_calls:
                self._daily[key] = (start, used)
                retry = max(1, math.ceil((end - now).total_seconds()))
                raise QuotaExceededError(
                    f"daily quota of {quotas.daily_calls} calls for scenario {scenario_id} "
                    "is used up; it resets at midnight China Standard Time",
                    retry_after=retry,
                )
            self._daily[key] = (start, used + 1)
        bucket.tokens, bucket.updated = tokens - 1.0, now


class KeyedRateLimiter:
    """A token bucket per key (e.g. a client address on an unauthenticated endpoint):
    ``per_hour`` requests, bursting up to that many. At most ``max_keys`` buckets are kept;
    the least recently used go first, so a flood of addresses cannot exhaust memory."""

    def __init__(self, per_hour: int, *, max_keys: int = 100_000) -> None:
        self._capacity = float(per_hour)
        self._per_second = per_hour / 3600.0
        self._max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}

    def consume(self, key: str, now: dt.datetime, what: str) -> None:
        bucket = self._buckets.pop(key, None) or _Bucket(self._capacity, now)
        self._buckets[key] = bucket  # most recently used last
        elapsed = max(0.0, (now - bucket.updated).total_seconds())
        tokens = min(self._capacity, bucket.tokens + elapsed * self._per_second)
        bucket.updated = now
        if tokens < 1.0:
            bucket.tokens = tokens
            retry = max(1, math.ceil((1.0 - tokens) / self._per_second))
            raise RateLimitedError(
                f"at most {int(self._capacity)} {what} per hour from one address; retry in "
                f"{retry} s",
                retry_after=retry,
            )
        bucket.tokens = tokens - 1.0
        while len(self._buckets) > self._max_keys:
            self._buckets.pop(next(iter(self._buckets)))
