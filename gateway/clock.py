"""Time as a dependency, so deadline and expiry logic is tested by moving time, not sleeping."""

from __future__ import annotations

import datetime as dt
from typing import Protocol
from zoneinfo import ZoneInfo

__all__ = [
    "DEFAULT_ZONE",
    "Clock",
    "FixedClock",
    "SystemClock",
    "local_date",
    "start_of_day",
    "utc",
]

DEFAULT_ZONE = ZoneInfo("Asia/Shanghai")
"""The default of the ``timezone`` setting: staff work in Beijing time (UTC+8, no DST)."""


def utc(value: dt.datetime) -> dt.datetime:
    """Return ``value`` as an aware UTC datetime; naive values are taken to be UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def start_of_day(day: dt.date, zone: dt.tzinfo = DEFAULT_ZONE) -> dt.datetime:
    """00:00 of ``day`` in ``zone``, as an aware UTC datetime: where a date-only period
    boundary or a day's count begins."""
    return dt.datetime.combine(day, dt.time(0), tzinfo=zone).astimezone(dt.UTC)


def local_date(value: dt.datetime, zone: dt.tzinfo = DEFAULT_ZONE) -> dt.date:
    """The calendar day an instant falls on in ``zone`` (naive means UTC)."""
    return utc(value).astimezone(zone).date()


class Clock(Protocol):
    def now(self) -> dt.datetime:
        """The current time, timezone-aware UTC."""
        ...


class SystemClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


class FixedClock:
    """A clock that only moves when told to."""

    def __init__(self, start: dt.datetime) -> None:
        self._now = utc(start)

    def now(self) -> dt.datetime:
        return self._now

    def advance(self, delta: dt.timedelta) -> None:
        self._now += delta

    def set(self, value: dt.datetime) -> None:
        self._now = utc(value)
