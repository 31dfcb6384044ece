"""The small interface every data source adapter implements.

The gateway never hands a connector SQL or free text: it builds a :class:`RowQuery` or an
:class:`AggregateQuery` out of field names it has already checked against the catalog and
values it has already coerced to the field's type. Connectors turn those into parameterized
queries for their backend. Keeping the query shape this narrow is what lets the policy layer
reason about what can leave the domain.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal, Protocol, runtime_checkable

from gateway.errors import SourceUnavailableError

__all__ = [
    "AggregateQuery",
    "Condition",
    "Connector",
    "ConnectorError",
    "FieldType",
    "Measure",
    "Operator",
    "Row",
    "RowQuery",
    "Value",
    "coerce_value",
]

FieldType = Literal["string", "integer", "decimal", "date", "boolean"]
Operator = Literal["eq", "in", "gt", "gte", "lt", "lte", "prefix"]
Value = str | int | Decimal | dt.date | bool | None
Row = dict[str, Value]


class ConnectorError(SourceUnavailableError):
    """The data source failed or is misconfigured; the message names the source."""


@dataclass(frozen=True, slots=True)
class Condition:
    """``field <op> value``; for ``in`` the value is a tuple of values."""

    field: str
    op: Operator
    value: Value | tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class RowQuery:
    """Select ``fields`` of the rows matching every condition (AND), ordered, one page."""

    fields: tuple[str, ...]
    conditions: tuple[Condition, ...]
    order_by: tuple[str, ...]
    limit: int
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Measure:
    """``fn(field)``; ``count`` takes ``field=None`` and counts rows."""

    fn: Literal["count", "sum", "avg"]
    field: str | None = None

    @property
    def name(self) -> str:
        return self.fn if self.field is None else f"{self.fn}_{self.field}"


@dataclass(frozen=True, slots=True)
class AggregateQuery:
    """Group matching rows by ``group_by`` and compute ``measures`` per group.

    Every result row also carries ``_subjects``: the number of distinct values of
    ``subject_field`` in the group, which the privacy layer uses for small-cell suppression.
    """

    group_by: tuple[str, ...]
    measures: tuple[Measure, ...]
    subject_field: str
    conditions: tuple[Condition, ...] = field(default_factory=tuple)
    limit: int = 10_000


@runtime_checkable
class Connector(Protocol):
    """A source of one dataset's rows. Implementations must be safe for concurrent use."""

    async def fetch(self, query: RowQuery) -> list[Row]:
        """Return the matching rows, each holding exactly ``query.fields``.

        Raises :class:`ConnectorError` when the source cannot answer.
        """
        ...

    async def aggregate(self, query: AggregateQuery) -> list[Row]:
        """Return one row per group: the group fields, each measure by ``Measure.name``,
        and ``_subjects``. Raises :class:`ConnectorError` when the source cannot answer.
        """
        ...

    async def close(self) -> None:
        """Release connections; the connector is unusable afterwards."""
        ...


def coerce_value(type_: FieldType, raw: object) -> Value:
    """Convert a raw value (from JSON, CSV or a driver) to the field's Python type.

    Raises ``ValueError`` or ``TypeError`` with a message naming the expected type.
    ``None`` stays ``None``.
    """
    if raw is None:
        return None
    if type_ == "string":
        if isinstance(raw, str):
            return raw
        if isinstance(raw, int | Decimal) and not isinstance(raw, bool):
            return str(raw)
        raise TypeError(f"expected a string, got {type(raw).__name__}")
    if type_ == "integer":
        if isinstance(raw, bool):
            raise TypeError("expected an integer, got a boolean")
        if isinstance(raw, int):
            return raw
        if isinstance(raw, Decimal) and raw == raw.to_integral_value():
            return int(raw)
        if isinstance(raw, str) and raw.strip().lstrip("+-").isdigit():
            return int(raw.strip())
        raise TypeError(f"expected an integer, got {raw!r}")
    if type_ == "decimal":
        if isinstance(raw, bool):
            raise TypeError("expected a decimal number, got a boolean")
        if isinstance(raw, Decimal):
            return raw
        if isinstance(raw, int | float):
            return Decimal(str(raw))
        if isinstance(raw, str):
            try:
                value = Decimal(raw.strip())
            except ArithmeticError as exc:
                raise TypeError(f"expected a decimal number, got {raw!r}") from exc
            if not value.is_finite():
                raise TypeError(f"expected a finite decimal number, got {raw!r}")
            return value
        raise TypeError(f"expected a decimal number, got {type(raw).__name__}")
    if type_ == "date":
        if isinstance(raw, dt.datetime):
            return raw.date()
        if isinstance(raw, dt.date):
            return raw
        if isinstance(raw, str):
            try:
                return dt.date.fromisoformat(raw.strip())
            except ValueError as exc:
                raise TypeError(f"expected a date as YYYY-MM-DD, got {raw!r}") from exc
        raise TypeError(f"expected a date as YYYY-MM-DD, got {type(raw).__name__}")
    if type_ == "boolean":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, int) and raw in (0, 1):
            return bool(raw)
        if isinstance(raw, str) and raw.strip().lower() in ("true", "false", "1", "0"):
            return raw.strip().lower() in ("true", "1")
        raise TypeError(f"expected a boolean, got {raw!r}")
    raise TypeError(f"unknown field type {type_!r}")
