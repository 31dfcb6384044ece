"""Quotas and rate limits shared by every gateway process through Redis.

Why Redis and one script: several processes and machines answer the same merchant, so a
per-process bucket would let N processes grant N times the allowance. Each check is one Lua
script, run atomically by Redis in one round trip: it refills the merchant's token bucket,
and takes one token and one unit of the day's quota only if both are available.

Exactness (docs/configuration.md, "Cluster-wide limits"):

- **Daily quota: exact.** The day's counter is one Redis integer, compared and incremented
  inside the script, so no two processes can both take the last unit. When the day's counter
  does not exist yet (first call of the day, or Redis lost it) it is seeded from the call
  log, which holds every allowed call; seeding uses SET NX, so racing seeders agree.
- **Rate limit: exact up to clock skew.** The bucket's refill uses the calling process's
  clock. Processes whose clocks differ by *d* seconds can together be granted at most
  *d* × rate extra calls; with NTP (milliseconds) that is well under one call.

Fail closed: when Redis cannot be reached the call is refused with 503 ``quota-unavailable``
rather than answered without its limit.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.authorization.quotas import CST, CountCalls, day_bounds
from gateway.dependencies import DependencyHealth
from gateway.errors import QuotaExceededError, QuotaStoreUnavailableError, RateLimitedError
from gateway.governance.models import Quotas

__all__ = ["QuotaStoreUnavailableError", "RedisQuotaTracker"]


# KEYS[1] bucket hash, KEYS[2] day counter.
# ARGV: now_ms, capacity, per_ms, daily (-1: none), day_ttl_ms.
# Returns {0} allowed, {1, wait_ms} rate-limited, {2} quota used up, {3} day counter unseeded.
_SCRIPT = """
local now = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local per_ms = tonumber(ARGV[3])
local daily = tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil then tokens = capacity; ts = now end
if now > ts then tokens = math.min(capacity, tokens + (now - ts) * per_ms); ts = now end
if tokens < 1 then
  redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', ts)
  redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / per_ms) + 60000)
  return {1, math.ceil((1 - tokens) / per_ms)}
end
if daily >= 0 then
  local used = redis.call('GET', KEYS[2])
  if not used then return {3} end
  if tonumber(used) >= daily then return {2} end
  redis.call('INCR', KEYS[2])
end
redis.call('HSET', KEYS[1], 'tokens', tokens - 1, 'ts', ts)
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / per_ms) + 60000)
return {0}
"""


class RedisQuotaTracker:
    """:class:`gateway.authorization.quotas.QuotaTracker` for a cluster: same ``consume``,
    state in Redis under ``prefix``."""

    def __init__(
        self,
        redis: Redis,
        count_calls: CountCalls,
        *,
        prefix: str,
        health: DependencyHealth | None = None,
        zone: dt.tzinfo = CST,
    ) -> None:
        self._zone = zone
        self._redis = redis
        self._count_calls = count_calls
        self._prefix = prefix
        self._script = redis.register_script(_SCRIPT)
        # Redis outages are logged there once, and shown by dsgw_dependency_up{redis}.
        self._health = health or DependencyHealth()

    async def close(self) -> None:
        await self._redis.aclose()

    async def ping(self) -> None:
        """Readiness: Redis answers. Raises :class:`QuotaStoreUnavailableError` if not
        (reported to the health tracker like a failed call)."""
        try:
            await self._redis.ping()
        except RedisError as exc:
            error = QuotaStoreUnavailableError("the shared quota store does not answer")
            self._health.report(error, exc)
            raise error from exc
        self._health.recovered("redis")

    async def consume(
        self, merchant_id: str, scenario_id: str, quotas: Quotas, now: dt.datetime
    ) -> None:
        """Take one call from the merchant's allowance or raise a 429 error with the number
        of seconds after which a retry can succeed (503 when Redis is unreachable)."""
        start, end = day_bounds(now, self._zone)
        who = f"{merchant_id}|{scenario_id}"
        bucket = f"{self._prefix}rate:{who}"
        day = f"{self._prefix}day:{start.date().isoformat()}:{who}"
        now_ms = int(now.timestamp() * 1000)
        daily = -1 if quotas.daily_calls is None else quotas.daily_calls
        args: list[Any] = [
            now_ms,
            quotas.rate_per_minute,
            quotas.rate_per_minute / 60_000.0,
            daily,
            int((end - now).total_seconds() * 1000) + 3_600_000,
        ]
        try:
            result = await self._script(keys=[bucket, day], args=args)
            if int(result[0]) == 3:
                used = await self._count_calls(merchant_id, scenario_id, start, end)
                await self._redis.set(day, used, nx=True, px=args[4])
                result = await self._script(keys=[bucket, day], args=args)
        except RedisError as exc:
            error = QuotaStoreUnavailableError(
                f"the shared quota store is unreachable ({exc.__class__.__name__}); "
                "the call is refused rather than answered without its limits"
            )
            self._health.report(error, exc)
            raise error from exc
        self._health.recovered("redis")
        code = int(result[0])
        if code == 1:
            retry = max(1, math.ceil(int(result[1]) / 1000))
            raise RateLimitedError(
                f"rate limit of {quotas.rate_per_minute} calls per minute for scenario "
                f"{scenario_id} reached; retry in {retry} s",
                retry_after=retry,
            )
        if code == 2:
            retry = max(1, math.ceil((end - now).total_seconds()))
            raise QuotaExceededError(
                f"daily quota of {quotas.daily_calls} calls for scenario {scenario_id} "
                "is used up; it resets at midnight China Standard Time",
                retry_after=retry,
            )
        if code != 0:
            raise QuotaStoreUnavailableError("the shared quota store could not seed the day")
