"""Query checks and decimal arithmetic shared by every connector.

Each backend must refuse exactly the same queries and compute exactly the same numbers, or
an answer would depend on where a dataset happens to be stored. So the checks (field names,
operator/value shapes, value types) and the arithmetic contexts live here once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import ROUND_HALF_EVEN, Context, Decimal

from connectors.base import AggregateQuery, Condition, FieldType, RowQuery, Value, coerce_value

__all__ = [
    "AVG_CONTEXT",
    "NUMERIC_TYPES",
    "SUBJECTS",
    "SUM_CONTEXT",
    "average",
    "check_aggregate_query",
    "check_row_query",
]

#: Name of the distinct-subject count every aggregate row carries.
SUBJECTS = "_subjects"
#: Field types ``sum`` and ``avg`` accept.
NUMERIC_TYPES: frozenset[FieldType] = frozenset({"integer", "decimal"})
#: Sums are exact for any realistic data: 50 significant digits, more than PostgreSQL's
#: ``numeric`` sums of money-like columns ever need.
SUM_CONTEXT = Context(prec=50, rounding=ROUND_HALF_EVEN)
#: Averages are ``sum / count`` to 28 significant digits, rounded half-even. A private
#: context rather than the thread's current one, so a caller's ``localcontext`` cannot make
#: the same query answer differently.
AVG_CONTEXT = Context(prec=28, rounding=ROUND_HALF_EVEN)

_ORDERED_OPS = frozenset({"gt", "gte", "lt", "lte"})


def _field_type(fields: Mapping[str, FieldType], name: str, where: str) -> FieldType:
    try:
        return fields[name]
    except KeyError:
        known = ", ".join(sorted(fields))
        raise ValueError(f"unknown field {name!r} in {where}; known fields: {known}") from None


def _coerce(type_: FieldType, name: str, raw: object) -> Value:
    try:
        return coerce_value(type_, raw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"condition on {name!r}: {exc}") from None


def _check_condition(fields: Mapping[str, FieldType], cond: Condition) -> Condition:
    """Return ``cond`` with its value(s) coerced to the field's type."""
    type_ = _field_type(fields, cond.field, "conditions")
    if cond.op == "in":
        if not isinstance(cond.value, tuple):
            raise ValueError(f"condition on {cond.field!r}: 'in' takes a tuple of values")
        return Condition(cond.field, "in", tuple(_coerce(type_, cond.field, v) for v in cond.value))
    if isinstance(cond.value, tuple):
        raise ValueError(f"condition on {cond.field!r}: only 'in' takes a tuple of values")
    if cond.op == "eq":
        return Condition(cond.field, "eq", _coerce(type_, cond.field, cond.value))
    if cond.op in _ORDERED_OPS or cond.op == "prefix":
        if cond.value is None:
            raise ValueError(f"condition on {cond.field!r}: {cond.op!r} needs a value, not null")
        if cond.op == "prefix" and type_ != "string":
            raise ValueError(
                f"condition on {cond.field!r}: 'prefix' applies to string fields, "
                f"this one is {type_}"
            )
        return Condition(cond.field, cond.op, _coerce(type_, cond.field, cond.value))
    raise ValueError(
        f"condition on {cond.field!r}: unknown operator {cond.op!r} "
        "(use eq, in, gt, gte, lt, lte or prefix)"
    )


def _check_conditions(
    fields: Mapping[str, FieldType], conditions: Iterable[Condition]
) -> tuple[Condition, ...]:
    return tuple(_check_condition(fields, c) for c in conditions)


def check_row_query(fields: Mapping[str, FieldType], query: RowQuery) -> tuple[Condition, ...]:
    """Refuse a query naming undeclared fields or malformed conditions (``ValueError``) and
    return its conditions with values coerced to the declared field types."""
    if not query.fields:
        raise ValueError("a row query must select at least one field")
    for name in query.fields:
        _field_type(fields, name, "selected fields")
    for name in query.order_by:
        _field_type(fields, name, "order_by")
    if query.limit < 0 or query.offset < 0:
        raise ValueError("limit and offset must not be negative")
    return _check_conditions(fields, query.conditions)


def check_aggregate_query(
    fields: Mapping[str, FieldType], query: AggregateQuery
) -> tuple[Condition, ...]:
    """Like :func:`check_row_query` for aggregates; also refuses ``sum``/``avg`` of
    non-numeric fields and output names that would collide."""
    for name in query.group_by:
        _field_type(fields, name, "group_by")
    _field_type(fields, query.subject_field, "subject_field")
    outputs = {*query.group_by, SUBJECTS}
    if len(outputs) != len(query.group_by) + 1:
        raise ValueError(f"group_by names a field twice or uses the reserved name {SUBJECTS}")
    for measure in query.measures:
        if measure.fn not in ("count", "sum", "avg"):
            raise ValueError(f"unknown measure {measure.fn!r} (use count, sum or avg)")
        if measure.field is None:
            if measure.fn != "count":
                raise ValueError(f"measure {measure.fn!r} needs a field")
        else:
            type_ = _field_type(fields, measure.field, "measures")
            if measure.fn != "count" and type_ not in NUMERIC_TYPES:
                raise ValueError(
                    f"measure {measure.fn!r} needs a numeric field; {measure.field!r} is {type_}"
                )
        if measure.name in outputs:
            raise ValueError(f"measure {measure.name!r} repeats another measure or a group field")
        outputs.add(measure.name)
    if query.limit < 0:
        raise ValueError("limit must not be negative")
    return _check_conditions(fields, query.conditions)


def average(total: Decimal | None, count: int) -> Decimal | None:
    """``total / count`` in :data:`AVG_CONTEXT`; ``None`` when there is nothing to average."""
    if total is None or count == 0:
        return None
    return AVG_CONTEXT.divide(total, Decimal(count))
