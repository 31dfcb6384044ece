"""What ``/readyz`` shows to whom.

Readiness is asked by load balancers and container runtimes, which hold no credentials and
need only the status code; anyone else who can reach the port could ask too. So without
credentials the answer is ``{"status": ...}`` and nothing else: no data directory, no chain
node address, no error text that names a host. Staff who watch the gateway (a role with
``metrics.read``: operator, supervisor) see the checks with a bearer admin token, and even
then every URL is cut to its scheme and host: a node URL may carry an API key in its user
info, path or query.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from gateway.api.appkeys import TOKENS
from gateway.authorization.roles import PERMISSIONS, Action
from gateway.errors import DsgwError

__all__ = ["readiness_view", "without_url_secrets"]

# scheme://[userinfo@]host[:port][/path][?query][#fragment]
_URL = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)(?:[^/?#@\s]*@)?([^/?#\s]*)[^\s,;)]*")
# How long a readiness probe may spend checking a token (the store may be the thing down).
_VERIFY_SECONDS = 2.0


def without_url_secrets(value: Any) -> Any:
    """``value`` (a JSON value) with every URL in its strings cut to scheme and host."""
    if isinstance(value, str):
        return _URL.sub(r"\1\2", value)
    if isinstance(value, dict):
        return {key: without_url_secrets(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_url_secrets(item) for item in value]
    return value


async def _may_see_checks(request: web.Request) -> bool:
    """Whether the request carries a valid admin token of a role with ``metrics.read``.
    Any failure to tell (no token, a bad one, the store down) means no."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    try:
        async with asyncio.timeout(_VERIFY_SECONDS):
            claims = await request.app[TOKENS].verify(token.strip(), admin=True)
    except (DsgwError, SQLAlchemyError, OSError, TimeoutError):
        return False
    return claims.role is not None and Action.READ_METRICS in PERMISSIONS[claims.role]


async def readiness_view(request: web.Request, body: dict[str, Any]) -> dict[str, Any]:
    """The readiness document ``body`` as the caller may see it: only ``status`` without
    staff credentials, everything but URL secrets with them."""
    if not await _may_see_checks(request):
        return {"status": body["status"]}
    return dict(without_url_secrets(body))
