"""Canonical record bytes: the exact encoding a third party uses to recompute a leaf.

Rules (see docs/ledger.md):
- JSON, UTF-8, object keys sorted by code point, no insignificant whitespace, no ASCII
  escaping of non-ASCII characters;
- integers as JSON integers; **no floating point** (a decimal is a string such as "12.50");
- times as RFC 3339 UTC with exactly six fractional digits and a ``Z``
  (``2026-11-21T19:01:59.123456Z``); dates as ``YYYY-MM-DD``;
- bytes as lower-case hex strings.
Values of other types are refused rather than stringified, so that two implementations can
never disagree on an encoding.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

__all__ = ["canonical_bytes", "format_time", "parse_time", "to_canonical_value"]


def format_time(value: dt.datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("canonical: naive datetime; use timezone-aware UTC times")
    # isoformat is several times faster than strftime and gives the same text for
    # four-digit years, which is every year a record can carry.
    return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)


_PLAIN = frozenset({str, int, bool, type(None)})
# Built once: ``json.dumps`` with these options builds an encoder per call.
_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def to_canonical_value(value: Any) -> Any:
    """Convert to the JSON-ready value the canonical encoding prescribes."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is dict:
        return _object(value)
    if kind is list:
        # Plain items are taken as they are, without a call each: a record is mostly those.
        return [item if type(item) in _PLAIN else to_canonical_value(item) for item in value]
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        raise TypeError("canonical: floats are not allowed; use Decimal or int")
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise TypeError("canonical: non-finite decimal")
        return format(value, "f")
    if isinstance(value, dt.datetime):
        return format_time(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError("canonical: object keys must be strings")
            out[key] = to_canonical_value(item)
        return out
    if isinstance(value, list | tuple):
        return [to_canonical_value(item) for item in value]
    raise TypeError(f"canonical: unsupported type {type(value).__name__}")


def _object(mapping: dict[Any, Any]) -> dict[str, Any]:
    """A dict's keys checked (exactly ``str``, in order) and its values converted, each
    key before its value, so the first bad member is the one refused."""
    out: dict[str, Any] = {}
    for key, item in mapping.items():
        if type(key) is not str:
            raise TypeError("canonical: object keys must be strings")
        out[key] = item if type(item) in _PLAIN else to_canonical_value(item)
    return out


def canonical_bytes(record: Mapping[str, Any]) -> bytes:
    return _ENCODER.encode(to_canonical_value(record)).encode("utf-8")
