"""The facts of the periodic operations report (CS23 art. 23; ZW art. 31-33), gathered into
dataclasses.

The operator reports and discloses its operation periodically, and is evaluated yearly on,
among other things, how quickly applications are reviewed. So the report counts calls per
scenario and merchant (:mod:`.call_section`), measures review timeliness against the
working-day deadlines of the workflows (:mod:`.timeliness`), and sums products, trades,
settlements (:mod:`.product_section`) and the revenue statements of the period (here).
The circular on source departments (ZW art. 31) comes from :mod:`gateway.reports.circular`,
a year's ratings of the operator (ZW art. 33) from :mod:`gateway.reports.evaluation`.
Formatting lives in :mod:`gateway.reports.render`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import NotFoundError
from gateway.products.revenue import Statement
from gateway.reports.call_section import CallsSection, gather_calls
from gateway.reports.circular import DepartmentsSection, gather_departments
from gateway.reports.evaluation import EvaluationSection, gather_evaluation
from gateway.reports.header import Names, ReportHeader
from gateway.reports.product_section import ProductsSection, RevenueTotal, gather_products
from gateway.reports.timeliness import TimelinessSection, gather_timeliness
from gateway.workdays.calendar import WorkingCalendar

__all__ = ["OperationsReport", "RevenueSource", "gather_operations"]


RevenueSource = Callable[[str], Awaitable[list[Statement]]]
"""The revenue statements of one settlement month (``ProductService.revenue``)."""


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
        calls = await gather_calls(conn, period, names)
        timeliness = await gather_timeliness(conn, period, header.as_of, calendar)
        products = await gather_products(conn, period)
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
