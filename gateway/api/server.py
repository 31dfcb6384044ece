"""The HTTP server around the app: requests the parser cannot read are answered and
recorded like every other.

aiohttp answers a request whose header line or URL is too long, or whose syntax is broken,
itself: a plain-text 400 that quotes the offending input, with a ``Server`` banner, and no
middleware ever sees it. :class:`GatewayRunner` serves the app with a protocol whose error
handler instead appends a ``protocol`` record and answers a problem document: 414 for a URL
over the limit, 431 for a header over it, 400 for the rest; nothing of the input is echoed
and no banner is sent.

This reaches into two non-public hooks of aiohttp (``BaseRunner._make_server`` and
``RequestHandler._make_error_handler``); aiohttp is pinned, and ``tests/test_pipeline.py``
sends each kind of unreadable request over a real socket to catch a change.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler, _ErrInfo

from gateway.api.appkeys import GATEWAY, TELEMETRY
from gateway.api.problems import problem_response
from gateway.errors import BadRequestError, DsgwError, HeaderTooLargeError, UriTooLongError
from gateway.ledger.records import CallRecord

__all__ = ["GatewayRunner", "protocol_error"]

log = logging.getLogger(__name__)

#: aiohttp's parser limit for the request line and each header line, in bytes.
MAX_LINE: Final = 8190


def protocol_error(exc: BaseException | None) -> DsgwError:
    """The problem for a request the parser refused, from the parser's exception."""
    if isinstance(exc, LineTooLong):
        frames = []
        tb = exc.__traceback__
        while tb is not None:
            frames.append(tb.tb_frame.f_code.co_name)
            tb = tb.tb_next
        # The C parser raises from its URL callback; the pure-Python one names the line.
        if any(name.endswith("cb_on_url") for name in frames) or (
            exc.args and exc.args[0] == "Status line is too long"
        ):
            return UriTooLongError(f"the request target is longer than {MAX_LINE} bytes")
        return HeaderTooLargeError(f"a request header is longer than {MAX_LINE} bytes")
    if isinstance(exc, BadHttpMessage) and "Too many headers" in str(exc.message):
        return HeaderTooLargeError("the request has too many header fields")
    return BadRequestError("the request is not valid HTTP/1.1 and could not be read")


class _BareResponse(web.Response):
    """A response without aiohttp's ``Server`` banner (for answers made outside the app,
    where its ``on_response_prepare`` hook does not run)."""

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        self.headers.pop("Server", None)


async def _refuse_unreadable(
    app: web.Application, request: web.BaseRequest, exc: BaseException | None
) -> web.StreamResponse:
    err = protocol_error(exc)
    problem = problem_response(err)
    response = _BareResponse(
        body=problem.body, status=problem.status, content_type=problem.content_type
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    response.force_close()
    gateway = app[GATEWAY]
    peer = request.transport.get_extra_info("peername") if request.transport else None
    record = CallRecord(
        kind="protocol",
        started_at=gateway.clock.now(),
        remote=str(peer[0]) if isinstance(peer, tuple) and peer else None,
        decision="deny",
        status=err.status,
        reason=err.slug,
        reason_detail=err.detail,
    )
    assert isinstance(problem.body, bytes)
    record.response_sha256 = hashlib.sha256(problem.body).hexdigest()
    try:
        entry = await gateway.log.append(record.to_pending(gateway.clock.now()))
    except DsgwError as unavailable:
        failed = problem_response(unavailable)
        withheld = _BareResponse(
            body=failed.body, status=failed.status, content_type=failed.content_type
        )
        withheld.force_close()
        return withheld
    response.headers["Dsgw-Record-Id"] = entry.record_id
    response.headers["Dsgw-Record-Hash"] = entry.leaf_hash.hex()
    app[TELEMETRY].observe_call("protocol", None, "deny", err.status, 0.0)
    return response


class _Protocol(RequestHandler):
    def _make_error_handler(
        self, err_info: _ErrInfo
    ) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
        app: web.Application = self._manager.app  # type: ignore[union-attr]

        async def handler(request: web.BaseRequest) -> web.StreamResponse:
            log.info("unreadable request refused: %s", type(err_info.exc).__name__)
            return await _refuse_unreadable(app, request, err_info.exc)

        return handler


class _Server(web.Server):
    def __init__(self, *args: Any, app: web.Application, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app = app

    def __call__(self) -> RequestHandler:
        return _Protocol(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """``web.AppRunner`` whose connections record and answer unreadable requests."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return _Server(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            app=self.app,
            **server._kwargs,
        )
