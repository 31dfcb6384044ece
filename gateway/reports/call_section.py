"""Data-plane calls for both reports: totals by decision, and for the operations report per
scenario and merchant, over time, and the reasons of refusals.

SQL aggregates over the call log's copied columns: no payload is parsed except a bounded
sample of refusals for their reasons; scenarios and merchants the store does not hold count
under one ``unknown`` row.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.db.schema import LogEntryRow
from gateway.governance.policy import UNKNOWN_NAME
from gateway.reports.header import Names
from gateway.reports.periods import Period
from gateway.reports.queries import in_period

__all__ = [
    "REASON_SAMPLE",
    "CallBucket",
    "CallCount",
    "CallTotals",
    "CallsSection",
    "gather_call_totals",
    "gather_calls",
]


@dataclass(frozen=True, slots=True)
class CallTotals:
    """Data-plane calls of the period by decision."""

    allowed: int
    refused: int
    errors: int

    @property
    def total(self) -> int:
        return self.allowed + self.refused + self.errors


async def gather_call_totals(conn: AsyncConnection, period: Period) -> CallTotals:
    rows = await conn.execute(
        select(LogEntryRow.decision, func.count())
        .where(
            LogEntryRow.stream == "calls",
            LogEntryRow.kind == "data",
            in_period(LogEntryRow.recorded_at, period),
        )
        .group_by(LogEntryRow.decision)
    )
    counts = {str(decision): int(n) for decision, n in rows}
    return CallTotals(counts.get("allow", 0), counts.get("deny", 0), counts.get("error", 0))


REASON_SAMPLE = 50_000
"""Most refused records whose payload is read for the refusal reason (the newest ones)."""


@dataclass(frozen=True, slots=True)
class CallCount:
    """Data calls of one scenario or one merchant."""

    id: str | None
    name: str
    allowed: int
    refused: int
    errors: int

    @property
    def total(self) -> int:
        return self.allowed + self.refused + self.errors


@dataclass(frozen=True, slots=True)
class CallBucket:
    """Data calls of one Beijing day or calendar month."""

    label: str
    allowed: int
    refused: int
    errors: int


@dataclass(frozen=True, slots=True)
class CallsSection:
    totals: CallTotals
    by_scenario: tuple[CallCount, ...]
    by_merchant: tuple[CallCount, ...]
    granularity: str
    series: tuple[CallBucket, ...]
    refusal_reasons: tuple[tuple[str, int], ...]
    reasons_read: int
    """Refused records read for their reason (at most :data:`REASON_SAMPLE`)."""
    other_calls: tuple[tuple[str, int], ...]
    """Calls that are not data calls (token endpoint, admin, account, delivery), by kind."""


def _data_calls(period: Period) -> tuple[Any, ...]:
    return (
        LogEntryRow.stream == "calls",
        LogEntryRow.kind == "data",
        in_period(LogEntryRow.recorded_at, period),
    )


def _by(
    counts: dict[str | None, Counter[str]], name: Callable[[str | None], str]
) -> tuple[CallCount, ...]:
    out = [
        CallCount(
            id=key,
            name=name(key),
            allowed=c["allow"],
            refused=c["deny"],
            errors=c["error"],
        )
        for key, c in counts.items()
    ]
    return tuple(sorted(out, key=lambda c: (-c.total, c.id or "")))


def _known(value: str | None, known: Mapping[str, str]) -> str | None:
    """``value`` if the store holds it (or None: no scenario or merchant), else the one
    ``unknown`` row. A data call's scenario comes from its path before anything is
    authenticated: a report row per name would print whatever anyone sent."""
    if value is None or value in known:
        return value
    return UNKNOWN_NAME


async def gather_calls(conn: AsyncConnection, period: Period, names: Names) -> CallsSection:
    scenarios: dict[str | None, Counter[str]] = {}
    merchants: dict[str | None, Counter[str]] = {}
    totals: Counter[str] = Counter()
    rows = await conn.execute(
        select(LogEntryRow.scenario_id, LogEntryRow.merchant_id, LogEntryRow.decision, func.count())
        .where(*_data_calls(period))
        .group_by(LogEntryRow.scenario_id, LogEntryRow.merchant_id, LogEntryRow.decision)
    )
    for scenario_id, merchant_id, decision, n in rows:
        scenario_key = _known(scenario_id, names.scenarios)
        merchant_key = _known(merchant_id, names.merchants)
        scenarios.setdefault(scenario_key, Counter())[str(decision)] += int(n)
        merchants.setdefault(merchant_key, Counter())[str(decision)] += int(n)
        totals[str(decision)] += int(n)

    buckets = period.buckets()
    position = case(
        *[(LogEntryRow.recorded_at < end, i) for i, (_, _, end) in enumerate(buckets)],
        else_=len(buckets),
    )
    inner = (
        select(position.label("bucket"), LogEntryRow.decision.label("decision"))
        .where(*_data_calls(period))
        .subquery()
    )
    per_bucket: dict[int, Counter[str]] = {}
    for index, decision, n in await conn.execute(
        select(inner.c.bucket, inner.c.decision, func.count()).group_by(
            inner.c.bucket, inner.c.decision
        )
    ):
        per_bucket.setdefault(int(index), Counter())[str(decision)] += int(n)
    series = tuple(
        CallBucket(
            label,
            per_bucket.get(i, Counter())["allow"],
            per_bucket.get(i, Counter())["deny"],
            per_bucket.get(i, Counter())["error"],
        )
        for i, (label, _, _) in enumerate(buckets)
    )

    reasons: Counter[str] = Counter()
    refused = await conn.execute(
        select(LogEntryRow.payload)
        .where(*_data_calls(period), LogEntryRow.decision == "deny")
        .order_by(LogEntryRow.seq.desc())
        .limit(REASON_SAMPLE)
    )
    read = 0
    for (payload,) in refused:
        read += 1
        try:
            body = json.loads(payload)
        except ValueError:
            body = {}
        reason = body.get("reason") if isinstance(body, dict) else None
        reasons[reason if isinstance(reason, str) and reason else "(none)"] += 1

    other = await conn.execute(
        select(LogEntryRow.kind, func.count())
        .where(
            LogEntryRow.stream == "calls",
            LogEntryRow.kind != "data",
            in_period(LogEntryRow.recorded_at, period),
        )
        .group_by(LogEntryRow.kind)
    )
    return CallsSection(
        totals=CallTotals(totals["allow"], totals["deny"], totals["error"]),
        by_scenario=_by(scenarios, names.scenario),
        by_merchant=_by(merchants, names.merchant),
        granularity=period.granularity,
        series=series,
        refusal_reasons=tuple(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
        reasons_read=read,
        other_calls=tuple(sorted(((str(k), int(n)) for k, n in other), key=lambda kv: kv[0])),
    )
