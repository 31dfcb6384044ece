"""The ledger surface: checkpoints and proofs, for merchants and staff alike.

Proofs carry only salted leaf hashes and interior hashes, so they reveal nothing about other
parties' calls; any authenticated client may fetch them.
"""

from __future__ import annotations

from aiohttp import web

from gateway.api.appkeys import GATEWAY, TOKENS
from gateway.api.merchant import bearer_token
from gateway.api.params import query_int
from gateway.api.problems import json_response
from gateway.errors import InvalidTokenError, NotFoundError
from gateway.evidence.keys import published_checkpoint
from gateway.ledger.checkpoints import latest_checkpoint
from gateway.ledger.log import STREAMS
from gateway.ledger.tree import MerkleTree

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


def _tree(request: web.Request, stream: str) -> MerkleTree:
    gateway = request.app[GATEWAY]
    return MerkleTree(gateway.engine, stream, algorithm=gateway.settings.hash_algorithm)


async def checkpoint(request: web.Request) -> web.Response:
    """The newest signed checkpoint of a stream and the key that verifies it."""
    await _authenticate(request)
    gateway = request.app[GATEWAY]
    latest = await latest_checkpoint(gateway.engine, _stream(request))
    # With the key that signed it, which after a rotation may be a retired one.
    return json_response(published_checkpoint(latest, gateway.checkpoint_keys()))


async def inclusion(request: web.Request) -> web.Response:
    """Inclusion proof of record ``index`` in the tree of ``size`` (default: the newest
    checkpoint's size)."""
    await _authenticate(request)
    stream = _stream(request)
    gateway = request.app[GATEWAY]
    index = query_int(request, "index")
    if "size" in request.query:
        size = query_int(request, "size")
    else:
        size = (await latest_checkpoint(gateway.engine, stream)).size
    proof = await _tree(request, stream).inclusion_proof(index, size)
    return json_response({"stream": stream, **proof.to_dict()})


async def consistency(request: web.Request) -> web.Response:
    await _authenticate(request)
    stream = _stream(request)
    proof = await _tree(request, stream).consistency_proof(
        query_int(request, "first"), query_int(request, "second")
    )
    return json_response({"stream": stream, **proof.to_dict()})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/ledger/{stream}/checkpoint", checkpoint, allow_head=False)
    app.router.add_get("/v1/ledger/{stream}/proof/inclusion", inclusion, allow_head=False)
    app.router.add_get("/v1/ledger/{stream}/proof/consistency", consistency, allow_head=False)
