"""Alerts for the security report: those raised in the quarter by rule and severity, how
quickly they were handled, and those still unhandled at its end.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.clock import utc
from gateway.db.schema import AlertRow
from gateway.reports.periods import Period
from gateway.reports.queries import LIST_LIMIT, in_period

__all__ = ["DIVERGENCE_RULE", "SEVERITY_ORDER", "AlertItem", "AlertSection", "gather_alerts"]

DIVERGENCE_RULE = "audit-divergence"


SEVERITY_ORDER = ("critical", "high", "warning", "info")
"""Most severe first (the monitor's levels, :class:`gateway.monitoring.models.Severity`)."""


@dataclass(frozen=True, slots=True)
class AlertItem:
    id: int
    rule: str
    severity: str
    status: str
    merchant_id: str | None
    scenario_id: str | None
    title: str
    occurrences: int
    first_seen: dt.datetime
    last_seen: dt.datetime
    handled_by: str | None
    handled_at: dt.datetime | None
    resolution: str | None
    measure_id: str | None

    def state_at(self, instant: dt.datetime) -> str:
        """open, acknowledged or resolved as of ``instant`` (``handled_at`` is the latest
        handling step, so a step taken later than ``instant`` had not happened yet)."""
        if self.handled_at is None or self.handled_at >= instant or self.status == "open":
            return "open"
        return self.status

    @property
    def time_to_handle(self) -> dt.timedelta | None:
        if self.handled_at is None or self.status == "open":
            return None
        return max(dt.timedelta(0), self.handled_at - self.first_seen)


@dataclass(frozen=True, slots=True)
class AlertSection:
    raised: int
    by_rule: tuple[tuple[str, int], ...]
    by_severity: tuple[tuple[str, int], ...]
    by_rule_severity: tuple[tuple[str, tuple[tuple[str, int], ...]], ...]
    handled: int
    """Alerts raised in the quarter that were acknowledged or resolved by its end."""
    resolved: int
    median_time_to_handle: dt.timedelta | None
    max_time_to_handle: dt.timedelta | None
    median_time_to_resolve: dt.timedelta | None
    items: tuple[AlertItem, ...]
    """Alerts raised in the quarter (at most :data:`LIST_LIMIT`), oldest first."""
    open_at_end: tuple[AlertItem, ...]
    """Alerts raised before the quarter's end and not handled by then, this quarter's or
    carried over from earlier ones."""


def _severity_key(severity: str) -> tuple[int, str]:
    try:
        return SEVERITY_ORDER.index(severity), severity
    except ValueError:
        return len(SEVERITY_ORDER), severity


def _alert(row: Any) -> AlertItem:
    return AlertItem(
        id=int(row.id),
        rule=str(row.rule),
        severity=str(row.severity),
        status=str(row.status),
        merchant_id=row.merchant_id,
        scenario_id=row.scenario_id,
        title=str(row.title),
        occurrences=int(row.occurrences),
        first_seen=utc(row.first_seen),
        last_seen=utc(row.last_seen),
        handled_by=row.handled_by,
        handled_at=utc(row.handled_at) if row.handled_at is not None else None,
        resolution=row.resolution,
        measure_id=row.measure_id,
    )


def _median(values: Sequence[dt.timedelta]) -> dt.timedelta | None:
    if not values:
        return None
    return dt.timedelta(seconds=statistics.median(v.total_seconds() for v in values))


async def gather_alerts(
    conn: AsyncConnection, period: Period, as_of: dt.datetime
) -> tuple[AlertSection, tuple[AlertItem, ...]]:
    columns = (
        AlertRow.id,
        AlertRow.rule,
        AlertRow.severity,
        AlertRow.status,
        AlertRow.merchant_id,
        AlertRow.scenario_id,
        AlertRow.title,
        AlertRow.occurrences,
        AlertRow.first_seen,
        AlertRow.last_seen,
        AlertRow.handled_by,
        AlertRow.handled_at,
        AlertRow.resolution,
        AlertRow.measure_id,
    )
    raised_here = in_period(AlertRow.first_seen, period)
    pairs = [
        (str(rule), str(severity), int(n))
        for rule, severity, n in await conn.execute(
            select(AlertRow.rule, AlertRow.severity, func.count())
            .where(raised_here)
            .group_by(AlertRow.rule, AlertRow.severity)
        )
    ]
    by_rule: Counter[str] = Counter()
    by_severity: Counter[str] = Counter()
    matrix: dict[str, Counter[str]] = {}
    for rule, severity, n in pairs:
        by_rule[rule] += n
        by_severity[severity] += n
        matrix.setdefault(rule, Counter())[severity] += n
    items = [
        _alert(row)
        for row in await conn.execute(
            select(*columns).where(raised_here).order_by(AlertRow.first_seen, AlertRow.id)
        )
    ]
    handled = [a for a in items if a.state_at(as_of) != "open"]
    to_handle = [a.time_to_handle for a in handled if a.time_to_handle is not None]
    to_resolve = [
        a.time_to_handle
        for a in handled
        if a.state_at(as_of) == "resolved" and a.time_to_handle is not None
    ]
    unhandled = or_(AlertRow.handled_at.is_(None), AlertRow.handled_at >= as_of)
    open_rows = await conn.execute(
        select(*columns)
        .where(AlertRow.first_seen < as_of, or_(unhandled, AlertRow.status == "open"))
        .order_by(AlertRow.first_seen, AlertRow.id)
        .limit(LIST_LIMIT)
    )
    severities = sorted(by_severity, key=_severity_key)
    section = AlertSection(
        raised=sum(by_rule.values()),
        by_rule=tuple(sorted(by_rule.items(), key=lambda kv: (-kv[1], kv[0]))),
        by_severity=tuple((s, by_severity[s]) for s in severities),
        by_rule_severity=tuple(
            (rule, tuple((s, matrix[rule][s]) for s in severities))
            for rule, _ in sorted(by_rule.items(), key=lambda kv: (-kv[1], kv[0]))
        ),
        handled=len(handled),
        resolved=sum(1 for a in handled if a.state_at(as_of) == "resolved"),
        median_time_to_handle=_median(to_handle),
        max_time_to_handle=max(to_handle) if to_handle else None,
        median_time_to_resolve=_median(to_resolve),
        items=tuple(items[:LIST_LIMIT]),
        open_at_end=tuple(_alert(row) for row in open_rows),
    )
    divergence = tuple(a for a in items if a.rule == DIVERGENCE_RULE)
    return section, divergence
