"""The ledger surface: checkpoints and proofs, for merchants and staff alike.

Proofs carry only salted leaf hashes and interior hashes, so they reveal nothing about other
parties' calls; any authenticated client may fetch them.
"""

from __future__ import annotations

from aiohttp import web

from gateway.api.appkeys import EVIDENCE, TOKENS
from gateway.api.merchant import bearer_token
from gateway.api.params import query_int
from gateway.api.problems import json_response
from gateway.errors import InvalidTokenError, NotFoundError
from gateway.ledger.log import STREAMS

__all__ = ["add_routes"]


async def _authenticate(request: web.Request) -> None:
    tokens = request.app[TOKENS]
    token = bearer_token(request)
    try:
        await tokens.verify(token)
    except InvalidTokenError:
        await tokens.verify(token, admin=True)


def _stream(request: web.Request) -> str:
    stream = request.match_info["stream"]
    if stream not in STREAMS:
        raise NotFoundError(f"no log stream {stream[:32]!r}; streams are {', '.join(STREAMS)}")
    return stream


async def checkpoint(request: web.Request) -> web.Response:
    """The newest signed checkpoint of a stream and the key that verifies it."""
    await _authenticate(request)
    return json_response(await request.app[EVIDENCE].checkpoint(_stream(request)))


async def inclusion(request: web.Request) -> web.Response:
    """Inclusion proof of record ``index`` in the tree of ``size`` (default: the newest
    checkpoint's size)."""
    await _authenticate(request)
    stream = _stream(request)
    index = query_int(request, "index")
    size = query_int(request, "size") if "size" in request.query else None
    return json_response(await request.app[EVIDENCE].inclusion(stream, index, size))


async def consistency(request: web.Request) -> web.Response:
    await _authenticate(request)
    stream = _stream(request)
    first, second = query_int(request, "first"), query_int(request, "second")
    return json_response(await request.app[EVIDENCE].consistency(stream, first, second))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/ledger/{stream}/checkpoint", checkpoint, allow_head=False)
    app.router.add_get("/v1/ledger/{stream}/proof/inclusion", inclusion, allow_head=False)
    app.router.add_get("/v1/ledger/{stream}/proof/consistency", consistency, allow_head=False)
