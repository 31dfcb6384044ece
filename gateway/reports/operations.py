"""The facts of the periodic operations report (CS23 art. 23; ZW art. 31-33), gathered into
dataclasses.

The operator reports and discloses its operation periodically, and is evaluated yearly on,
among other things, how quickly applications are reviewed. So the report counts calls per
scenario and merchant (SQL aggregates over the call log's copied columns: no payload is
parsed except a bounded sample of refusals for their reasons; scenarios and merchants the
store does not hold count under one ``unknown`` row), measures review timeliness
against the working-day deadlines of the workflows, and sums products, trades, settlements
and the revenue statements of the period. The circular on source departments (ZW art. 31)
comes from :mod:`gateway.reports.circular`, a year's ratings of the operator (ZW art. 33)
from :mod:`gateway.reports.evaluation`. Formatting lives in :mod:`gateway.reports.render`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import statistics
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, and_, case, cast, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.clock import utc
from gateway.db.schema import (
    LogEntryRow,
    OnboardingRow,
    ProductRow,
    ReviewRow,
    SettlementRow,
    TradeRow,
    UseApplicationRow,
)
from gateway.errors import NotFoundError
from gateway.governance.policy import UNKNOWN_NAME
from gateway.products.revenue import Statement
from gateway.reports.circular import DepartmentsSection, gather_departments
from gateway.reports.evaluation import EvaluationSection, gather_evaluation
from gateway.reports.header import Names, ReportHeader
from gateway.reports.periods import Period
from gateway.reports.security import CallTotals
from gateway.workdays.calendar import UncoveredYearError, WorkingCalendar
from gateway.workflows.applications import (
    COMPLIANCE_WORKING_DAYS,
    REVIEW_WORKING_DAYS,
)
from gateway.workflows.onboarding import ONBOARDING_WORKING_DAYS

__all__ = [
    "REASON_SAMPLE",
    "CallBucket",
    "CallCount",
    "CallsSection",
    "OperationsReport",
    "OverdueItem",
    "ProductCount",
    "ProductsSection",
    "RevenueTotal",
    "SettlementItem",
    "StepTimeliness",
    "TimelinessSection",
    "gather_operations",
]

REASON_SAMPLE = 50_000
"""Most refused records whose payload is read for the refusal reason (the newest ones)."""

_CENT = Decimal("0.01")

RevenueSource = Callable[[str], Awaitable[list[Statement]]]
"""The revenue statements of one settlement month (``ProductService.revenue``)."""


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


@dataclass(frozen=True, slots=True)
class StepTimeliness:
    """One review step: decisions made in the period and how they kept the deadline."""

    step: str
    deadline_days: int
    decided: int
    on_time: int
    deemed: int
    """Deemed approvals: the deadline passed without an answer (department reviews)."""
    extended: int
    median_working_days: float | None
    open_at_end: int
    overdue_at_end: int

    @property
    def share_on_time(self) -> float | None:
        return self.on_time / self.decided if self.decided else None


@dataclass(frozen=True, slots=True)
class OverdueItem:
    step: str
    subject: str
    party: str
    due_at: dt.datetime
    working_days_overdue: int | None
    # Its last working day lies in a year without a loaded holiday schedule: counted on
    # weekends alone, recomputed when the schedule is loaded (docs/workdays.md).
    provisional: bool = False


@dataclass(frozen=True, slots=True)
class TimelinessSection:
    steps: tuple[StepTimeliness, ...]
    overdue: tuple[OverdueItem, ...]
    uncovered_years: tuple[int, ...]
    """Years without a loaded holiday schedule: working days there were not counted."""


@dataclass(frozen=True, slots=True)
class ProductCount:
    id: str
    name: str
    trades: int
    quantity: int
    amount: Decimal


@dataclass(frozen=True, slots=True)
class SettlementItem:
    id: str
    period: str
    amount: Decimal
    settled_at: dt.datetime
    trades: int


@dataclass(frozen=True, slots=True)
class RevenueTotal:
    role: str
    party: str
    trades: int
    total: Decimal


@dataclass(frozen=True, slots=True)
class ProductsSection:
    by_status: tuple[tuple[str, int], ...]
    """Every product by its current status."""
    registered: int
    trades: int
    quantity: int
    amount: Decimal
    by_product: tuple[ProductCount, ...]
    settlements: tuple[SettlementItem, ...]
    revenue: tuple[RevenueTotal, ...]
    revenue_months: tuple[str, ...]
    """Whole months of the period with settled trades (those the revenue covers)."""
    months_without_settlement: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class OperationsReport:
    header: ReportHeader
    names: Names
    calls: CallsSection
    timeliness: TimelinessSection
    products: ProductsSection
    departments: DepartmentsSection
    evaluation: EvaluationSection | None
    """The year's ratings, in a report over one calendar year only."""


