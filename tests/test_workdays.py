"""Working-day calendar: the shipped 2025/2026 schedules, deadline arithmetic across holidays
and year ends, time zones, refusal of uncovered years and malformed schedule files, and the
counting properties (a count lands on a working day and counts back to itself)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import ConfigError
from gateway.workdays import (
    SHANGHAI,
    CalendarError,
    UncoveredYearError,
    WorkingCalendar,
    YearSchedule,
    default_calendar,
)

CAL = default_calendar()
D = dt.date


def _write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data, ensure_ascii=False), "utf-8")
    return path


def _schedule(**changes: Any) -> dict[str, Any]:
    """A small valid schedule for 2027 (test data, not the official one)."""
    data: dict[str, Any] = {
        "year": 2027,
        "source": "test schedule",
        "holidays": [{"name": "元旦", "days": ["2027-01-01", "2027-01-02", "2027-01-03"]}],
        "workdays": ["2027-01-09"],
    }
    data.update(changes)
    return data


# --- the shipped schedules ------------------------------------------------------------


def test_shipped_years() -> None:
    assert CAL.years == (2025, 2026)


def test_weekends_and_weekdays() -> None:
    assert not CAL.is_working_day(D(2026, 3, 7))  # Saturday
    assert not CAL.is_working_day(D(2026, 3, 8))  # Sunday
    assert CAL.is_working_day(D(2026, 3, 9))  # Monday
    assert CAL.is_working_day(D(2025, 12, 31))  # Wednesday


def test_spring_festival_2026() -> None:
    for offset in range(9):
        day = D(2026, 2, 15) + dt.timedelta(days=offset)
        assert not CAL.is_working_day(day), day
        assert CAL.holiday(day) == "春节"
    assert CAL.is_working_day(D(2026, 2, 24))
    assert CAL.holiday(D(2026, 2, 24)) is None


def test_make_up_saturdays_are_working_days() -> None:
    assert CAL.is_working_day(D(2026, 2, 14))
    assert CAL.is_working_day(D(2026, 2, 28))
    assert CAL.is_working_day(D(2026, 9, 20))  # a Sunday
    assert CAL.working_days_between(D(2026, 2, 27), D(2026, 3, 1)) == 1
    assert CAL.add_working_days(D(2026, 2, 13), 1) == D(2026, 2, 14)
    assert CAL.add_working_days(D(2026, 2, 14), 1) == D(2026, 2, 24)


def test_working_days_per_year() -> None:
    assert CAL.working_days_between(D(2024, 12, 31), D(2025, 12, 31)) == 248
    assert CAL.working_days_between(D(2025, 12, 31), D(2026, 12, 31)) == 248


def test_shipped_files_round_trip() -> None:
    for schedule in CAL.schedules:
        again = YearSchedule.from_dict(schedule.to_dict())
        assert again.same_days(schedule)
        assert again.holidays == schedule.holidays


# --- counting -------------------------------------------------------------------------


def test_add_working_days_across_national_day_2026() -> None:
    assert CAL.add_working_days(D(2026, 9, 30), 1) == D(2026, 10, 8)
    assert CAL.add_working_days(D(2026, 9, 30), 2) == D(2026, 10, 9)
    assert CAL.add_working_days(D(2026, 9, 30), 3) == D(2026, 10, 10)  # make-up Saturday


def test_add_working_days_across_year_end() -> None:
    # 2026-01-01..03 are off and Sunday 2026-01-04 is worked.
    assert CAL.add_working_days(D(2025, 12, 31), 1) == D(2026, 1, 4)
    assert CAL.add_working_days(D(2025, 12, 26), 5) == D(2026, 1, 5)


def test_start_day_never_counts() -> None:
    assert CAL.add_working_days(D(2026, 3, 9), 1) == D(2026, 3, 10)
    assert CAL.add_working_days(D(2026, 3, 7), 1) == D(2026, 3, 9)  # from a Saturday
    assert CAL.add_working_days(D(2026, 3, 9), 0) == D(2026, 3, 9)


def test_onboarding_over_spring_festival_2025() -> None:
    # Friday 2025-01-24: Sun 26 (make-up), Mon 27, then off until 2-4, then Wed-Fri.
    assert CAL.add_working_days(D(2025, 1, 24), 5) == D(2025, 2, 7)


def test_working_days_between_is_half_open_and_antisymmetric() -> None:
    assert CAL.working_days_between(D(2026, 3, 9), D(2026, 3, 9)) == 0
    assert CAL.working_days_between(D(2026, 3, 9), D(2026, 3, 13)) == 4
    assert CAL.working_days_between(D(2026, 3, 13), D(2026, 3, 9)) == -4


def test_negative_count_is_a_bug() -> None:
    with pytest.raises(ValueError, match="negative"):
        CAL.add_working_days(D(2026, 3, 9), -1)


# --- time zone ------------------------------------------------------------------------


def test_deadline_is_end_of_beijing_day_in_utc() -> None:
    submitted = dt.datetime(2026, 9, 30, 20, 0, tzinfo=SHANGHAI)
    deadline = CAL.deadline(submitted, 1)
    assert deadline == dt.datetime(2026, 10, 8, 16, 0, tzinfo=dt.UTC)
    assert deadline.utcoffset() == dt.timedelta(0)
    assert deadline.astimezone(SHANGHAI) == dt.datetime(2026, 10, 9, 0, 0, tzinfo=SHANGHAI)


def test_deadline_uses_the_beijing_date_of_the_submission() -> None:
    # 2026-02-13 23:30 in Beijing (a Friday): the next working day is Saturday 2-14.
    before_midnight = dt.datetime(2026, 2, 13, 15, 30, tzinfo=dt.UTC)
    assert CAL.deadline(before_midnight, 1) == dt.datetime(2026, 2, 14, 16, 0, tzinfo=dt.UTC)
    # 2026-02-14 00:30 in Beijing, although still 2-13 in UTC: the count starts after 2-14.
    after_midnight = dt.datetime(2026, 2, 13, 16, 30, tzinfo=dt.UTC)
    assert CAL.deadline(after_midnight, 1) == dt.datetime(2026, 2, 24, 16, 0, tzinfo=dt.UTC)
    # Naive datetimes are UTC, as everywhere in dsgw.
    assert CAL.deadline(after_midnight.replace(tzinfo=None), 1) == CAL.deadline(after_midnight, 1)
    assert CAL.add_working_days(after_midnight, 1) == D(2026, 2, 24)


def test_deadline_in_another_time_zone() -> None:
    utc_day = dt.datetime(2026, 2, 13, 16, 30, tzinfo=dt.UTC)
    assert CAL.deadline(utc_day, 1, tz=dt.UTC) == dt.datetime(2026, 2, 15, 0, 0, tzinfo=dt.UTC)


# --- uncovered years ------------------------------------------------------------------


def test_uncovered_year_is_refused_with_instructions() -> None:
    with pytest.raises(UncoveredYearError) as info:
        CAL.is_working_day(D(2027, 1, 4))
    message = str(info.value)
    assert "2027" in message
    assert "2025, 2026" in message
    assert "dsgw workdays import" in message
    assert "docs/workdays.md" in message
    assert info.value.year == 2027
    assert isinstance(info.value, ConfigError)


def test_counting_into_an_uncovered_year_is_provisional_not_refused() -> None:
    # 2026-12-31 (Thu), then 2027 on weekends alone: Fri 1-1, Mon 1-4, Tue 1-5, Wed 1-6.
    assert CAL.add_working_days(D(2026, 12, 30), 5) == D(2027, 1, 6)
    start = dt.datetime(2026, 12, 30, 2, tzinfo=dt.UTC)
    due = CAL.deadline(start, 5)
    assert due == dt.datetime(2027, 1, 7, tzinfo=SHANGHAI)
    assert CAL.provisional_years(start, due) == (2027,)
    # Inside a covered year the deadline is final.
    early = CAL.deadline(dt.datetime(2026, 12, 1, tzinfo=dt.UTC), 5)
    assert CAL.provisional_years(dt.datetime(2026, 12, 1, tzinfo=dt.UTC), early) == ()
    # Questions about single days of such a year are still refused.
    with pytest.raises(UncoveredYearError):
        CAL.working_days_between(D(2024, 12, 1), D(2025, 1, 2))


def test_deadline_ending_exactly_at_the_year_end_is_final() -> None:
    # The 1st working day after Wed 2026-12-30 is Thu 12-31: due 2027-01-01T00:00+08:00,
    # an instant of 2027 in Beijing, yet the count never entered 2027.
    start = dt.datetime(2026, 12, 30, 12, tzinfo=SHANGHAI)
    due = CAL.deadline(start, 1)
    assert due == dt.datetime(2027, 1, 1, tzinfo=SHANGHAI)
    assert CAL.provisional_years(start, due) == ()


def test_extra_schedule_covers_another_year(tmp_path: Path) -> None:
    calendar = default_calendar(_write(tmp_path / "cn-2027.json", _schedule()))
    assert calendar.years == (2025, 2026, 2027)
    assert not calendar.is_working_day(D(2027, 1, 1))
    assert calendar.is_working_day(D(2027, 1, 9))  # make-up Saturday
    assert calendar.add_working_days(D(2026, 12, 31), 1) == D(2027, 1, 4)


def test_load_only_the_given_files(tmp_path: Path) -> None:
    calendar = WorkingCalendar.load(_write(tmp_path / "s.json", _schedule()))
    assert calendar.years == (2027,)
    with pytest.raises(UncoveredYearError):
        calendar.is_working_day(D(2026, 3, 9))


# --- schedule files -------------------------------------------------------------------


def test_make_up_day_on_a_weekday_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "s.json", _schedule(workdays=["2027-01-08"]))  # a Friday
    with pytest.raises(CalendarError, match=r"2027-01-08 is a Friday"):
        WorkingCalendar.load(path)


def test_holiday_outside_the_year_is_refused(tmp_path: Path) -> None:
    holidays = [{"name": "元旦", "days": ["2026-12-31", "2027-01-01"]}]
    path = _write(tmp_path / "s.json", _schedule(holidays=holidays))
    with pytest.raises(CalendarError, match=r"2026-12-31 is not in 2027"):
        WorkingCalendar.load(path)


def test_day_both_holiday_and_workday_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "s.json", _schedule(workdays=["2027-01-02"]))
    with pytest.raises(CalendarError, match="both a holiday"):
        WorkingCalendar.load(path)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"year": "2027"}, "year must be an integer"),
        ({"source": ""}, "source must name"),
        ({"workdays": ["2027-1-9"]}, "not a YYYY-MM-DD date"),
        ({"workdays": ["20270109"]}, "not a YYYY-MM-DD date"),
        ({"workdays": ["2027-01-09", "2027-01-09"]}, "listed twice"),
        ({"holidays": [{"name": "元旦"}]}, "missing member"),
        ({"holidays": "元旦"}, "holidays must be a list"),
        ({"region": "广西"}, "unknown member"),
        (
            {
                "holidays": [
                    {"name": "元旦", "days": ["2027-01-01"]},
                    {"name": "其他", "days": ["2027-01-01"]},
                ]
            },
            "already a day of 元旦",
        ),
    ],
)
def test_malformed_schedules_are_refused(
    tmp_path: Path, changes: dict[str, Any], match: str
) -> None:
    with pytest.raises(CalendarError, match=match):
        WorkingCalendar.load(_write(tmp_path / "s.json", _schedule(**changes)))


def test_unreadable_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CalendarError, match="cannot read"):
        WorkingCalendar.load(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"year": 2027,', "utf-8")
    with pytest.raises(CalendarError, match="not valid JSON"):
        WorkingCalendar.load(broken)
    doubled = tmp_path / "doubled.json"
    doubled.write_text('{"year": 2027, "year": 2028}', "utf-8")
    with pytest.raises(CalendarError, match="duplicate member 'year'"):
        WorkingCalendar.load(doubled)


def test_conflicting_schedules_for_one_year_are_refused(tmp_path: Path) -> None:
    first = _write(tmp_path / "a.json", _schedule())
    second = _write(tmp_path / "b.json", _schedule(workdays=["2027-01-10"]))
    with pytest.raises(CalendarError, match="conflicting schedules for 2027"):
        WorkingCalendar.load(first, second)
    shipped = CAL.schedules[-1].to_dict()
    shipped["workdays"] = shipped["workdays"][:-1]
    with pytest.raises(CalendarError, match="conflicting schedules for 2026"):
        default_calendar(_write(tmp_path / "c.json", shipped))


def test_the_same_schedule_twice_is_accepted(tmp_path: Path) -> None:
    first = _write(tmp_path / "a.json", _schedule())
    second = _write(tmp_path / "b.json", _schedule(source="another copy"))
    assert WorkingCalendar.load(first, second).years == (2027,)


# --- properties -----------------------------------------------------------------------

covered_days = st.dates(min_value=D(2025, 1, 1), max_value=D(2026, 10, 31))
counts = st.integers(min_value=0, max_value=40)


@given(covered_days, counts)
def test_count_lands_on_a_working_day_and_counts_back(start: dt.date, n: int) -> None:
    end = CAL.add_working_days(start, n)
    assert CAL.working_days_between(start, end) == n
    if n > 0:
        assert CAL.is_working_day(end)
        assert end > start
        # The day before the n-th working day still has only n - 1 of them.
        assert CAL.working_days_between(start, end - dt.timedelta(days=1)) == n - 1


@given(covered_days, covered_days, covered_days)
def test_between_adds_up(a: dt.date, b: dt.date, c: dt.date) -> None:
    total = CAL.working_days_between(a, b) + CAL.working_days_between(b, c)
    assert total == CAL.working_days_between(a, c)
