"""Sending the cluster-wide notice that policy changed, from inside the change's transaction.

Kept apart from :mod:`gateway.cluster.policy_push` (which listens and reloads the policy
store) so that the unit of work that makes every change can announce it without importing
the policy store: nothing here imports governance.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["POLICY_CHANNEL", "POLICY_STREAMS", "announce_policy_change"]

POLICY_CHANNEL: Final = "dsgw_policy"
# Streams every policy change appends to (:class:`gateway.governance.unit_of_work.UnitOfWork`).
POLICY_STREAMS: Final = ("governance", "products")


async def announce_policy_change(conn: AsyncConnection) -> None:
    """Queue the cluster-wide notice of a change in ``conn``'s transaction (PostgreSQL
    sends it on commit, never for a rolled-back change; other stores rely on the poll)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": POLICY_CHANNEL})
