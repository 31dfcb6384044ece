"""Time values of governance documents: dates in the deployment zone, calendar arithmetic
for agreement periods, and when a renewal falls due."""

from __future__ import annotations

import calendar
import datetime as dt

from gateway.clock import DEFAULT_ZONE, start_of_day, utc
from gateway.errors import ValidationError

__all__ = ["RENEWAL_NOTICE_MONTHS", "add_months", "add_years", "parse_time_value", "renewal_from"]


def parse_time_value(what: str, value: object, zone: dt.tzinfo = DEFAULT_ZONE) -> dt.datetime:
    """An RFC 3339 timestamp, or a date: 00:00 of that day in ``zone`` (the deployment's
    time zone), as an aware UTC datetime.

    Periods are half-open, ``[start, end)``, so a date-only start is the first instant of
    its day and a date-only end the first instant no longer in the period: "valid_from
    2026-12-06, valid_until 2027-01-01" is every Beijing day from 6 December to 31
    December 2026 inclusive (docs/workdays.md, "Dates are days in the deployment zone").
    A timestamp keeps its own offset; naive timestamps are UTC, as everywhere in dsgw.
    """
    if isinstance(value, dt.datetime):
        return utc(value)
    if isinstance(value, dt.date):
        return start_of_day(value, zone)
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be an RFC 3339 time or a YYYY-MM-DD date")
    try:
        if len(value) == 10:
            return start_of_day(dt.date.fromisoformat(value), zone)
        return utc(dt.datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError as exc:
        raise ValidationError(f"{what}: {value!r} is not an RFC 3339 time or a date") from exc


def add_years(moment: dt.datetime, years: int) -> dt.datetime:
    """Same calendar day ``years`` later; 29 February falls back to 28 February."""
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:
        return moment.replace(year=moment.year + years, day=28)


def add_months(moment: dt.datetime, months: int) -> dt.datetime:
    """Same day ``months`` later (or earlier, for a negative count); a day the target month
    lacks falls back to its last day."""
    year, month0 = divmod(moment.year * 12 + moment.month - 1 + months, 12)
    last_day = calendar.monthrange(year, month0 + 1)[1]
    return moment.replace(year=year, month=month0 + 1, day=min(moment.day, last_day))


RENEWAL_NOTICE_MONTHS = 3
"""The operator re-applies 3 months before an agreement expires (CS23 art. 22)."""


def renewal_from(ends_at: dt.datetime) -> dt.datetime:
    """When the renewal reminder of an agreement ending at ``ends_at`` is due."""
    return add_months(ends_at, -RENEWAL_NOTICE_MONTHS)
