"""The gateway's store engines: engine creation (durability, pool limits), and :func:`migrate`,
whose work (:mod:`gateway.db.upgrade`, with alembic) is loaded only when it runs.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gateway.db.schema import Base
from gateway.db.sessions import POOLED_BY_TRANSACTION
from gateway.errors import ConfigError

if TYPE_CHECKING:
    from gateway.settings import Settings

__all__ = [
    "HEAD_REVISION",
    "Base",
    "create_engine",
    "engine_for",
    "migrate",
]


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the single writer; synchronous=FULL makes every commit
    # durable across power loss, which the call log's "durable before answer" rule needs.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _statement_name() -> str:
    return f"__asyncpg_{uuid.uuid4()}__"


def create_engine(
    url: str,
    *,
    pool_size: int = 10,
    max_overflow: int = 10,
    pool_timeout: float = 5.0,
    statement_cache: bool = True,
    **kwargs: Any,
) -> AsyncEngine:
    """An async engine for ``url`` with the durability settings the log relies on.

    On PostgreSQL each process keeps at most ``pool_size + max_overflow`` connections and a
    caller waits at most ``pool_timeout`` seconds for one before SQLAlchemy raises
    ``sqlalchemy.exc.TimeoutError`` (the API answers 503). ``statement_cache=False`` is for
    a transaction-mode pooler such as PgBouncer: no prepared statement outlives its
    statement, and each gets a unique name, as SQLAlchemy's asyncpg dialect documents.
    Raises :class:`ConfigError` for a URL scheme the gateway does not support.
    """
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    if url.startswith("postgresql"):
        if not statement_cache:
            kwargs["connect_args"] = {
                **kwargs.get("connect_args", {}),
                "statement_cache_size": 0,
                "prepared_statement_cache_size": 0,
                "prepared_statement_name_func": _statement_name,
            }
            kwargs["execution_options"] = {
                **kwargs.get("execution_options", {}),
                POOLED_BY_TRANSACTION: True,
            }
        return create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=pool_timeout,
            pool_pre_ping=True,
            **kwargs,
        )
    raise ConfigError(
        f"database: unsupported URL scheme in {url.split(':', 1)[0]!r}; "
        "use sqlite:///path or postgresql://user@host/db"
    )


def engine_for(settings: Settings) -> AsyncEngine:
    """The engine of the gateway's own store, with the deployment's pool settings."""
    return create_engine(
        settings.resolved_database_url,
        pool_size=settings.database.pool_size,
        max_overflow=settings.database.max_overflow,
        pool_timeout=settings.database.pool_timeout_seconds,
        statement_cache=settings.database.statement_cache,
    )


#: The newest migration in ``gateway/migrations/versions`` (tests/test_store_production.py
#: checks that it is alembic's head): a store at it needs no migration and no alembic.
HEAD_REVISION = "0012_privacy"


async def migrate(engine: AsyncEngine, **options: Any) -> None:
    """Bring the schema to the newest migration (:func:`gateway.db.upgrade.migrate`, which
    documents the options and what it raises). A store already at :data:`HEAD_REVISION`
    costs one query: every process start and every command opens one."""
    if await _at_head(engine):
        return
    from gateway.db.upgrade import migrate as upgrade

    await upgrade(engine, **options)


async def _at_head(engine: AsyncEngine) -> bool:
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
    except SQLAlchemyError:
        return False  # no version table yet, or the store is down: the full path says which
    return [row[0] for row in rows] == [HEAD_REVISION]