async def gather_operations(
    engine: AsyncEngine,
    header: ReportHeader,
    names: Names,
    *,
    calendar: WorkingCalendar,
    revenue: RevenueSource,
) -> OperationsReport:
    """Gather the operations report of ``header.period``; read-only. Raises
    :class:`DsgwError` only when the store cannot be read."""
    period = header.period
    async with engine.connect() as conn:
        calls = await _calls(conn, period, names)
        timeliness = await _timeliness(conn, period, header.as_of, calendar)
        products = await _products(conn, period)
        departments = await gather_departments(conn, period, header.as_of, calendar)
        evaluation = await gather_evaluation(conn, period)
    statements = []
    covered, without = [], []
    for month in period.whole_months():
        try:
            statements.extend(await revenue(month))
            covered.append(month)
        except NotFoundError:
            without.append(month)
    totals: dict[tuple[str, str], list[Decimal]] = {}
    for statement in statements:
        totals.setdefault((statement.role, statement.party), []).extend(
            line.allocated for line in statement.lines
        )
    order = {"owner": 0, "operator": 1, "processor": 2}
    revenue_totals = tuple(
        RevenueTotal(role, party, len(lines), sum(lines, Decimal("0.00")))
        for (role, party), lines in sorted(
            totals.items(), key=lambda kv: (order.get(kv[0][0], 3), kv[0][1])
        )
    )
    return OperationsReport(
        header=header,
        names=names,
        calls=calls,
        timeliness=timeliness,
        products=dataclasses.replace(
            products,
            revenue=revenue_totals,
            revenue_months=tuple(covered),
            months_without_settlement=tuple(without),
        ),
        departments=departments,
        evaluation=evaluation,
    )


def _in(column: Any, period: Period) -> Any:
    return and_(column >= period.start, column < period.end)


