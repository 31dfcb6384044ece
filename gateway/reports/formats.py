"""How the report templates show times, durations, shares and names.

Times are shown in the zone of the report's period (the deployment's ``timezone``, Beijing
time by default, the time the bureau reckons in); :func:`in_zone` sets it for the length of
one rendering, so the template filters need no zone argument.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from contextvars import ContextVar

from gateway.reports.periods import SHANGHAI

__all__ = [
    "deadline",
    "duration",
    "in_zone",
    "local_time",
    "median",
    "named",
    "share",
    "utc_time",
]

_ZONE: ContextVar[dt.tzinfo] = ContextVar("report_zone", default=SHANGHAI)
"""The zone times are shown in: the report period's."""


@contextlib.contextmanager
def in_zone(zone: dt.tzinfo) -> Iterator[None]:
    """Show times in ``zone`` until the block ends."""
    token = _ZONE.set(zone)
    try:
        yield
    finally:
        _ZONE.reset(token)


def local_time(value: dt.datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(_ZONE.get()).strftime("%Y-%m-%d %H:%M")


def deadline(value: dt.datetime) -> str:
    """A deadline: the workflows store the first instant past it, so local midnight
    reads as the end of the day before."""
    local = value.astimezone(_ZONE.get())
    if local.time() == dt.time(0):
        return f"end of {(local.date() - dt.timedelta(days=1)).isoformat()}"
    return local_time(value)


def utc_time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def duration(value: dt.timedelta | None) -> str:
    if value is None:
        return "-"
    seconds = int(value.total_seconds())
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {seconds} s"
    return f"{seconds} s"


def share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "-"


def median(value: float | None) -> str:
    return f"{value:g}" if value is not None else "-"


def named(ident: str | None, name: str) -> str:
    if ident is None:
        return "(none)"
    return f"{name} ({ident})" if name else ident
