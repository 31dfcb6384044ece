"""Query parts every section of the reports shares."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_
from sqlalchemy.sql import ColumnElement

from gateway.reports.periods import Period

__all__ = ["LIST_LIMIT", "in_period"]

LIST_LIMIT = 2000
"""Most items a report lists one by one in a section; counts always cover every item."""


def in_period(column: Any, period: Period) -> ColumnElement[bool]:
    """``column`` falls in ``period``: from its first instant, up to but not at its end."""
    return and_(column >= period.start, column < period.end)