def _data_calls(period: Period) -> tuple[Any, ...]:
    return (
        LogEntryRow.stream == "calls",
        LogEntryRow.kind == "data",
        _in(LogEntryRow.recorded_at, period),
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


async def _calls(conn: AsyncConnection, period: Period, names: Names) -> CallsSection:
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
            _in(LogEntryRow.recorded_at, period),
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


class _Step:
    """Accumulates one review step's decisions and open items."""

    def __init__(self, step: str, deadline_days: int, calendar: WorkingCalendar) -> None:
        self.step = step
        self.deadline_days = deadline_days
        self.calendar = calendar
        self.decided = 0
        self.on_time = 0
        self.deemed = 0
        self.extended = 0
        self.days: list[int] = []
        self.open = 0
        self.overdue: list[OverdueItem] = []
        self.uncovered: set[int] = set()

    def working_days(self, a: dt.datetime, b: dt.datetime) -> int | None:
        try:
            return self.calendar.working_days_between(a, b)
        except UncoveredYearError as exc:
            self.uncovered.add(exc.year)
            return None

    def decision(
        self, opened: dt.datetime, decided: dt.datetime, deadline: dt.datetime, *, deemed: bool
    ) -> None:
        self.decided += 1
        if deemed:
            self.deemed += 1
        elif decided < deadline:
            self.on_time += 1
        days = self.working_days(opened, decided)
        if days is not None:
            self.days.append(days)

    def still_open(
        self, subject: str, party: str, deadline: dt.datetime, as_of: dt.datetime
    ) -> None:
        self.open += 1
        if deadline <= as_of:
            last_day = (deadline - dt.timedelta(microseconds=1)).astimezone(self.calendar.zone)
            self.overdue.append(
                OverdueItem(
                    self.step,
                    subject,
                    party,
                    deadline,
                    self.working_days(deadline, as_of),
                    provisional=not self.calendar.covers(last_day.year),
                )
            )

    def result(self) -> StepTimeliness:
        return StepTimeliness(
            step=self.step,
            deadline_days=self.deadline_days,
            decided=self.decided,
            on_time=self.on_time,
            deemed=self.deemed,
            extended=self.extended,
            median_working_days=float(statistics.median(self.days)) if self.days else None,
            open_at_end=self.open,
            overdue_at_end=len(self.overdue),
        )


def _open_at(opened: Any, closed: Any, as_of: dt.datetime) -> bool:
    return opened is not None and utc(opened) < as_of and (closed is None or utc(closed) >= as_of)


async def _timeliness(
    conn: AsyncConnection, period: Period, as_of: dt.datetime, calendar: WorkingCalendar
) -> TimelinessSection:
    onboarding = _Step("onboarding", ONBOARDING_WORKING_DAYS, calendar)
    rows = await conn.execute(
        select(
            OnboardingRow.id,
            OnboardingRow.merchant_id,
            OnboardingRow.status,
            OnboardingRow.submitted_at,
            OnboardingRow.due_at,
            OnboardingRow.decided_at,
        ).where(
            or_(
                _in(OnboardingRow.decided_at, period),
                and_(
                    OnboardingRow.submitted_at < as_of,
                    or_(OnboardingRow.decided_at.is_(None), OnboardingRow.decided_at >= as_of),
                ),
            )
        )
    )
    for row in rows:
        decided = utc(row.decided_at) if row.decided_at is not None else None
        if decided is not None and period.contains(decided) and row.status != "withdrawn":
            onboarding.decision(utc(row.submitted_at), decided, utc(row.due_at), deemed=False)
        if _open_at(row.submitted_at, row.decided_at, as_of) and row.status != "withdrawn":
            onboarding.still_open(row.id, row.merchant_id, utc(row.due_at), as_of)

    compliance = _Step("compliance", COMPLIANCE_WORKING_DAYS, calendar)
    rows = await conn.execute(
        select(
            UseApplicationRow.id,
            UseApplicationRow.merchant_id,
            UseApplicationRow.status,
            UseApplicationRow.submitted_at,
            UseApplicationRow.compliance_due_at,
            UseApplicationRow.checked_at,
        ).where(
            or_(
                _in(UseApplicationRow.checked_at, period),
                and_(
                    UseApplicationRow.submitted_at < as_of,
                    UseApplicationRow.status != "withdrawn",
                    or_(
                        UseApplicationRow.checked_at.is_(None),
                        UseApplicationRow.checked_at >= as_of,
                    ),
                ),
            )
        )
    )
    for row in rows:
        checked = utc(row.checked_at) if row.checked_at is not None else None
        due = utc(row.compliance_due_at)
        if checked is not None and period.contains(checked):
            compliance.decision(utc(row.submitted_at), checked, due, deemed=False)
        if _open_at(row.submitted_at, row.checked_at, as_of) and row.status != "withdrawn":
            compliance.still_open(row.id, row.merchant_id, due, as_of)

    review = _Step("review", REVIEW_WORKING_DAYS, calendar)
    rows = await conn.execute(
        select(
            ReviewRow.application_id,
            ReviewRow.department,
            ReviewRow.status,
            ReviewRow.opened_at,
            ReviewRow.due_at,
            ReviewRow.extended_until,
            ReviewRow.decided_at,
            UseApplicationRow.status.label("application_status"),
        )
        .join(UseApplicationRow, ReviewRow.application_id == UseApplicationRow.id)
        .where(
            ReviewRow.opened_at.is_not(None),
            or_(
                _in(ReviewRow.decided_at, period),
                and_(
                    ReviewRow.opened_at < as_of,
                    UseApplicationRow.status != "withdrawn",
                    or_(ReviewRow.decided_at.is_(None), ReviewRow.decided_at >= as_of),
                ),
            ),
        )
    )
    for row in rows:
        deadline_value = row.extended_until or row.due_at
        if deadline_value is None:
            continue
        deadline = utc(deadline_value)
        decided = utc(row.decided_at) if row.decided_at is not None else None
        if decided is not None and period.contains(decided) and row.status != "pending":
            review.decision(
                utc(row.opened_at), decided, deadline, deemed=row.status == "deemed-approved"
            )
            if row.extended_until is not None:
                review.extended += 1
        if _open_at(row.opened_at, row.decided_at, as_of) and row.application_status != "withdrawn":
            review.still_open(row.application_id, row.department, deadline, as_of)

    steps = (onboarding, compliance, review)
    overdue = sorted((item for s in steps for item in s.overdue), key=lambda i: i.due_at)
    return TimelinessSection(
        steps=tuple(s.result() for s in steps),
        overdue=tuple(overdue),
        uncovered_years=tuple(sorted(set().union(*(s.uncovered for s in steps)))),
    )


def _money(value: Any) -> Decimal:
    return Decimal(str(value if value is not None else 0)).quantize(_CENT)


def _cents(column: Any) -> Any:
    """A money column as whole cents: summed exactly on SQLite (whose NUMERIC is a float)
    as on PostgreSQL."""
    return func.coalesce(func.sum(cast(func.round(column * 100), BigInteger)), 0)


async def _products(conn: AsyncConnection, period: Period) -> ProductsSection:
    by_status = tuple(
        sorted(
            (str(s), int(n))
            for s, n in await conn.execute(
                select(ProductRow.status, func.count()).group_by(ProductRow.status)
            )
        )
    )
    registered = await conn.scalar(
        select(func.count()).select_from(ProductRow).where(_in(ProductRow.created_at, period))
    )
    traded = _in(TradeRow.traded_at, period)
    per_product = (
        await conn.execute(
            select(
                TradeRow.product_id,
                func.count(),
                func.coalesce(func.sum(TradeRow.quantity), 0),
                _cents(TradeRow.amount),
            )
            .where(traded)
            .group_by(TradeRow.product_id)
        )
    ).all()
    definitions = {
        str(pid): definition
        for pid, definition in await conn.execute(
            select(ProductRow.id, ProductRow.definition).where(
                ProductRow.id.in_([row[0] for row in per_product])
            )
        )
    }
    by_product = tuple(
        sorted(
            (
                ProductCount(
                    id=str(pid),
                    name=_product_name(definitions.get(str(pid))),
                    trades=int(n),
                    quantity=int(quantity),
                    amount=(Decimal(int(cents)) / 100).quantize(_CENT),
                )
                for pid, n, quantity, cents in per_product
            ),
            key=lambda p: (-p.amount, p.id),
        )
    )
    settlements = (
        await conn.execute(
            select(
                SettlementRow.id,
                SettlementRow.period,
                SettlementRow.amount,
                SettlementRow.settled_at,
            )
            .where(_in(SettlementRow.settled_at, period))
            .order_by(SettlementRow.settled_at, SettlementRow.id)
        )
    ).all()
    counts = {
        str(sid): int(n)
        for sid, n in await conn.execute(
            select(TradeRow.settlement_id, func.count())
            .where(TradeRow.settlement_id.in_([row.id for row in settlements]))
            .group_by(TradeRow.settlement_id)
        )
    }
    return ProductsSection(
        by_status=by_status,
        registered=int(registered or 0),
        trades=sum(p.trades for p in by_product),
        quantity=sum(p.quantity for p in by_product),
        amount=sum((p.amount for p in by_product), Decimal("0.00")),
        by_product=by_product,
        settlements=tuple(
            SettlementItem(
                id=str(row.id),
                period=str(row.period),
                amount=_money(row.amount),
                settled_at=utc(row.settled_at),
                trades=counts.get(str(row.id), 0),
            )
            for row in settlements
        ),
        revenue=(),
        revenue_months=(),
        months_without_settlement=(),
    )


def _product_name(definition: Any) -> str:
    if isinstance(definition, dict) and isinstance(definition.get("name"), str):
        return str(definition["name"])
    return ""
