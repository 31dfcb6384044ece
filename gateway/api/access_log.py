"""The optional access log: one ``dsgw.access`` record per HTTP request (``access_log``).

Each record's message reads ``GET /v1/... 200 3.2 ms``; its extra fields, which the JSON log
format writes as they are, are ``method``, ``route`` (the path only: the query string may
carry personal data and is never logged), ``status``, ``duration_ms`` and, once the call
has identified them, ``merchant`` and ``scenario``. No body, header, token or client
address is logged. The path goes through the log redaction like every record
(:mod:`gateway.logs`), so an identifier in it is masked.

This is not the evidence: every call the gateway answers is in the hash-linked call log
whatever this setting says. The access log is for operations (latency, error rates, which
route a worker was serving), and also covers the health probes, which are counted but not
recorded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from gateway.api.appkeys import RECORD

__all__ = ["ACCESS_LOGGER", "access_log_middleware"]

ACCESS_LOGGER: Final = "dsgw.access"
#: The status written when the client went away before the answer: nginx's convention.
CLIENT_CLOSED: Final = 499
_MAX_ROUTE: Final = 512

log = logging.getLogger(ACCESS_LOGGER)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def access_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Time the request and log it when it ends, however it ends. Outermost middleware, so
    it sees the status of problem documents made by the middlewares inside it."""
    started = time.monotonic()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:  # redirects and the like, raised through
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = CLIENT_CLOSED
        raise
    finally:
        if log.isEnabledFor(logging.INFO):
            _log(request, status, (time.monotonic() - started) * 1000)


def _log(request: web.Request, status: int, duration_ms: float) -> None:
    route = request.path[:_MAX_ROUTE]  # request.path never includes the query string
    fields: dict[str, Any] = {
        "method": request.method,
        "route": route,
        "status": status,
        "duration_ms": round(duration_ms, 1),
    }
    record = request.get(RECORD)
    if record is not None:
        if record.merchant_id:
            fields["merchant"] = record.merchant_id
        if record.scenario_id:
            fields["scenario"] = record.scenario_id
    log.info("%s %s %d %.1f ms", request.method, route, status, duration_ms, extra=fields)
