"""Reading request bodies strictly: declared media type, size cap, UTF-8, one JSON object
with no duplicate keys and no floats (decimals keep their exact value)."""

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

__all__ = ["read_form", "read_json"]

MAX_DEPTH = 8


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValidationError(f"JSON object has the key {key!r} twice")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValidationError(f"JSON constant {name} is not allowed")


def _depth(value: Any, level: int = 0) -> None:
    if level > MAX_DEPTH:
        raise ValidationError(f"JSON nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for item in value.values():
            _depth(item, level + 1)
    elif isinstance(value, list):
        for item in value:
            _depth(item, level + 1)


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
    raw = await _read(request)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError("request body is not valid UTF-8") from exc
    try:
        value = json.loads(
            text,
            parse_float=Decimal,
            parse_constant=_reject_constant,
            object_pairs_hook=_no_duplicates,
        )
    except json.JSONDecodeError as exc:
        raise ValidationError(
            f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except RecursionError as exc:
        raise ValidationError("JSON nested too deeply") from exc
    if not isinstance(value, dict):
        raise ValidationError("the request body must be a JSON object")
    _depth(value)
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
        form[key] = value
    return form
