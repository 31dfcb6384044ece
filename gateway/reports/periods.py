"""Reporting periods: calendar periods in China Standard Time, queried as UTC instants.

Why a module of its own: the bureau reckons a quarter in Beijing time, the store keeps UTC.
A call at 2026-09-30T17:00Z is 1 October 01:00 in Beijing and so belongs to Q4; every report
query therefore runs on ``[start, end)`` bounds converted from Beijing midnights, never on
UTC dates.

Accepted forms: ``2026Q3`` (also ``2026-Q3``, lower case ``q``), ``2026-07``, ``2026`` and
``2026-07-01..2026-09-30`` (both days included). The security report takes quarters only.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, replace
from typing import Literal

from gateway.clock import utc
from gateway.errors import ValidationError
from gateway.workdays.calendar import SHANGHAI

__all__ = ["MAX_DAYS", "SHANGHAI", "Period", "parse_period", "parse_quarter"]

MAX_DAYS = 5 * 366
"""Longest period a report covers: five years, so one request cannot ask for a century."""

_FIRST_YEAR = 2000
_LAST_YEAR = 2099
_QUARTER = re.compile(r"^(\d{4})-?[Qq]([1-4])$")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_YEAR = re.compile(r"^(\d{4})$")
_RANGE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})$")
_DAY_CHART_LIMIT = 93
"""Up to a quarter, charts count per day; longer periods count per month."""

_EXAMPLES = "2026Q3, 2026-07, 2026 or 2026-07-01..2026-09-30"


@dataclass(frozen=True, slots=True)
class Period:
    """Calendar days ``first_day`` to ``last_day``, both included, in ``zone`` (the
    deployment's ``timezone`` setting; Beijing by default)."""

    label: str
    first_day: dt.date
    last_day: dt.date
    zone: dt.tzinfo = SHANGHAI

    @property
    def start(self) -> dt.datetime:
        """The first instant of the period, aware UTC (Beijing midnight of ``first_day``)."""
        return _midnight(self.first_day, self.zone)

    @property
    def end(self) -> dt.datetime:
        """The first instant after the period, aware UTC: queries use ``[start, end)``."""
        return _midnight(self.last_day + dt.timedelta(days=1), self.zone)

    @property
    def days(self) -> int:
        return (self.last_day - self.first_day).days + 1

    @property
    def granularity(self) -> Literal["day", "month"]:
        return "day" if self.days <= _DAY_CHART_LIMIT else "month"

    def contains(self, instant: dt.datetime) -> bool:
        return self.start <= utc(instant) < self.end

    def buckets(self) -> list[tuple[str, dt.datetime, dt.datetime]]:
        """Chart buckets (label, start, end) covering the period: Beijing days, or
        calendar months clipped to the period."""
        out: list[tuple[str, dt.datetime, dt.datetime]] = []
        if self.granularity == "day":
            day = self.first_day
            while day <= self.last_day:
                out.append(
                    (
                        day.isoformat(),
                        _midnight(day, self.zone),
                        _midnight(day + _ONE_DAY, self.zone),
                    )
                )
                day += _ONE_DAY
            return out
        month = self.first_day.replace(day=1)
        while month <= self.last_day:
            following = _next_month(month)
            first = max(month, self.first_day)
            last = min(following - _ONE_DAY, self.last_day)
            out.append(
                (
                    month.strftime("%Y-%m"),
                    _midnight(first, self.zone),
                    _midnight(last + _ONE_DAY, self.zone),
                )
            )
            month = following
        return out

    def whole_months(self) -> list[str]:
        """The calendar months (``YYYY-MM``) lying wholly inside the period: settlement
        periods are months, so only those have a revenue statement for the period."""
        out = []
        month = self.first_day.replace(day=1)
        while month <= self.last_day:
            following = _next_month(month)
            if month >= self.first_day and following - _ONE_DAY <= self.last_day:
                out.append(month.strftime("%Y-%m"))
            month = following
        return out

    def local(self, instant: dt.datetime) -> dt.datetime:
        """``instant`` in the period's zone, for display."""
        return utc(instant).astimezone(self.zone)

    def describe(self) -> str:
        where = "Beijing time (UTC+8)" if self.zone == SHANGHAI else f"{self.zone} time"
        return f"{self.label}: {self.first_day.isoformat()} to {self.last_day.isoformat()} {where}"


_ONE_DAY = dt.timedelta(days=1)


def _midnight(day: dt.date, zone: dt.tzinfo) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), tzinfo=zone).astimezone(dt.UTC)


def _next_month(month: dt.date) -> dt.date:
    return dt.date(month.year + month.month // 12, month.month % 12 + 1, 1)


def _year(text: str) -> int:
    year = int(text)
    if not _FIRST_YEAR <= year <= _LAST_YEAR:
        raise ValidationError(f"period: year {year} is outside {_FIRST_YEAR}-{_LAST_YEAR}")
    return year


def _quarter(year: int, quarter: int) -> Period:
    first = dt.date(year, 3 * quarter - 2, 1)
    last = _next_month(dt.date(year, 3 * quarter, 1)) - _ONE_DAY
    return Period(f"{year}Q{quarter}", first, last)


def parse_quarter(text: str, zone: dt.tzinfo = SHANGHAI) -> Period:
    """A calendar quarter, ``2026Q3``, of days in ``zone``. Raises
    :class:`ValidationError` otherwise."""
    return replace(_parse_quarter(text), zone=zone)


def _parse_quarter(text: str) -> Period:
    value = text.strip()
    match = _QUARTER.match(value)
    if match is None:
        raise ValidationError(f"quarter {text!r} is not of the form 2026Q3 (year, Q, 1-4)")
    return _quarter(_year(match[1]), int(match[2]))


def parse_period(text: str, zone: dt.tzinfo = SHANGHAI) -> Period:
    """A quarter, a month, a year or an inclusive range of days (see the module doc), of
    days in ``zone``. Raises :class:`ValidationError` with the accepted forms."""
    return replace(_parse_period(text), zone=zone)


def _parse_period(text: str) -> Period:
    value = text.strip()
    if (match := _QUARTER.match(value)) is not None:
        return _quarter(_year(match[1]), int(match[2]))
    if (match := _MONTH.match(value)) is not None:
        year, month = _year(match[1]), int(match[2])
        if not 1 <= month <= 12:
            raise ValidationError(f"period {text!r}: month {month} is not 01-12")
        first = dt.date(year, month, 1)
        return Period(value, first, _next_month(first) - _ONE_DAY)
    if (match := _YEAR.match(value)) is not None:
        year = _year(match[1])
        return Period(value, dt.date(year, 1, 1), dt.date(year, 12, 31))
    if (match := _RANGE.match(value)) is not None:
        first, last = _day(match[1]), _day(match[2])
        if last < first:
            raise ValidationError(f"period {text!r}: the last day is before the first")
        if (last - first).days + 1 > MAX_DAYS:
            raise ValidationError(f"period {text!r} is longer than {MAX_DAYS} days")
        return Period(value, first, last)
    raise ValidationError(f"period {text!r} is not one of the forms {_EXAMPLES}")


def _day(text: str) -> dt.date:
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise ValidationError(f"period: {text!r} is not a calendar date") from None
    _year(str(day.year))
    return day
