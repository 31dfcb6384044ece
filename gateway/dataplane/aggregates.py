"""Aggregates of the data plane: small cells suppressed, the overlap audit, and the
differentially private aggregate under a per-agreement budget (docs/privacy.md).

Each kind reads from the dataset's connector and fills in the call record; which one runs is
the call's mode (and whether the overlap audit is switched on).
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from connectors._query import average
from connectors.base import AggregateQuery, Measure, Row, Value
from gateway.catalog.models import Dataset
from gateway.clock import Clock
from gateway.dataplane.connectors import ConnectorRegistry
from gateway.dataplane.requests import AggregateRequest
from gateway.dataplane.values import json_value
from gateway.errors import AuditScopeError, ConfigError, OutOfScopeError, ValidationError
from gateway.governance.models import Agreement, DatasetGrant, PrivacyBudget
from gateway.ledger.records import CallRecord
from gateway.privacy.budget import PrivacyBudgets
from gateway.privacy.dp import CI95_FACTOR, SubjectCell, plan_release, truncate
from gateway.privacy.overlap import OverlapAudit

__all__ = ["Aggregates"]

AVG_QUANTUM = Decimal("0.0001")
DP_FETCH_LIMIT = 1_000_000
"""Most (group, subject) pairs a differentially private aggregate reads; beyond, the call is
refused (narrow it with filters) rather than answered from a silently cut subset."""
DP_DIGITS = 4


class Aggregates:
    """Runs the aggregate modes for :class:`~gateway.dataplane.service.DataPlane`."""

    def __init__(
        self,
        connectors: ConnectorRegistry,
        clock: Clock,
        *,
        min_subjects: int,
        dp_key: bytes,
        budgets: PrivacyBudgets | None,
        overlap: OverlapAudit | None,
    ) -> None:
        self._connectors = connectors
        self._clock = clock
        self._min_subjects = min_subjects
        # Orders a subject's groups for truncation to L (gateway.privacy.dp.truncate).
        self._dp_key = dp_key
        self._budgets = budgets
        # None: the overlap audit is switched off (aggregate_overlap_min = 0).
        self._overlap = overlap

    async def run(
        self,
        dataset: Dataset,
        grant: DatasetGrant,
        agreement: Agreement,
        request: AggregateRequest,
        record: CallRecord,
        merchant_id: str,
        *,
        private: bool,
    ) -> dict[str, Any]:
        """One aggregate: differentially private if ``private`` (mode ``aggregate-dp``),
        else suppressed and, when the overlap audit is on, audited."""
        if private:
            if grant.privacy is None:
                raise ConfigError(f"dataset {dataset.id}: aggregate-dp granted without a budget")
            return await self._aggregate_dp(dataset, request, grant.privacy, agreement, record)
        if self._overlap is None:
            return await self._aggregate(dataset, request, record)
        return await self._audited_aggregate(
            self._overlap, dataset, grant, request, record, merchant_id
        )

    async def _aggregate(
        self, dataset: Dataset, request: AggregateRequest, record: CallRecord
    ) -> dict[str, Any]:
        rows = await (await self._connectors.get(dataset)).aggregate(
            AggregateQuery(
                group_by=request.group_by,
                measures=request.measures,
                subject_field=dataset.subject_field,
                conditions=request.conditions,
            )
        )
        groups: list[dict[str, Any]] = []
        suppressed = 0
        for row in rows:
            subjects = row.get("_subjects")
            if not isinstance(subjects, int) or subjects < self._min_subjects:
                suppressed += 1
                continue
            groups.append(_group(request, row))
        record.rows = len(groups)
        return {
            "groups": groups,
            "suppressed_groups": suppressed,
            "withheld_groups": 0,
            "min_subjects": self._min_subjects,
        }

    async def _aggregate_dp(
        self,
        dataset: Dataset,
        request: AggregateRequest,
        budget: PrivacyBudget,
        agreement: Agreement,
        record: CallRecord,
    ) -> dict[str, Any]:
        """A differentially private aggregate (gateway.privacy.dp): subject-level rows are
        read, truncated to L groups per subject and released with calibrated noise, after
        the call's ε and δ are spent and committed (gateway.privacy.budget). The spend goes
        into the call record, so it is anchored with it."""
        if self._budgets is None:
            raise ConfigError("aggregate-dp: no privacy budget store is configured")
        summed = tuple(dict.fromkeys(m.field for m in request.measures if m.field))
        bounds: list[tuple[str, float, float]] = []
        for name in summed:
            declared = dataset.field(name).bounds
            if declared is None:  # the catalog changed under the scenario: fail closed
                raise OutOfScopeError(
                    f"field {name} of {dataset.id} declares no bounds; aggregate-dp refuses it",
                    refused={"fields": [name], "purpose": "measure"},
                )
            bounds.append((name, float(declared[0]), float(declared[1])))
        subject = dataset.subject_field
        rows = await (await self._connectors.get(dataset)).aggregate(
            AggregateQuery(
                group_by=(*request.group_by, subject),
                measures=(Measure("count"), *(Measure("sum", name) for name in summed)),
                subject_field=subject,
                conditions=request.conditions,
                limit=DP_FETCH_LIMIT + 1,
            )
        )
        if len(rows) > DP_FETCH_LIMIT:
            raise ValidationError(
                f"aggregate-dp reads at most {DP_FETCH_LIMIT} (group, subject) pairs; this "
                "call matches more: narrow it with filters"
            )
        cells = truncate(
            (
                SubjectCell(
                    group=tuple(row.get(g) for g in request.group_by),
                    subject=row.get(subject),
                    rows=_int(row.get("count")),
                    totals={name: _decimal_or_none(row.get(f"sum_{name}")) for name in summed},
                )
                for row in rows
            ),
            budget.max_groups_per_subject,
            self._dp_key,
        )
        # Built (and its OpenDP maps checked) before spending, so a plan that cannot be
        # trusted costs the merchant nothing; noise is drawn only after the spend commits.
        plan = plan_release(
            budget.call_epsilon, budget.call_delta, budget.max_groups_per_subject, tuple(bounds)
        )
        spend = await self._budgets.spend(agreement, dataset.id, budget, self._clock.now())
        record.parameters["privacy"] = spend.record_dict()
        release = plan.run(cells)
        count_half = release.count_scale * CI95_FACTOR
        groups: list[dict[str, Any]] = []
        for noisy in release.groups:
            group: dict[str, Any] = {
                name: json_value(value)
                for name, value in zip(request.group_by, noisy.key, strict=True)
            }
            ci: dict[str, float] = {}
            for measure in request.measures:
                if measure.fn == "count":
                    group[measure.name] = noisy.count
                    ci[measure.name] = round(count_half, DP_DIGITS)
                    continue
                assert measure.field is not None
                total = noisy.sums[measure.field]
                scale = release.sum_scales[measure.field]
                if measure.fn == "sum":
                    group[measure.name] = round(total, DP_DIGITS)
                    ci[measure.name] = round(scale * CI95_FACTOR, DP_DIGITS)
                    continue
                low, high = plan.bounds[measure.field]
                count = max(noisy.count, 1)
                mean = min(max(total / count, low), high)
                # Delta method: Var(S/C) ~ (Var S + mean^2 Var C) / C^2, Var = 2 b^2.
                spread = math.sqrt(2 * scale**2 + mean**2 * 2 * release.count_scale**2)
                group[measure.name] = round(mean, DP_DIGITS)
                ci[measure.name] = round(1.96 * spread / count, DP_DIGITS)
            group["ci95"] = ci
            groups.append(group)
        record.rows = len(groups)
        noise: dict[str, Any] = {
            "count": {
                "mechanism": "discrete laplace with threshold (subjects)",
                "scale": release.count_scale,
                "ci95": round(count_half, DP_DIGITS),
                "threshold": release.threshold,
            }
        }
        for name in summed:
            low, high = plan.bounds[name]
            noise[f"sum_{name}"] = {
                "mechanism": "laplace",
                "scale": release.sum_scales[name],
                "ci95": round(release.sum_scales[name] * CI95_FACTOR, DP_DIGITS),
                "bounds": [low, high],
            }
        return {
            "groups": groups,
            "noise": noise,
            "epsilon": budget.call_epsilon,
            "delta": budget.call_delta,
            "max_groups_per_subject": budget.max_groups_per_subject,
            "budget": spend.answer_dict(),
        }

    async def _audited_aggregate(
        self,
        audit: OverlapAudit,
        dataset: Dataset,
        grant: DatasetGrant,
        request: AggregateRequest,
        record: CallRecord,
        merchant_id: str,
    ) -> dict[str, Any]:
        """The aggregate under the overlap audit (gateway.privacy.overlap).

        One subject-level fetch (the groups extended by the subject, with the row count and
        the sum and count of every measure field of the grant) serves both the answer and
        the audit, so the cells audited are exactly the cells answered even while the source
        changes. Cells below ``min_subjects`` are suppressed as before; the others go to the
        audit, which withholds those too close to a cell answered before."""
        subject = dataset.subject_field
        numeric = tuple(
            f for f in grant.measure_fields if dataset.field(f).type in ("integer", "decimal")
        )
        others = tuple(f for f in grant.measure_fields if f not in numeric)
        contribution = (
            Measure("count"),
            *(m for f in numeric for m in (Measure("sum", f), Measure("count", f))),
            *(Measure("count", f) for f in others),
        )
        keys = request.group_by if subject in request.group_by else (*request.group_by, subject)
        rows = await (await self._connectors.get(dataset)).aggregate(
            AggregateQuery(
                group_by=keys,
                measures=contribution,
                subject_field=subject,
                conditions=request.conditions,
                limit=audit.max_subject_rows + 1,
            )
        )
        if len(rows) > audit.max_subject_rows:
            raise AuditScopeError(
                f"this aggregate covers more than {audit.max_subject_rows} subject-level rows, "
                "more than the overlap audit checks in one call; narrow the filters (a month, "
                "a list of employers) or group by fewer fields",
                max_rows=audit.max_subject_rows,
            )
        cells: dict[tuple[Value, ...], _Cell] = {}
        names = [m.name for m in contribution]
        for row in rows:
            key = tuple(row.get(name) for name in request.group_by)
            cell = cells.get(key)
            if cell is None:
                cell = cells[key] = _Cell(row, numeric)
            who = row.get(subject)
            cell.add(row, numeric, audit.element(who, [row.get(name) for name in names]))
            # Rows without a subject count in the sums (and in the sketch, as one element)
            # but not as a subject, as COUNT(DISTINCT subject) does in the plain aggregate.
            cell.subjects += who is not None
        answerable = [c for c in cells.values() if c.subjects >= self._min_subjects]
        outcome = await audit.admit(
            merchant_id, dataset.id, [audit.sketch(c.elements) for c in answerable]
        )
        groups = [
            _group(request, cell.result(request))
            for cell, answered in zip(answerable, outcome.answered, strict=True)
            if answered
        ]
        record.rows = len(groups)
        record.parameters["audit"] = {"withheld": outcome.withheld, "compared": outcome.compared}
        return {
            "groups": groups,
            "suppressed_groups": len(cells) - len(answerable),
            "withheld_groups": outcome.withheld,
            "min_subjects": self._min_subjects,
        }


class _Cell:
    """One group's totals, summed from its subject-level rows, and its subjects' elements."""

    __slots__ = ("counts", "elements", "first", "rows", "subjects", "sums")

    def __init__(self, first: Row, numeric: tuple[str, ...]) -> None:
        self.first = first
        self.rows = 0
        self.subjects = 0
        self.sums: dict[str, Decimal | None] = dict.fromkeys(numeric)
        self.counts: dict[str, int] = dict.fromkeys(numeric, 0)
        self.elements: list[int] = []

    def add(self, row: Row, numeric: tuple[str, ...], element: int) -> None:
        self.rows += _int(row.get("count"))
        for name in numeric:
            value = row.get(f"sum_{name}")
            if isinstance(value, Decimal):
                total = self.sums[name]
                self.sums[name] = value if total is None else total + value
            self.counts[name] += _int(row.get(f"count_{name}"))
        self.elements.append(element)

    def result(self, request: AggregateRequest) -> Row:
        """The group as the connector's own aggregate would have returned it."""
        out: Row = {name: self.first.get(name) for name in request.group_by}
        for measure in request.measures:
            if measure.fn == "count":
                out[measure.name] = self.rows
            elif measure.field is not None:
                total = self.sums.get(measure.field)
                out[measure.name] = (
                    total
                    if measure.fn == "sum"
                    else average(total, self.counts.get(measure.field, 0))
                )
        return out


def _int(value: Value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _group(request: AggregateRequest, row: Row) -> dict[str, Any]:
    group: dict[str, Any] = {name: json_value(row.get(name)) for name in request.group_by}
    for measure in request.measures:
        value = row.get(measure.name)
        if measure.fn == "avg" and isinstance(value, Decimal):
            value = value.quantize(AVG_QUANTUM, rounding=ROUND_HALF_EVEN)
        group[measure.name] = json_value(value)
    return group


def _decimal_or_none(value: Value) -> Decimal | None:
    if value is None or isinstance(value, Decimal):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    raise ConfigError(f"aggregate-dp: a sum came back as {type(value).__name__}")
