"""Working-day calendar for deadlines counted in 工作日 (onboarding, compliance, review).

The State Council's schedules for the covered years ship in ``data/``; other years or
schedules are loaded from JSON files of the same format (``docs/workdays.md``).
"""

from __future__ import annotations

from gateway.workdays.calendar import (
    SHANGHAI,
    CalendarError,
    Holiday,
    UncoveredYearError,
    WorkingCalendar,
    YearSchedule,
    default_calendar,
)

__all__ = [
    "SHANGHAI",
    "CalendarError",
    "Holiday",
    "UncoveredYearError",
    "WorkingCalendar",
    "YearSchedule",
    "default_calendar",
]
