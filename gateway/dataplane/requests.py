"""Parsing and validating data-plane request bodies against a scenario's grant.

Everything a merchant sends is checked here before any connector sees it: unknown members
are refused, every field must be granted for its purpose, every value is coerced to the
field's declared type. A refusal names exactly what was refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from connectors.base import Condition, Measure, Operator, Value, coerce_value
from gateway.catalog.checks import expect_keys
from gateway.catalog.models import Dataset
from gateway.errors import OutOfScopeError, ValidationError
from gateway.governance.models import DatasetGrant

__all__ = [
    "AggregateRequest",
    "QueryRequest",
    "VerifyRequest",
    "parse_aggregate",
    "parse_query",
    "parse_verify",
]

OPERATORS: tuple[Operator, ...] = ("eq", "in", "gt", "gte", "lt", "lte", "prefix")
MAX_STRING = 256
MAX_IN_VALUES = 100
MAX_OFFSET = 10_000


@dataclass(frozen=True, slots=True)
class VerifyRequest:
    key: dict[str, Value]
    claims: dict[str, Value]


@dataclass(frozen=True, slots=True)
class QueryRequest:
    conditions: tuple[Condition, ...]
    fields: tuple[str, ...]
    limit: int
    offset: int


@dataclass(frozen=True, slots=True)
class AggregateRequest:
    conditions: tuple[Condition, ...]
    group_by: tuple[str, ...]
    measures: tuple[Measure, ...]


def _coerce(dataset: Dataset, name: str, raw: object) -> Value:
    if raw is None:
        raise ValidationError(f"{name}: null is not a value to match", field=name)
    if isinstance(raw, dict | list):
        raise ValidationError(f"{name}: expected a single value", field=name)
    if isinstance(raw, str) and len(raw) > MAX_STRING:
        raise ValidationError(f"{name}: value longer than {MAX_STRING} characters", field=name)
    spec = dataset.field(name)
    try:
        return coerce_value(spec.type, raw)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{name}: {exc}", field=name) from exc


def _refuse_fields(what: str, names: list[str], scenario_id: str, dataset_id: str) -> None:
    if names:
        raise OutOfScopeError(
            f"scenario {scenario_id} does not allow {what} field(s) {', '.join(sorted(names))} "
            f"of dataset {dataset_id}",
            refused={"fields": sorted(names), "purpose": what},
        )


def _known(dataset: Dataset, names: list[str]) -> None:
    unknown = sorted(set(names) - set(dataset.field_names))
    if unknown:
        raise ValidationError(
            f"dataset {dataset.id} has no field(s) {', '.join(unknown)}", fields=unknown
        )


def _conditions(
    raw: object, dataset: Dataset, grant: DatasetGrant, scenario_id: str
) -> tuple[Condition, ...]:
    if not isinstance(raw, Mapping):
        raise ValidationError("filters must be an object of field -> value or {op: value}")
    names = list(raw)
    _known(dataset, names)
    _refuse_fields(
        "filter", [n for n in names if n not in grant.filter_fields], scenario_id, dataset.id
    )
    conditions: list[Condition] = []
    for name, spec in raw.items():
        if not isinstance(spec, Mapping):
            conditions.append(Condition(name, "eq", _coerce(dataset, name, spec)))
            continue
        if not spec:
            raise ValidationError(f"filter on {name} is empty")
        for op, value in spec.items():
            if op not in OPERATORS:
                raise ValidationError(
                    f"filter on {name}: unknown operator {op!r}; use one of {', '.join(OPERATORS)}"
                )
            if op == "in":
                if not isinstance(value, list) or not 1 <= len(value) <= MAX_IN_VALUES:
                    raise ValidationError(
                        f"filter on {name}: 'in' takes a list of 1-{MAX_IN_VALUES} values"
                    )
                conditions.append(
                    Condition(name, "in", tuple(_coerce(dataset, name, v) for v in value))
                )
            elif op == "prefix":
                if dataset.field(name).type != "string":
                    raise ValidationError(f"filter on {name}: 'prefix' needs a string field")
                value = _coerce(dataset, name, value)
                if not isinstance(value, str) or len(value) < 2:
                    raise ValidationError(f"filter on {name}: prefix needs 2+ characters")
                conditions.append(Condition(name, "prefix", value))
            else:
                conditions.append(
                    Condition(name, cast(Operator, op), _coerce(dataset, name, value))
                )
    return tuple(conditions)


def _int(raw: object, name: str, low: int, high: int, default: int) -> int:
    if raw is None:
        return default
    if not isinstance(raw, int) or isinstance(raw, bool) or not low <= raw <= high:
        raise ValidationError(f"{name} must be an integer from {low} to {high}")
    return raw


def parse_verify(
    body: Mapping[str, Any], dataset: Dataset, grant: DatasetGrant, scenario_id: str
) -> VerifyRequest:
    expect_keys("verify request", body, {"values"})
    values = body["values"]
    if not isinstance(values, Mapping) or not values:
        raise ValidationError("values must be a non-empty object of field -> claimed value")
    names = list(values)
    _known(dataset, names)
    _refuse_fields(
        "verify", [n for n in names if n not in grant.verify_fields], scenario_id, dataset.id
    )
    missing = [k for k in dataset.key_fields if k not in values]
    if missing:
        raise ValidationError(
            f"values must include the key field(s) {', '.join(missing)} of {dataset.id}"
        )
    coerced = {name: _coerce(dataset, name, raw) for name, raw in values.items()}
    key = {k: coerced[k] for k in dataset.key_fields}
    claims = {k: v for k, v in coerced.items() if k not in key}
    if not claims:
        raise ValidationError("values must claim at least one field besides the key")
    return VerifyRequest(key=key, claims=claims)


def parse_query(
    body: Mapping[str, Any], dataset: Dataset, grant: DatasetGrant, scenario_id: str
) -> QueryRequest:
    expect_keys("query request", body, {"filters"}, {"fields", "limit", "offset"})
    conditions = _conditions(body["filters"], dataset, grant, scenario_id)
    if not conditions:
        raise ValidationError("a query needs at least one filter; bulk export is not offered")
    if grant.required_filters and not any(
        c.field in grant.required_filters and c.op in ("eq", "in") for c in conditions
    ):
        raise ValidationError(
            "this scenario requires an equality filter on one of "
            + ", ".join(grant.required_filters)
        )
    raw_fields = body.get("fields")
    if raw_fields is None:
        fields = grant.fields
    else:
        if (
            not isinstance(raw_fields, list)
            or not raw_fields
            or any(not isinstance(f, str) for f in raw_fields)
        ):
            raise ValidationError("fields must be a non-empty list of field names")
        _known(dataset, raw_fields)
        _refuse_fields(
            "return", [f for f in raw_fields if f not in grant.fields], scenario_id, dataset.id
        )
        fields = tuple(dict.fromkeys(raw_fields))
    limit = _int(body.get("limit"), "limit", 1, grant.row_cap, min(50, grant.row_cap))
    offset = _int(body.get("offset"), "offset", 0, MAX_OFFSET, 0)
    return QueryRequest(conditions, fields, limit, offset)


def parse_aggregate(
    body: Mapping[str, Any], dataset: Dataset, grant: DatasetGrant, scenario_id: str
) -> AggregateRequest:
    expect_keys("aggregate request", body, {"group_by", "measures"}, {"filters"})
    group_by = body["group_by"]
    if (
        not isinstance(group_by, list)
        or not group_by
        or any(not isinstance(g, str) for g in group_by)
    ):
        raise ValidationError("group_by must be a non-empty list of field names")
    _known(dataset, group_by)
    _refuse_fields(
        "group_by", [g for g in group_by if g not in grant.group_by], scenario_id, dataset.id
    )
    raw_measures = body["measures"]
    if not isinstance(raw_measures, list) or not 1 <= len(raw_measures) <= 10:
        raise ValidationError("measures must be a list of 1-10 {fn, field} objects")
    measures: list[Measure] = []
    for item in raw_measures:
        if not isinstance(item, Mapping):
            raise ValidationError('each measure must be an object like {"fn": "count"}')
        expect_keys("measure", item, {"fn"}, {"field"})
        fn, name = item["fn"], item.get("field")
        if fn == "count":
            if name is not None:
                raise ValidationError("count takes no field; it counts records")
            measures.append(Measure("count"))
        elif fn in ("sum", "avg"):
            if not isinstance(name, str):
                raise ValidationError(f"{fn} needs a field")
            _known(dataset, [name])
            _refuse_fields(
                "measure",
                [name] if name not in grant.measure_fields else [],
                scenario_id,
                dataset.id,
            )
            measures.append(Measure(fn, name))
        else:
            raise ValidationError(f"unknown measure function {fn!r}; use count, sum or avg")
    conditions = _conditions(body.get("filters", {}), dataset, grant, scenario_id)
    return AggregateRequest(conditions, tuple(dict.fromkeys(group_by)), tuple(measures))
