"""A read-only view of the gateway's store for listings, on SQLAlchemy Core alone.

Why a second way in: a listing (``dsgw merchant list``) reads a few columns of one table,
while the async engine of :func:`gateway.db.engines.engine_for` brings SQLAlchemy's ORM (its
asyncio extension imports it) and the mapped schema along: about a quarter of a second of
imports, a third of such a command. This opens the store with the synchronous driver the
gateway already ships for each dialect (``sqlite3``; ``psycopg``, as the log writer does),
for one read, without a pool.

A reader names its table with :func:`sqlalchemy.table`; ``tests/test_governance.py`` checks
every name against the mapped schema, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from gateway.errors import ConfigError

if TYPE_CHECKING:
    from gateway.settings import Settings

__all__ = ["read_engine", "sync_url"]


def sync_url(url: str) -> str:
    """The synchronous driver's URL for the store at ``url`` (an async URL, as
    :attr:`Settings.resolved_database_url` gives it). Raises :class:`ConfigError` for a
    dialect the gateway does not support."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite").render_as_string(hide_password=False)
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    raise ConfigError(
        f"database: unsupported URL scheme in {parsed.drivername!r}; "
        "use sqlite:///path or postgresql://user@host/db"
    )


def read_engine(settings: Settings) -> Engine:
    """An engine for one read of the gateway's own store; dispose of it after."""
    return create_engine(sync_url(settings.resolved_database_url), poolclass=NullPool)
