"""The figures a metrics scrape reads from the store: every stream's size and its anchoring
backlog (:func:`gateway.chain.status.anchoring_status`).

Who may scrape is decided here too: staff with ``metrics.read`` (the operator and the
supervisor), asked before the store is read, so a refused scrape costs the store nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.authorization.roles import Action
from gateway.chain.status import AnchoringStatus, anchoring_status
from gateway.governance.actor import Actor
from gateway.ledger.log import STREAMS, stream_size

__all__ = ["StoreFigures", "store_figures"]


@dataclass(frozen=True, slots=True)
class StoreFigures:
    """The store's part of a scrape."""

    anchoring: AnchoringStatus
    # (stream, records in it), for every stream.
    sizes: tuple[tuple[str, int], ...]


async def store_figures(engine: AsyncEngine, actor: Actor) -> StoreFigures:
    """Every stream's size and anchoring backlog, for ``actor``'s scrape. Raises
    :class:`ForbiddenError` (before reading anything) for a role without ``metrics.read``,
    and what the store raises when it cannot be read."""
    actor.may(Action.READ_METRICS)
    anchoring = await anchoring_status(engine)
    sizes = tuple([(stream, await stream_size(engine, stream)) for stream in STREAMS])
    return StoreFigures(anchoring, sizes)
