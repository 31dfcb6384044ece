"""The checks every record read from JSON makes: no unknown or missing member, a valid id.

Kept apart from :mod:`gateway.catalog.models` so that a settings group or a policy model can
check its input without loading the catalog (and, with it, SQLAlchemy's URL parser).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

from gateway.errors import ValidationError

__all__ = ["check_id", "expect_keys"]

_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def check_id(kind: str, value: object) -> str:
    """Identifiers appear in URLs and logs: lower-case, digits, ``.-_``, at most 64 chars."""
    if not isinstance(value, str) or not _ID.match(value):
        raise ValidationError(
            f"{kind} id {value!r} is invalid: use 1-64 lower-case letters, digits, '.', '-', '_'"
        )
    return value


def expect_keys(
    what: str, data: Mapping[str, Any], required: Collection[str], optional: Collection[str] = ()
) -> None:
    """Refuse unknown and missing members, so a typo never silently widens a grant."""
    if not isinstance(data, Mapping):
        raise ValidationError(f"{what}: expected a JSON object")
    unknown = sorted(set(data) - set(required) - set(optional))
    if unknown:
        raise ValidationError(f"{what}: unknown member(s) {', '.join(unknown)}", unknown=unknown)
    missing = sorted(set(required) - set(data))
    if missing:
        raise ValidationError(f"{what}: missing member(s) {', '.join(missing)}", missing=missing)
