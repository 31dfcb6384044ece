"""The data plane: verification, masked query and suppressed aggregate, never raw export.

``DataPlane.execute`` decides and runs one call for an already verified token. It returns
the answer and fills in the call record; the caller logs the record durably and only then
sends the answer.
"""

from __future__ import annotations

import hashlib
import math
import unicodedata
from collections.abc import Mapping
from dataclasses import replace
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy.engine import URL

from connectors._query import average
from connectors.base import (
    AggregateQuery,
    Condition,
    Connector,
    Measure,
    Row,
    RowQuery,
    Value,
)
from connectors.csv_file import CsvConnector
from connectors.sql import SqlConnector
from gateway.authorization.quotas import CallAllowance
from gateway.authorization.tokens import AccessClaims
from gateway.catalog.models import Dataset
from gateway.catalog.sources import FilePlace, SourceAccess
from gateway.clock import Clock
from gateway.dataplane.requests import (
    AggregateRequest,
    QueryRequest,
    VerifyRequest,
    parse_aggregate,
    parse_query,
    parse_verify,
)
from gateway.errors import (
    AuditScopeError,
    ConfigError,
    OutOfScopeError,
    ValidationError,
    VerificationBudgetExhaustedError,
)
from gateway.governance.models import Agreement, DatasetGrant, Mode, PrivacyBudget
from gateway.governance.policy import PolicySnapshot
from gateway.ledger.records import CallRecord, keyed_digest
from gateway.privacy.budget import PrivacyBudgets
from gateway.privacy.dp import CI95_FACTOR, SubjectCell, plan_release, truncate
from gateway.privacy.masking import mask
from gateway.privacy.overlap import OverlapAudit
from gateway.privacy.verify_budget import BudgetFigures, VerifyBudget, VerifyBudgets, subject_digest
from gateway.supervision.measures import MeasureKind
from gateway.tracing.delivery import DeliveryTracing

__all__ = ["ConnectorRegistry", "DataPlane"]

AVG_QUANTUM = Decimal("0.0001")
DP_FETCH_LIMIT = 1_000_000
"""Most (group, subject) pairs a differentially private aggregate reads; beyond, the call is
refused (narrow it with filters) rather than answered from a silently cut subset."""
DP_DIGITS = 4


class ConnectorRegistry:
    """One connector per dataset source, opened on first use and reused.

    Every opening goes through :class:`SourceAccess`: the source's place is checked against
    the allow-list again (an entry stored before the list changed cannot escape it) and its
    credentials are resolved; the connector gets the resolved path or the URL with the
    password, which never leaves this process."""

    def __init__(self, sources: SourceAccess, *, pool_size: int = 4) -> None:
        self._sources = sources
        self._pool_size = pool_size
        self._connectors: dict[str, tuple[Dataset, Connector]] = {}
        self._retired: list[Connector] = []

    async def get(self, dataset: Dataset) -> Connector:
        cached = self._connectors.get(dataset.id)
        if cached is not None and cached[0] == dataset:
            return cached[1]
        fields = {spec.name: spec.type for spec in dataset.fields}
        opened = await self._sources.open(dataset)
        place = opened.place
        connector: Connector
        if dataset.source.kind == "sql":
            if isinstance(place, FilePlace):
                url = URL.create("sqlite", database=str(place.path))
            else:
                url = place.url.set(password=opened.password)
            connector = SqlConnector(url, dataset.source.table, fields, pool_size=self._pool_size)
        elif isinstance(place, FilePlace):
            connector = CsvConnector(place.path, fields, index_fields=dataset.key_fields)
        else:
            raise ConfigError(f"dataset {dataset.id}: unknown source kind {dataset.source.kind}")
        # A changed definition replaces the connector; the old one is closed by close().
        cached = self._connectors.get(dataset.id)
        if cached is not None:
            if cached[0] == dataset:  # another call opened it meanwhile: keep that one
                await connector.close()
                return cached[1]
            self._retired.append(cached[1])
        self._connectors[dataset.id] = (dataset, connector)
        return connector

    async def close(self) -> None:
        for _dataset, connector in self._connectors.values():
            await connector.close()
        for connector in self._retired:
            await connector.close()
        self._connectors.clear()
        self._retired.clear()


