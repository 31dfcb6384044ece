"""Connections of their own, beside the engine's pool, for what needs a whole session:
the call-log writer's thread, the leader lock, the policy listener."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Final

from sqlalchemy.engine import URL

__all__ = ["LOCK_NAMESPACE", "POOLED_BY_TRANSACTION", "close_session", "libpq_dsn"]

# First key of every dsgw advisory lock: "dsgw" in ASCII, so the locks cannot collide with
# another application's on a shared server. Second keys: the log streams 0-2 (their index
# in STREAMS), the leader lock 100, migrations 101, and from 2^20 up one per merchant and
# dataset for the overlap audit (gateway.privacy.overlap.lock_key).
LOCK_NAMESPACE: Final = 0x64736777
# Marks an engine whose connections go through a transaction-mode pooler (PgBouncer), where
# a session-level lock cannot be held: such an engine never migrates (gateway.db.upgrade).
POOLED_BY_TRANSACTION: Final = "dsgw_pooled_by_transaction"


def libpq_dsn(url: URL) -> str:
    """``url`` (an async SQLAlchemy URL) as a plain ``postgresql://`` DSN for asyncpg or
    psycopg connections opened outside the engine."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def close_session(conn: Any, timeout: float) -> None:
    """Close an asyncpg connection, or drop it if closing does not finish in ``timeout``
    seconds: either way the session ends, and with it its locks and LISTENs."""
    if conn is None or conn.is_closed():
        return
    with contextlib.suppress(Exception):
        await asyncio.wait_for(conn.close(), timeout)
    if not conn.is_closed():
        conn.terminate()
