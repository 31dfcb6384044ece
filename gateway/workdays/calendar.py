"""Working days (工作日) under the State Council's yearly holiday schedule.

Deadlines in the policy documents are counted in working days: a merchant's onboarding is
answered "within 5 working days", a department review takes 10. In China those are not simply
Monday to Friday: each year the State Council publishes which days are public holidays (放假,
often a weekday) and which weekend days are make-up working days (调休上班). Both change every
year, so they cannot be computed; they are read from one schedule file per year.

Rules this module implements (see ``docs/workdays.md``):

* A day is a working day if it is Monday to Friday and not a holiday, or a Saturday/Sunday
  that the schedule lists as a make-up working day.
* "Within N working days of D" ends at the end of the N-th working day *after* D: D itself
  never counts, whatever time of day the submission came in.
* Calendar days are days in the deployment's time zone (setting ``timezone``, default
  ``Asia/Shanghai``): an instant is placed on its date there (naive datetimes are taken to
  be UTC, as :func:`gateway.clock.utc` does).
* Deadlines are never refused. A count that walks into a year whose schedule is not loaded
  yet (the notice comes out in November) takes Monday to Friday as that year's working
  days; such a deadline is *provisional* (:meth:`WorkingCalendar.provisional_years`), shown
  as such, and recomputed once the schedule is loaded (``dsgw workdays import``).
* Questions about a single day of such a year (:meth:`WorkingCalendar.is_working_day`,
  :meth:`WorkingCalendar.working_days_between`) raise :class:`UncoveredYearError`: their
  callers (monitoring hours, reports) decide how to say that they fell back.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from gateway.clock import DEFAULT_ZONE, utc
from gateway.errors import ConfigError

__all__ = [
    "SHANGHAI",
    "CalendarError",
    "Holiday",
    "UncoveredYearError",
    "WorkingCalendar",
    "YearSchedule",
    "default_calendar",
]

SHANGHAI: ZoneInfo = DEFAULT_ZONE
"""Beijing time, the default deployment zone (setting ``timezone``)."""

_ONE_DAY = dt.timedelta(days=1)
_SATURDAY = 5  # date.weekday(): Monday is 0
# Spelled out rather than strftime("%A"), which follows the process locale.
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_DATA_PACKAGE = "gateway.workdays"
_DATA_DIR = "data"


class CalendarError(ConfigError):
    """A holiday schedule is missing, unreadable or malformed.

    It keeps :class:`ConfigError`'s problem type (``config``, 500): a missing or wrong
    schedule is the deployment's to fix, never the request's.
    """


class UncoveredYearError(CalendarError):
    """A date falls in a year for which no official schedule is loaded. The gateway cannot
    set the deadline until the operator loads it: 503, not a bug and not the request's."""

    slug = "schedule-missing"
    title = "Working-day schedule missing"
    status = 503

    def __init__(self, year: int, covered: Iterable[int]) -> None:
        covered_text = ", ".join(str(y) for y in covered) or "none"
        super().__init__(
            f"workdays: no official holiday schedule for {year} is loaded (covered years: "
            f"{covered_text}); load the State Council's {year} notice "
            f"(国务院办公厅关于{year}年部分节假日安排的通知) with `dsgw workdays import "
            f"notice.txt` (docs/workdays.md)",
            year=year,
        )
        self.year = year


@dataclass(frozen=True, slots=True)
class Holiday:
    """One holiday period as the notice names it (e.g. 春节) and its days off."""

    name: str
    days: tuple[dt.date, ...]


