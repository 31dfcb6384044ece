"""Reading request bodies strictly: declared media type, size cap, UTF-8, one JSON object
with no duplicate keys and no floats (decimals keep their exact value).

Everything a body carries is checked here, at the edge, before any domain code sees it: a
value that could not be stored, logged or computed with (a lone UTF-16 surrogate, a NUL, an
integer outside the interoperable JSON range, a decimal with an absurd exponent) is a 400
naming the field, never a failure deeper down."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from gateway.api.appkeys import MAX_BODY
from gateway.errors import (
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
    ValidationError,
)

__all__ = ["MAX_INTEGER", "check_text", "parse_json_body", "read_form", "read_json"]

MAX_DEPTH = 8
# RFC 7493 (I-JSON) §2.2: integers outside ±(2**53 - 1) are not interoperable; nothing the
# gateway accepts needs more.
MAX_INTEGER = 2**53 - 1
# Decimals (prices, amounts, filter bounds): up to 38 significant digits and an exponent
# that keeps arithmetic and storage exact and cheap.
MAX_DECIMAL_DIGITS = 38
MAX_DECIMAL_EXPONENT = 30
# Longer number literals are not even converted (Python refuses ints over 4,300 digits).
_MAX_LITERAL = 80


class _Oversized:
    """A number literal too long to convert; reported with its field by :func:`_check`."""

    __slots__ = ("literal",)

    def __init__(self, literal: str) -> None:
        self.literal = literal


def _parse_int(literal: str) -> int | _Oversized:
    return _Oversized(literal) if len(literal) > _MAX_LITERAL else int(literal)


def _parse_decimal(literal: str) -> Decimal | _Oversized:
    return _Oversized(literal) if len(literal) > _MAX_LITERAL else Decimal(literal)


def _field(path: str) -> str:
    return path or "the body"


def check_text(value: str, what: str) -> None:
    """Refuse text that no store or log can hold: lone surrogates (they have no UTF-8
    form) and NUL (PostgreSQL text cannot hold it)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(
            f"{what} contains a lone UTF-16 surrogate; send valid Unicode text",
            field=what,
        ) from None
    if "\x00" in value:
        raise ValidationError(f"{what} contains a NUL character", field=what)


def _fine_text(text: str) -> bool:
    """What :func:`check_text` accepts, for the common case: ASCII (always encodable)
    without NUL. Anything else goes through :func:`check_text` itself."""
    return text.isascii() and "\x00" not in text


def _fine_leaf(value: Any) -> bool:
    """A member :func:`_check` would accept at a depth within bounds, decided without a
    call per member or building its path: plain text and in-range integers."""
    kind = type(value)
    if kind is str:
        return _fine_text(value)
    return kind is bool or (kind is int and -MAX_INTEGER <= value <= MAX_INTEGER)


def _check(value: Any, path: str, level: int = 0) -> None:
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
        within = level < MAX_DEPTH  # else even a leaf member is too deep
        for key, item in value.items():
            if not _fine_text(key):
                check_text(key, f"{_field(path)}: a key")
            if not (within and _fine_leaf(item)):
                _check(item, f"{path}.{key}" if path else key, level + 1)
    elif isinstance(value, list):
        within = level < MAX_DEPTH
        for index, item in enumerate(value):
            if not (within and _fine_leaf(item)):
                _check(item, f"{path}[{index}]", level + 1)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValidationError(f"JSON object has the key {key!r} twice")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValidationError(f"JSON constant {name} is not allowed")


# Built once: ``json.loads`` with hooks builds a decoder (and its scanner) per call.
_DECODER = json.JSONDecoder(
    parse_float=_parse_decimal,
    parse_int=_parse_int,
    parse_constant=_reject_constant,
    object_pairs_hook=_no_duplicates,
)


def _loads(text: str) -> Any:
    """``json.loads(text, **hooks)`` on the decoder built once, its BOM check included."""
    if text.startswith("\ufeff"):
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    return _DECODER.decode(text)


async def _read(request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise PayloadTooLargeError(
            f"request body larger than {request.app[MAX_BODY]} bytes"
        ) from exc


async def read_json(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise UnsupportedMediaTypeError("send the body as application/json")
    return parse_json_body(await _read(request))


def parse_json_body(raw: bytes) -> dict[str, Any]:
    """A request body as the strict JSON object every route reads (UTF-8, no duplicate
    keys, no NaN, bounded depth and numbers); raises :class:`ValidationError` otherwise."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError("request body is not valid UTF-8") from exc
    try:
        value = _loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(
            f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except RecursionError as exc:
        raise ValidationError("JSON nested too deeply") from exc
    if not isinstance(value, dict):
        raise ValidationError("the request body must be a JSON object")
    _check(value, "")
    return value


async def read_form(request: web.Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body; a repeated parameter is an error
    (RFC 6749 §3.2: parameters must not be included more than once)."""
    if request.content_type != "application/x-www-form-urlencoded":
        raise UnsupportedMediaTypeError(
            "send the token request as application/x-www-form-urlencoded"
        )
    raw = await _read(request)
    try:
        pairs = parse_qsl(
            raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=32
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValidationError("malformed form body") from exc
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:
            raise ValidationError(f"parameter {key} given more than once", error="invalid_request")
        check_text(key, "a form parameter name")
        check_text(value, f"form parameter {key[:64]}")
        form[key] = value
    return form
