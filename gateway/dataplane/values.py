"""Connector values as JSON: the one rendering shared by every data-plane answer and record."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from connectors.base import Value

__all__ = ["json_value", "jsonable"]


def json_value(value: Value) -> Any:
    """A connector value in an answer: decimals as exact strings, dates in ISO 8601."""
    kind = type(value)
    if kind is str or kind is int or value is None or kind is bool:
        return value  # most cells, without the checks below
    if isinstance(value, Decimal):
        return format(value, "f")
    if value is None or isinstance(value, bool | int | str):
        return value
    return value.isoformat()


def jsonable(value: Any) -> Any:
    """A request parameter as logged in the call record: lists item by item, floats as
    their decimal text."""
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, float):
        return str(value)
    return value
