"""The data plane: verification, masked query and suppressed aggregate, never raw export.

``DataPlane.execute`` runs one call for an already verified token, within the scope
:func:`gateway.authorization.decisions.decide_scope` decides. It returns the answer and fills
in the call record; the caller logs the record durably and only then sends the answer.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from connectors.base import Condition, RowQuery, Value
from gateway.authorization.decisions import decide_scope
from gateway.authorization.quotas import CallAllowance
from gateway.authorization.tokens import AccessClaims
from gateway.catalog.models import Dataset
from gateway.clock import Clock
from gateway.dataplane.aggregates import Aggregates
from gateway.dataplane.connectors import ConnectorRegistry
from gateway.dataplane.requests import (
    QueryRequest,
    VerifyRequest,
    parse_aggregate,
    parse_query,
    parse_verify,
)
from gateway.dataplane.values import json_value, jsonable
from gateway.errors import VerificationBudgetExhaustedError
from gateway.governance.models import DatasetGrant, Mode
from gateway.governance.policy import PolicySnapshot
from gateway.ledger.records import CallRecord, keyed_digest
from gateway.privacy.budget import PrivacyBudgets
from gateway.privacy.masking import mask
from gateway.privacy.overlap import OverlapAudit
from gateway.privacy.verify_budget import BudgetFigures, VerifyBudget, VerifyBudgets, subject_digest
from gateway.tracing.delivery import DeliveryTracing

__all__ = ["DataPlane"]


def _normalise(value: Value) -> Value:
    """Compare claimed and stored values the way a person would: full-width and
    half-width forms, surrounding spaces and letter case do not matter."""
    if isinstance(value, str):
        return unicodedata.normalize("NFKC", value).strip().upper()
    return value


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
        self._quotas = quotas
        self._clock = clock
        self._param_key = param_key
        self._tracing = tracing
        self._aggregates = Aggregates(
            connectors,
            clock,
            min_subjects=min_subjects,
            dp_key=hashlib.sha256(b"dsgw dp truncation order v1\x00" + param_key).digest(),
            budgets=budgets,
            overlap=overlap,
        )

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
                    op: (keyed_digest(self._param_key, v) if sensitive else jsonable(v))
                    for op, v in value.items()
                }
            else:
                logged[name] = (
                    keyed_digest(self._param_key, value) if sensitive else jsonable(value)
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
        scope = decide_scope(
            snapshot,
            token_scenario_id=claims.scenario_id,
            agreement_id=claims.agreement_id,
            scenario_id=scenario_id,
            dataset_id=dataset_id,
            mode_name=mode_name,
        )
        dataset, grant, mode = scope.dataset, scope.grant, scope.mode
        # Parse and record what was asked before anything runs, so a refusal is logged with
        # the request it refused; quota is taken only by calls that passed every check.
        filters = body.get("filters")
        if isinstance(filters, Mapping):
            self._record_params(dataset, filters, record)
        if mode is Mode.VERIFY:
            verify = parse_verify(body, dataset, grant, scenario_id)
            self._record_params(dataset, {**verify.key, **verify.claims}, record)
            record.fields = sorted([*verify.key, *verify.claims])
            budget = self._budget_for(dataset, verify, grant, scope.scenario_grant)
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
                if dataset_id in scope.agreement.subject_authorized
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
        return await self._aggregates.run(
            dataset,
            grant,
            scope.agreement,
            aggregate,
            record,
            claims.merchant_id or "",
            private=mode is Mode.AGGREGATE_DP,
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
                out[name] = mask(rule, value) if rule is not None else json_value(value)
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
