"""Checks of the plain values governance documents are made of (field-name lists, positive
counts), shared by grants, budgets and quotas so each refuses bad input the same way."""

from __future__ import annotations

from gateway.errors import ValidationError

__all__ = ["positive_int", "str_list"]


def str_list(what: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or any(not isinstance(v, str) for v in value):
        raise ValidationError(f"{what} must be a list of field names")
    if len(set(value)) != len(value):
        raise ValidationError(f"{what} lists a field twice")
    return tuple(value)


def positive_int(what: str, value: object, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValidationError(f"{what} must be a positive integer")
    return value
