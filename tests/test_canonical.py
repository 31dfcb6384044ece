"""The canonical record encoding against a frozen copy of the encoding it replaced.

Record bytes are hashed and anchored, and a verifier recomputes them: any change to
:mod:`gateway.ledger.canonical` must give the same bytes for every value it accepts and
refuse every value it refused, with the same error. The reference below is the encoding as
it was before it was made cheaper (commit 99ed18b), copied verbatim, not imported.
"""

from __future__ import annotations

import datetime as dt
import json
import types
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.ledger.canonical import canonical_bytes

# ---- frozen reference (gateway/ledger/canonical.py at 99ed18b) ----------------------------


def _ref_format_time(value: dt.datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("canonical: naive datetime; use timezone-aware UTC times")
    return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


_REF_PLAIN = frozenset({str, int, bool, type(None)})


def _ref_to_canonical_value(value: Any) -> Any:
    kind = type(value)
    if kind in _REF_PLAIN:
        return value
    if kind is dict:
        return {key: _ref_to_canonical_value(item) for key, item in _ref_string_keys(value)}
    if kind is list:
        return [_ref_to_canonical_value(item) for item in value]
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
        return _ref_format_time(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError("canonical: object keys must be strings")
            out[key] = _ref_to_canonical_value(item)
        return out
    if isinstance(value, list | tuple):
        return [_ref_to_canonical_value(item) for item in value]
    raise TypeError(f"canonical: unsupported type {type(value).__name__}")


def _ref_string_keys(mapping: Mapping[Any, Any]) -> Any:
    for key, item in mapping.items():
        if type(key) is not str:
            raise TypeError("canonical: object keys must be strings")
        yield key, item


def _ref_canonical_bytes(record: Mapping[str, Any]) -> bytes:
    return json.dumps(
        _ref_to_canonical_value(record),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    ).encode("utf-8")


# ---- strategies ----------------------------------------------------------------------------


class _Key(str):
    """A str subclass: refused as a dict key, accepted as a Mapping key (as before)."""


class _Text(str):
    pass


# Text with every code point, lone surrogates included (they have no UTF-8 form).
_TEXT = st.text(st.characters(blacklist_categories=()), max_size=12)
_OFFSETS = st.builds(
    dt.timezone,
    st.timedeltas(min_value=dt.timedelta(hours=-23, minutes=-59), max_value=dt.timedelta(hours=23)),
)
_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**60), max_value=10**60),
    _TEXT,
    _TEXT.map(_Text),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.datetimes(timezones=st.none() | _OFFSETS | st.just(dt.UTC)),
    st.dates(),
    st.binary(max_size=8),
    st.floats(),
    st.sets(st.integers(), max_size=2),
)
_KEYS = st.one_of(
    _TEXT, _TEXT.map(_Key), st.integers(), st.none(), st.booleans(), st.floats(), st.binary()
)
_VALUES = st.recursive(
    _LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(_TEXT, inner, max_size=4),
        st.dictionaries(_KEYS, inner, max_size=3),
        st.dictionaries(_TEXT, inner, max_size=3).map(types.MappingProxyType),
        st.dictionaries(_KEYS, inner, max_size=3).map(types.MappingProxyType),
    ),
    max_leaves=20,
)


def _outcome(encode: Any, record: Any) -> tuple[str, Any]:
    try:
        return "bytes", encode(record)
    except Exception as exc:  # the refusal itself is what is compared
        return type(exc).__name__, str(exc)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_TEXT, _VALUES, max_size=6))
def test_canonical_bytes_match_the_frozen_encoding(record: dict[str, Any]) -> None:
    assert _outcome(canonical_bytes, record) == _outcome(_ref_canonical_bytes, record)


@settings(max_examples=200, deadline=None)
@given(_VALUES)
def test_canonical_bytes_match_for_any_top_level_value(value: Any) -> None:
    assert _outcome(canonical_bytes, value) == _outcome(_ref_canonical_bytes, value)


def test_the_comparison_sees_each_refusal() -> None:
    """The cases the property covers, spelled out: each is refused by both, alike."""
    cases: list[Any] = [
        {"f": 1.5},
        {"d": Decimal("NaN")},
        {"t": dt.datetime(2026, 1, 1)},
        {"s": "\ud800"},
        {1: "x"},
        {_Key("k"): 1},
        {"set": {1}},
    ]
    for case in cases:
        kind, _detail = _outcome(canonical_bytes, case)
        assert kind != "bytes"
        assert _outcome(canonical_bytes, case) == _outcome(_ref_canonical_bytes, case)
    accepted = types.MappingProxyType({_Key("k"): [(1, b"\x00")], "n": 10**40})
    assert _outcome(canonical_bytes, {"m": accepted}) == (
        "bytes",
        b'{"m":{"k":[[1,"00"]],"n":10000000000000000000000000000000000000000}}',
    )