@dataclass(frozen=True, slots=True)
class YearSchedule:
    """One year's official schedule. An instance has passed validation: every holiday and
    make-up day lies in ``year``, every make-up day is a Saturday or Sunday, and no day is
    both. ``origin`` says where it was read from, for error messages."""

    year: int
    source: str
    holidays: tuple[Holiday, ...]
    workdays: frozenset[dt.date]
    origin: str = "<memory>"

    @property
    def holiday_days(self) -> frozenset[dt.date]:
        return frozenset(day for holiday in self.holidays for day in holiday.days)

    @classmethod
    def from_dict(cls, data: object, origin: str = "<memory>") -> YearSchedule:
        """Parse and validate the JSON form (see ``docs/workdays.md``).

        Raises :class:`CalendarError` naming ``origin`` and the offending member.
        """
        where = f"workdays: {origin}"
        if not isinstance(data, Mapping):
            raise CalendarError(f"{where}: expected a JSON object")
        _expect_keys(where, data, {"year", "source", "holidays", "workdays"})
        year = data["year"]
        if not isinstance(year, int) or isinstance(year, bool) or not 1949 < year < 10000:
            raise CalendarError(f"{where}: year must be an integer year, got {year!r}")
        source = data["source"]
        if not isinstance(source, str) or not source.strip():
            raise CalendarError(f"{where}: source must name the notice the dates come from")

        raw_holidays = data["holidays"]
        if not isinstance(raw_holidays, list):
            raise CalendarError(f"{where}: holidays must be a list")
        holidays: list[Holiday] = []
        seen: dict[dt.date, str] = {}
        for index, raw in enumerate(raw_holidays):
            at = f"{where}: holidays[{index}]"
            if not isinstance(raw, Mapping):
                raise CalendarError(f"{at}: expected a JSON object")
            _expect_keys(at, raw, {"name", "days"})
            name = raw["name"]
            if not isinstance(name, str) or not name.strip():
                raise CalendarError(f"{at}: name must be a non-empty string")
            days = _parse_days(f"{at} ({name}).days", raw["days"])
            for day in days:
                if day.year != year:
                    raise CalendarError(
                        f"{at} ({name}): {day.isoformat()} is not in {year}; put it in the "
                        f"{day.year} schedule file"
                    )
                if day in seen:
                    raise CalendarError(
                        f"{at} ({name}): {day.isoformat()} is already a day of {seen[day]}"
                    )
                seen[day] = name
            holidays.append(Holiday(name=name, days=days))

        workdays = _parse_days(f"{where}: workdays", data["workdays"])
        for day in workdays:
            if day.year != year:
                raise CalendarError(
                    f"{where}: workdays: {day.isoformat()} is not in {year}; put it in the "
                    f"{day.year} schedule file"
                )
            if day.weekday() < _SATURDAY:
                raise CalendarError(
                    f"{where}: workdays: {day.isoformat()} is a {_WEEKDAYS[day.weekday()]}; "
                    "list only the Saturdays and Sundays worked (调休上班), weekdays already "
                    "are working days"
                )
            if day in seen:
                raise CalendarError(
                    f"{where}: {day.isoformat()} is both a holiday ({seen[day]}) and a "
                    "make-up working day"
                )
        return cls(
            year=year,
            source=source,
            holidays=tuple(holidays),
            workdays=frozenset(workdays),
            origin=origin,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, the inverse of :meth:`from_dict` (``origin`` is not part of it)."""
        return {
            "year": self.year,
            "source": self.source,
            "holidays": [
                {"name": h.name, "days": [d.isoformat() for d in h.days]} for h in self.holidays
            ],
            "workdays": [d.isoformat() for d in sorted(self.workdays)],
        }

    def same_days(self, other: YearSchedule) -> bool:
        """Whether both define the same days off and make-up days (names and source aside)."""
        return self.holiday_days == other.holiday_days and self.workdays == other.workdays


class WorkingCalendar:
    """Working days over the years of the schedules it was built from; immutable.

    Build it with :meth:`load` (files), :func:`default_calendar` (the shipped national
    schedules, plus optional files) or directly from :class:`YearSchedule` objects.
    """

    __slots__ = ("_holidays", "_schedules", "_workdays", "_years", "_zone")

    def __init__(self, schedules: Iterable[YearSchedule], *, zone: dt.tzinfo = SHANGHAI) -> None:
        """Raises :class:`CalendarError` if two schedules for one year disagree; the same
        year given twice with the same days is accepted once. ``zone`` places instants on
        their dates (the deployment's ``timezone`` setting)."""
        self._zone = zone
        by_year: dict[int, YearSchedule] = {}
        for schedule in schedules:
            known = by_year.get(schedule.year)
            if known is None:
                by_year[schedule.year] = schedule
            elif not known.same_days(schedule):
                raise CalendarError(
                    f"workdays: conflicting schedules for {schedule.year}: {known.origin} and "
                    f"{schedule.origin} list different days; load only one of them"
                )
        self._schedules = tuple(by_year[year] for year in sorted(by_year))
        self._holidays: dict[dt.date, str] = {
            day: holiday.name
            for schedule in self._schedules
            for holiday in schedule.holidays
            for day in holiday.days
        }
        self._workdays = frozenset(day for s in self._schedules for day in s.workdays)
        self._years = frozenset(by_year)

    @property
    def zone(self) -> dt.tzinfo:
        return self._zone

    def with_schedules(self, schedules: Iterable[YearSchedule]) -> WorkingCalendar:
        """This calendar plus ``schedules`` (same zone); raises as the constructor."""
        return WorkingCalendar([*self._schedules, *schedules], zone=self._zone)

    def covers(self, year: int) -> bool:
        """Whether the official schedule of ``year`` is loaded."""
        return year in self._years

    def provisional_years(self, start: dt.datetime, due: dt.datetime) -> tuple[int, ...]:
        """The years without a loaded schedule that the count from ``start`` to the
        deadline ``due`` (as :meth:`deadline` returns it) walked through, ascending. Empty
        means the deadline is final; otherwise it was counted on weekends alone there."""
        first = _local_date(start, self._zone).year
        last = _local_date(due - dt.timedelta(microseconds=1), self._zone).year
        return tuple(y for y in range(first, last + 1) if y not in self._years)

    @classmethod
    def load(cls, *paths: str | os.PathLike[str]) -> WorkingCalendar:
        """A calendar of the schedule files at ``paths`` (one year each), nothing else.

        Raises :class:`CalendarError` if a file is missing, not UTF-8 JSON, malformed, or
        disagrees with another file about the same year.
        """
        return cls(_read_schedule_file(Path(path)) for path in paths)

    @property
    def years(self) -> tuple[int, ...]:
        """The years this calendar can answer for, ascending."""
        return tuple(s.year for s in self._schedules)

    @property
    def schedules(self) -> tuple[YearSchedule, ...]:
        return self._schedules

    def __repr__(self) -> str:
        return f"WorkingCalendar(years={list(self.years)!r})"

    def is_working_day(self, day: dt.date) -> bool:
        """Monday to Friday unless a holiday; Saturday or Sunday only as a make-up day.

        A datetime is first placed on its Beijing date. Raises :class:`UncoveredYearError`
        for a year without a schedule.
        """
        day = _local_date(day, self._zone)
        self._require_year(day.year)
        return self._counts(day)

    def _counts(self, day: dt.date) -> bool:
        """Whether ``day`` counts in a deadline: the schedule's answer, or Monday to Friday
        in a year without one (the deadline is then provisional)."""
        if day.weekday() >= _SATURDAY:
            return day in self._workdays
        return day not in self._holidays

    def holiday(self, day: dt.date) -> str | None:
        """The name of the holiday ``day`` belongs to (e.g. ``"春节"``), or None.

        Raises :class:`UncoveredYearError` for a year without a schedule.
        """
        day = _local_date(day, self._zone)
        self._require_year(day.year)
        return self._holidays.get(day)

    def add_working_days(
        self, start: dt.date | dt.datetime, n: int, *, tz: dt.tzinfo | None = None
    ) -> dt.date:
        """The date of the ``n``-th working day after ``start``; ``start`` never counts.

        A datetime ``start`` is placed on its date in ``tz`` (default: the calendar's zone;
        naive means UTC). ``n == 0`` returns that date itself. In a year without a loaded
        schedule Monday to Friday count (see :meth:`provisional_years`). Raises ValueError
        for a negative ``n`` (a caller's bug).
        """
        if n < 0:
            raise ValueError(f"n must not be negative, got {n}")
        day = _local_date(start, tz or self._zone)
        remaining = n
        while remaining:
            day += _ONE_DAY
            if self._counts(day):
                remaining -= 1
        return day

    def deadline(self, start: dt.datetime, n: int, *, tz: dt.tzinfo | None = None) -> dt.datetime:
        """When "within ``n`` working days of ``start``" runs out, as an aware UTC datetime.

        That is the end of the ``n``-th working day after ``start``'s date in ``tz``
        (default: the calendar's zone), given exclusively: 00:00 local time of the next day.
        Anything before the returned instant is in time. Never refused: a count through a
        year without a schedule is provisional (:meth:`provisional_years`).
        """
        tz = tz or self._zone
        last = self.add_working_days(start, n, tz=tz)
        end = dt.datetime.combine(last + _ONE_DAY, dt.time(0), tzinfo=tz)
        return end.astimezone(dt.UTC)

    def working_days_between(self, a: dt.date, b: dt.date) -> int:
        """The number of working days in ``(a, b]``: after ``a``, up to and including ``b``.

        So ``working_days_between(d, add_working_days(d, n)) == n``. If ``b`` is before
        ``a`` the result is the negative count of ``(b, a]``, e.g. how many working days a
        deadline is overdue. Datetimes are placed on their Beijing date. Raises
        :class:`UncoveredYearError` for any day of the range in a year without a schedule.
        """
        a = _local_date(a, self._zone)
        b = _local_date(b, self._zone)
        if b < a:
            return -self.working_days_between(b, a)
        count = 0
        day = a
        while day < b:
            day += _ONE_DAY
            if self.is_working_day(day):
                count += 1
        return count

    def _require_year(self, year: int) -> None:
        if year not in self._years:
            raise UncoveredYearError(year, self.years)


def default_calendar(*extra: str | os.PathLike[str], zone: dt.tzinfo = SHANGHAI) -> WorkingCalendar:
    """The national schedules shipped with dsgw, plus the schedule files ``extra``.

    An extra file for a shipped year must list the same days, else :class:`CalendarError`.
    """
    return WorkingCalendar(
        [*_shipped_schedules(), *(_read_schedule_file(Path(path)) for path in extra)],
        zone=zone,
    )


@functools.cache
def _shipped_schedules() -> tuple[YearSchedule, ...]:
    """The package's ``data/*.json``, read once: they cannot change while running."""
    directory = resources.files(_DATA_PACKAGE).joinpath(_DATA_DIR)
    schedules = []
    for entry in sorted(directory.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            origin = f"{_DATA_PACKAGE}/{_DATA_DIR}/{entry.name}"
            schedules.append(_parse_schedule_text(entry.read_text("utf-8"), origin))
    return tuple(schedules)


def _read_schedule_file(path: Path) -> YearSchedule:
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise CalendarError(f"workdays: cannot read schedule file {path}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise CalendarError(f"workdays: schedule file {path} is not UTF-8") from exc
    return _parse_schedule_text(text, str(path))


def _parse_schedule_text(text: str, origin: str) -> YearSchedule:
    try:
        data = json.loads(text, object_pairs_hook=functools.partial(_no_duplicates, origin))
    except json.JSONDecodeError as exc:
        raise CalendarError(
            f"workdays: {origin} is not valid JSON: {exc.msg} at line {exc.lineno} "
            f"column {exc.colno}"
        ) from exc
    return YearSchedule.from_dict(data, origin)


def _no_duplicates(origin: str, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A repeated key would silently drop one of its values (e.g. a second "workdays")."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise CalendarError(f"workdays: {origin}: duplicate member {key!r}")
        result[key] = value
    return result


def _expect_keys(where: str, data: Mapping[str, Any], keys: set[str]) -> None:
    unknown = sorted(set(data) - keys)
    if unknown:
        raise CalendarError(f"{where}: unknown member(s) {', '.join(unknown)}")
    missing = sorted(keys - set(data))
    if missing:
        raise CalendarError(f"{where}: missing member(s) {', '.join(missing)}")


def _parse_days(where: str, raw: object) -> tuple[dt.date, ...]:
    """ISO dates written out as ``YYYY-MM-DD``, no repeats."""
    if not isinstance(raw, list):
        raise CalendarError(f"{where}: expected a list of YYYY-MM-DD dates")
    days: list[dt.date] = []
    for item in raw:
        try:
            day = dt.date.fromisoformat(item) if isinstance(item, str) else None
        except ValueError:
            day = None
        # fromisoformat also takes "20260215" and week dates; the files stay readable.
        if day is None or day.isoformat() != item:
            raise CalendarError(f"{where}: {item!r} is not a YYYY-MM-DD date")
        if day in days:
            raise CalendarError(f"{where}: {item} is listed twice")
        days.append(day)
    return tuple(days)


def _local_date(value: dt.date, tz: dt.tzinfo) -> dt.date:
    """The calendar date of ``value``: a date as is, a datetime on its date in ``tz``."""
    if isinstance(value, dt.datetime):
        return utc(value).astimezone(tz).date()
    return value