def _normalise(value: Value) -> Value:
    """Compare claimed and stored values the way a person would: full-width and
    half-width forms, surrounding spaces and letter case do not matter."""
    if isinstance(value, str):
        return unicodedata.normalize("NFKC", value).strip().upper()
    return value


def _json_value(value: Value) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if value is None or isinstance(value, bool | int | str):
        return value
    return value.isoformat()


class DataPlane:
    def __init__(
        self,
        connectors: ConnectorRegistry,
        quotas: CallAllowance,
        clock: Clock,
        *,
        min_subjects: int,
        param_key: bytes,
        tracing: DeliveryTracing,
        verify_budgets: VerifyBudgets,
        default_verify_budget: VerifyBudget,
        budgets: PrivacyBudgets | None = None,
        overlap: OverlapAudit | None = None,
    ) -> None:
        self._connectors = connectors
        self._verify_budgets = verify_budgets
        self._default_verify_budget = default_verify_budget
        self._budgets = budgets
        # Orders a subject's groups for truncation to L (gateway.privacy.dp.truncate).
        self._dp_key = hashlib.sha256(b"dsgw dp truncation order v1\x00" + param_key).digest()
        self._quotas = quotas
        self._clock = clock
        self._min_subjects = min_subjects
        self._param_key = param_key
        self._tracing = tracing
        # None: the overlap audit is switched off (aggregate_overlap_min = 0).
        self._overlap = overlap

    def _record_params(
        self, dataset: Dataset, params: Mapping[str, Any], record: CallRecord
    ) -> None:
        """Log what was asked, with values of sensitive fields as keyed digests."""
        logged: dict[str, Any] = {}
        for name, value in params.items():
            try:
                sensitive = dataset.field(name).sensitive is not None
            except KeyError:
                sensitive = False
            if isinstance(value, Mapping):
                logged[name] = {
                    op: (keyed_digest(self._param_key, v) if sensitive else _jsonable(v))
                    for op, v in value.items()
                }
            else:
                logged[name] = (
                    keyed_digest(self._param_key, value) if sensitive else _jsonable(value)
                )
        record.parameters = logged

    async def execute(
        self,
        snapshot: PolicySnapshot,
        claims: AccessClaims,
        scenario_id: str,
        dataset_id: str,
        mode_name: str,
        body: Mapping[str, Any],
        record: CallRecord,
    ) -> dict[str, Any]:
        """Decide and run one data call. Raises a :class:`DsgwError` for every refusal."""
        if claims.scenario_id != scenario_id:
            raise OutOfScopeError(
                f"the token is for scenario {claims.scenario_id}; this call names scenario "
                f"{scenario_id} (one scenario, one authorization)",
                refused={"scenario": scenario_id},
            )
        scenario = snapshot.scenarios[scenario_id]
        scenario_grant = scenario.grant(dataset_id)
        if scenario_grant is None:
            raise OutOfScopeError(
                f"scenario {scenario_id} does not include dataset {dataset_id}",
                refused={"dataset": dataset_id},
            )
        # The agreement's scope (its approved requirement list) narrows the scenario's grant.
        agreement = snapshot.agreements.get(claims.agreement_id or "")
        grant = agreement.grant(scenario, dataset_id) if agreement is not None else None
        if grant is None:
            raise OutOfScopeError(
                f"agreement {claims.agreement_id} does not cover dataset {dataset_id}: it was "
                "not in the approved requirement list",
                refused={"dataset": dataset_id},
            )
        try:
            mode = Mode(mode_name)
        except ValueError:
            raise ValidationError(f"unknown access mode {mode_name!r}") from None
        if mode not in grant.modes:
            whose = (
                f"scenario {scenario_id}"
                if mode not in scenario_grant.modes
                else f"the approved requirement list of agreement {claims.agreement_id}"
            )
            raise OutOfScopeError(
                f"{whose} does not allow {mode.value} on dataset {dataset_id}",
                refused={"mode": mode.value},
            )
        dataset = snapshot.datasets.get(dataset_id)
        if dataset is None or not dataset.grantable:
            # Catalog changed under a published scenario: fail closed.
            raise OutOfScopeError(
                f"dataset {dataset_id} is not available for operation",
                refused={"dataset": dataset_id},
            )
        # Supply suspended by a supervision measure (ZW art. 27): every scenario, every mode.
        snapshot.check_measure(MeasureKind.DATASET_SUPPLY, dataset_id)
        # Parse and record what was asked before anything runs, so a refusal is logged with
        # the request it refused; quota is taken only by calls that passed every check.
        filters = body.get("filters")
        if isinstance(filters, Mapping):
            self._record_params(dataset, filters, record)
        if mode is Mode.VERIFY:
            verify = parse_verify(body, dataset, grant, scenario_id)
            self._record_params(dataset, {**verify.key, **verify.claims}, record)
            record.fields = sorted([*verify.key, *verify.claims])
            budget = self._budget_for(dataset, verify, grant, scenario_grant)
            if budget is None:
                await self._consume(claims, scenario_id, snapshot)
                return await self._verify(dataset, grant.reveal_mismatch, verify)
            return await self._budgeted_verify(
                budget, claims, snapshot, scenario_id, dataset, grant, verify, record
            )
        if mode is Mode.QUERY:
            query = parse_query(body, dataset, grant, scenario_id)
            record.parameters["limit"] = query.limit
            record.parameters["offset"] = query.offset
            record.fields = list(query.fields)
            await self._consume(claims, scenario_id, snapshot)
            clear = (
                frozenset(grant.clear_fields)
                if agreement is not None and dataset_id in agreement.subject_authorized
                else frozenset()
            )
            return await self._query(dataset, query, record, claims.merchant_id or "", clear)
        aggregate = parse_aggregate(body, dataset, grant, scenario_id)
        record.parameters["group_by"] = list(aggregate.group_by)
        record.parameters["measures"] = [m.name for m in aggregate.measures]
        record.fields = sorted(
            {*aggregate.group_by, *(m.field for m in aggregate.measures if m.field)}
        )
        await self._consume(claims, scenario_id, snapshot)
        if mode is Mode.AGGREGATE_DP:
            if agreement is None or grant.privacy is None:
                raise ConfigError(f"dataset {dataset_id}: aggregate-dp granted without a budget")
            return await self._aggregate_dp(dataset, aggregate, grant.privacy, agreement, record)
        if self._overlap is None:
            return await self._aggregate(dataset, aggregate, record)
        return await self._audited_aggregate(
            self._overlap, dataset, grant, aggregate, record, claims.merchant_id or ""
        )

    async def _consume(
        self, claims: AccessClaims, scenario_id: str, snapshot: PolicySnapshot
    ) -> None:
        scenario = snapshot.scenarios[scenario_id]
        await self._quotas.consume(
            claims.merchant_id or "", scenario.id, scenario.quotas, self._clock.now()
        )

    def _budget_for(
        self,
        dataset: Dataset,
        request: VerifyRequest,
        grant: DatasetGrant,
        scenario_grant: DatasetGrant,
    ) -> VerifyBudget | None:
        """The verification budget of a call claiming a sensitive field: the agreement's
        grant's, else the scenario's, else the deployment's default. Claims of fields the
        catalog does not class sensitive are not budgeted (docs/privacy.md)."""
        if not any(dataset.field(name).sensitive is not None for name in request.claims):
            return None
        return grant.verify_budget or scenario_grant.verify_budget or self._default_verify_budget

    async def _budgeted_verify(
        self,
        budget: VerifyBudget,
        claims: AccessClaims,
        snapshot: PolicySnapshot,
        scenario_id: str,
        dataset: Dataset,
        grant: DatasetGrant,
        request: VerifyRequest,
        record: CallRecord,
    ) -> dict[str, Any]:
        """A verify within its budget: refused before it runs when the subject's negatives
        reached the bound; a negative answer is counted (committed) before it is returned,
        and refused instead if concurrent calls took the last of the bound meanwhile. The
        record keeps the figures either way."""
        agreement_id = claims.agreement_id or ""
        subject = subject_digest(self._param_key, [_normalise(v) for v in request.key.values()])
        try:
            figures = await self._verify_budgets.check(
                budget, agreement_id, dataset.id, subject, self._clock.now()
            )
            await self._consume(claims, scenario_id, snapshot)
            result = await self._verify(dataset, grant.reveal_mismatch, request)
            if result["match"]:
                figures = replace(figures, negative=False)
            else:
                figures = await self._verify_budgets.spend(
                    figures, agreement_id, dataset.id, self._clock.now()
                )
        except VerificationBudgetExhaustedError as err:
            if isinstance(err.figures, BudgetFigures):
                record.parameters["verify_budget"] = err.figures.to_dict()
            raise
        record.parameters["verify_budget"] = figures.to_dict()
        return result

    async def _verify(
        self, dataset: Dataset, reveal: bool, request: VerifyRequest
    ) -> dict[str, Any]:
        rows = await (await self._connectors.get(dataset)).fetch(
            RowQuery(
                fields=tuple(request.claims),
                conditions=tuple(Condition(k, "eq", v) for k, v in request.key.items()),
                order_by=dataset.key_fields,
                limit=2,
            )
        )
        if len(rows) == 1:
            stored = rows[0]
            mismatched = sorted(
                name
                for name, claimed in request.claims.items()
                if _normalise(claimed) != _normalise(stored.get(name))
            )
        else:
            # Unknown key: report every submitted field, so a mismatch and an absence look
            # the same and the answer does not confirm whether the subject exists.
            mismatched = sorted([*request.key, *request.claims])
        result: dict[str, Any] = {"match": not mismatched}
        if reveal:
            result["mismatched"] = mismatched
        return result

    async def _query(
        self,
        dataset: Dataset,
        request: QueryRequest,
        record: CallRecord,
        merchant_id: str,
        clear: frozenset[str] = frozenset(),
    ) -> dict[str, Any]:
        """Sensitive fields are masked, except ``clear`` ones: fields the grant may deliver
        unmasked under an agreement carrying the subjects' authorization.

        The only answer that delivers rows, hence the one traced (gateway.tracing): the
        recipient's marks and canary rows go into the answer, the rows' keyed hashes and
        the canary ids into the call record. Canaries never lengthen a page: a real row
        they displace opens the next page, which ``next_offset`` counts in real rows."""
        rows = await (await self._connectors.get(dataset)).fetch(
            RowQuery(
                fields=request.fields,
                conditions=request.conditions,
                order_by=dataset.key_fields,
                limit=request.limit,
                offset=request.offset,
            )
        )
        rules = {
            spec.name: spec.sensitive
            for spec in dataset.fields
            if spec.sensitive and spec.name not in clear
        }

        def render(row: Mapping[str, Any]) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for name in request.fields:
                value = row.get(name)
                rule = rules.get(name)
                out[name] = mask(rule, value) if rule is not None else _json_value(value)
            return out

        page = self._tracing.page(
            dataset,
            merchant_id,
            request.fields,
            rows,
            render=render,
            masked=rules.keys(),
            conditions=request.conditions,
            limit=request.limit,
        )
        out_rows = page.rows
        record.rows = len(out_rows)
        record.mark_id = page.mark_id
        record.canaries = page.canaries
        record.rows_digest = page.rows_digest
        record.trace_hashes = page.trace_hashes
        more = len(rows) == request.limit or page.real_rows < len(rows)
        return {
            "rows": out_rows,
            "count": len(out_rows),
            "limit": request.limit,
            "offset": request.offset,
            "next_offset": request.offset + page.real_rows if more else None,
            "masked_fields": sorted(n for n in request.fields if n in rules),
        }

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
                    rows=_rows(row.get("count")),
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
                name: _json_value(value)
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
    group: dict[str, Any] = {name: _json_value(row.get(name)) for name in request.group_by}
    for measure in request.measures:
        value = row.get(measure.name)
        if measure.fn == "avg" and isinstance(value, Decimal):
            value = value.quantize(AVG_QUANTUM, rounding=ROUND_HALF_EVEN)
        group[measure.name] = _json_value(value)
    return group


def _jsonable(value: Any) -> Any:
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return str(value)
    return value


def _rows(value: Value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _decimal_or_none(value: Value) -> Decimal | None:
    if value is None or isinstance(value, Decimal):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    raise ConfigError(f"aggregate-dp: a sum came back as {type(value).__name__}")
