"""RFC 9457 problem details: the one place errors become HTTP responses."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from gateway.errors import DsgwError

__all__ = ["PROBLEM_PREFIX", "json_bytes", "json_response", "problem_response", "problem_type"]

PROBLEM_PREFIX = "/problems/"
PROBLEM_CONTENT_TYPE = "application/problem+json"


def problem_type(slug: str) -> str:
    """Problem types are relative URIs resolved against the gateway (RFC 9457 §3.1.1);
    GET on one describes it."""
    return PROBLEM_PREFIX + slug


def _default(value: Any) -> Any:
    from datetime import date, datetime
    from decimal import Decimal

    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return sorted(value) if isinstance(value, set | frozenset) else list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# Built once: ``json.dumps`` with these options builds an encoder per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, default=_default)


def json_bytes(document: Any) -> bytes:
    return _ENCODER.encode(document).encode("utf-8")


def json_response(document: Any, *, status: int = 200) -> web.Response:
    return web.Response(body=json_bytes(document), status=status, content_type="application/json")


def problem_response(error: DsgwError, instance: str | None = None) -> web.Response:
    body: dict[str, Any] = {
        "type": problem_type(error.slug),
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
    }
    if instance:
        body["instance"] = instance
    for key, value in error.extensions.items():
        if key not in body:
            body[key] = value
    if error.retry_after is not None:
        body.setdefault("retry_after", error.retry_after)
    response = web.Response(
        body=json_bytes(body), status=error.status, content_type=PROBLEM_CONTENT_TYPE
    )
    if error.retry_after is not None:
        # Rate limits and every 503 say when to come back (RFC 9110 §10.2.3).
        response.headers["Retry-After"] = str(error.retry_after)
    if error.status == 401:
        # The token endpoint authenticates clients (Basic); everything else takes bearers.
        response.headers["WWW-Authenticate"] = (
            'Basic realm="dsgw"'
            if error.extensions.get("error") == "invalid_client"
            else 'Bearer realm="dsgw", error="invalid_token"'
        )
    return response
