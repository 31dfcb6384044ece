"""Numbers in paths and query strings, read strictly.

``str.isdigit()`` accepts ``²`` and ``int()`` accepts ``٣`` and surrounding spaces, so neither
is a parser for untrusted input: only ASCII digits pass here, and every number has an upper
bound that the store's columns can hold (PostgreSQL ``bigint``).
"""

from __future__ import annotations

from aiohttp import web

from gateway.errors import ValidationError

__all__ = ["MAX_SEQ", "path_int", "query_int"]

# Sequence numbers, sizes and ids are PostgreSQL bigint columns.
MAX_SEQ = 2**63 - 1
_ASCII_DIGITS = frozenset("0123456789")


def _parse(raw: str, name: str, *, minimum: int, maximum: int) -> int:
    if not raw or len(raw) > 19 or not _ASCII_DIGITS.issuperset(raw):
        raise ValidationError(
            f"{name} must be an integer written with the digits 0-9, from {minimum} to {maximum}",
            field=name,
        )
    value = int(raw)
    if not minimum <= value <= maximum:
        raise ValidationError(f"{name} must be from {minimum} to {maximum}", field=name)
    return value


def path_int(request: web.Request, name: str, *, minimum: int = 0, maximum: int = MAX_SEQ) -> int:
    """The path segment ``name`` as a bounded non-negative integer, or a 400 naming it."""
    return _parse(request.match_info[name], name, minimum=minimum, maximum=maximum)


def query_int(
    request: web.Request,
    name: str,
    *,
    default: int | None = None,
    minimum: int = 0,
    maximum: int = MAX_SEQ,
) -> int:
    """The query parameter ``name`` as a bounded integer; required when ``default`` is None."""
    raw = request.query.get(name)
    if raw is None:
        if default is None:
            raise ValidationError(f"query parameter {name} is required", field=name)
        return default
    return _parse(raw, name, minimum=minimum, maximum=maximum)
