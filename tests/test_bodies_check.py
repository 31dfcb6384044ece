"""The body check's shortcut for plain members against a frozen copy of the full walk.

:func:`gateway.api.bodies._check` skips the per-member call for plain text and in-range
integers; every body must still be accepted or refused exactly as the walk it replaced
(commit 99ed18b, copied below) did, with the same problem.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.api import bodies
from gateway.api.bodies import MAX_DEPTH, MAX_INTEGER, _check, _Oversized, check_text
from gateway.errors import ValidationError

MAX_DECIMAL_DIGITS = 38
MAX_DECIMAL_EXPONENT = 30


def _field(path: str) -> str:
    return path or "the body"


def _ref_check(value: Any, path: str, level: int = 0) -> None:
    if level > MAX_DEPTH:
        raise ValidationError(f"JSON nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        check_text(value, _field(path))
    elif isinstance(value, bool):
        return
    elif isinstance(value, _Oversized):
        raise ValidationError(
            f"{_field(path)}: number with {len(value.literal)} characters is out of range",
            field=_field(path),
        )
    elif isinstance(value, int):
        if abs(value) > MAX_INTEGER:
            raise ValidationError(
                f"{_field(path)}: integer out of range (at most ±{MAX_INTEGER})",
                field=_field(path),
            )
    elif isinstance(value, Decimal):
        exponent = value.adjusted()
        if (
            not value.is_finite()
            or len(value.as_tuple().digits) > MAX_DECIMAL_DIGITS
            or abs(exponent) > MAX_DECIMAL_EXPONENT
        ):
            raise ValidationError(
                f"{_field(path)}: decimal out of range (at most {MAX_DECIMAL_DIGITS} digits, "
                f"magnitude within 1e±{MAX_DECIMAL_EXPONENT})",
                field=_field(path),
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, f"{_field(path)}: a key")
            _ref_check(item, f"{path}.{key}" if path else key, level + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _ref_check(item, f"{path}[{index}]", level + 1)


_TEXT = st.one_of(
    st.text(st.characters(blacklist_categories=()), max_size=6),
    st.text("ab\x00é", max_size=4),
)
_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**60), max_value=2**60),
    st.sampled_from([MAX_INTEGER, -MAX_INTEGER, MAX_INTEGER + 1, -MAX_INTEGER - 1]),
    _TEXT,
    st.decimals(allow_nan=True, allow_infinity=True),
    st.builds(_Oversized, st.just("9" * 81)),
)
_BODIES = st.recursive(
    _LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=30,
)


def _nested(depth: int, leaf: Any) -> Any:
    value = leaf
    for index in range(depth):
        value = {"k": value} if index % 2 else [value]
    return value


def _outcome(check: Any, value: Any) -> tuple[str, str, dict[str, Any]] | None:
    try:
        check(value, "")
    except ValidationError as err:
        return err.slug, err.detail, dict(err.extensions)
    return None


@settings(max_examples=400, deadline=None)
@given(_BODIES, st.integers(min_value=0, max_value=MAX_DEPTH + 2))
def test_check_accepts_and_refuses_as_the_full_walk(body: Any, depth: int) -> None:
    value = {"body": _nested(depth, body)}
    assert _outcome(_check, value) == _outcome(_ref_check, value)


def test_a_plain_leaf_too_deep_is_still_refused() -> None:
    for leaf in ("text", 1, True):
        value = _nested(MAX_DEPTH + 1, leaf)
        assert _outcome(_check, value) == _outcome(_ref_check, value)
        assert _outcome(_check, value) is not None


def _json_outcome(parse: Any, text: str) -> Any:
    try:
        return ("value", parse(text))
    except json.JSONDecodeError as exc:
        return ("malformed", exc.msg, exc.lineno, exc.colno)
    except ValidationError as err:
        return ("refused", err.detail)
    except RecursionError:
        return ("recursion",)


def _ref_loads(text: str) -> Any:
    return json.loads(
        text,
        parse_float=bodies._parse_decimal,
        parse_int=bodies._parse_int,
        parse_constant=bodies._reject_constant,
        object_pairs_hook=bodies._no_duplicates,
    )


_JSON_TEXTS = st.one_of(
    st.text('{}[]":,0123456789.eE-+ aNnIfity\\u\ufeff', max_size=30),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=4),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
        max_leaves=10,
    ).map(json.dumps),
)


@settings(max_examples=500, deadline=None)
@given(_JSON_TEXTS)
def test_the_decoder_built_once_parses_as_json_loads(text: str) -> None:
    assert _json_outcome(bodies._loads, text) == _json_outcome(_ref_loads, text)


def test_the_decoder_refuses_as_json_loads() -> None:
    texts = ['\ufeff{"a": 1}', '{"a": 1, "a": 2}', '{"a": NaN}', '{"a": 1.5e3}', "[" * 5000, "{"]
    for text in texts:
        assert _json_outcome(bodies._loads, text) == _json_outcome(_ref_loads, text)
        assert _json_outcome(bodies._loads, text)[0] != "value" or "1.5e3" in text
