"""The gateway's store: engine creation (durability, pool limits) and schema migration that
any number of processes may start at once.

Why migrations take a lock: every gateway process migrates on start, and a production
deployment starts many at once against one PostgreSQL. A session-level advisory lock lets
one of them run the migrations while the others wait, then find the schema at head. Why a
``lock_timeout``: DDL waiting for a table lock blocks every query queued behind it, so a
migration stuck behind a long transaction gives up after a few seconds and tries again
rather than stalling the gateways' traffic. ``docs/postgresql.md`` has the policy.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from gateway.db.schema import Base
from gateway.db.sessions import LOCK_NAMESPACE
from gateway.errors import ConfigError
from gateway.settings import Settings

__all__ = ["MIGRATION_LOCK_KEY", "Base", "create_engine", "engine_for", "migrate"]

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
# Second key of the advisory lock every dsgw process migrates under (gateway.db.sessions).
MIGRATION_LOCK_KEY = 101
# Marks an engine whose connections go through a transaction-mode pooler (PgBouncer), where
# a session-level lock cannot be held: such an engine never migrates (see ``migrate``).
_POOLED_BY_TRANSACTION = "dsgw_pooled_by_transaction"
_LOCK_NOT_AVAILABLE = "55P03"


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
                _POOLED_BY_TRANSACTION: True,
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


# -- migration --------------------------------------------------------------------------


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


@functools.cache
def _script() -> ScriptDirectory:
    """The migration scripts, read once per process: alembic imports every revision file to
    build its map, which cost each start-up (and each CLI command) a few hundred ms."""
    return ScriptDirectory.from_config(_config())


def _heads(connection: Connection) -> tuple[str, ...]:
    return tuple(MigrationContext.configure(connection).get_current_heads())


def _behind(script: ScriptDirectory, heads: tuple[str, ...]) -> bool:
    """Whether the schema needs migrating; refuses a revision this code does not know."""
    head = script.get_current_head()
    for revision in heads:
        try:
            known = script.get_revision(revision) is not None
        except CommandError:
            known = False
        if not known:
            raise ConfigError(
                f"database: the schema is at revision {revision}, which this dsgw release "
                f"does not know (its newest is {head}): a newer release has migrated this "
                "database. Run that release or a newer one; this one refuses to start "
                "rather than serve a schema it was not written for."
            )
    return heads != (head,)


def _upgrade(connection: Connection, timezone: str = "Asia/Shanghai") -> None:
    config = _config()
    config.attributes["connection"] = connection
    # Migration 0011 reads the deployment zone to move date-only periods onto its days.
    config.attributes["timezone"] = timezone
    command.upgrade(config, "head")


def _lock_not_available(exc: BaseException) -> bool:
    return isinstance(exc, DBAPIError) and (
        getattr(exc.orig, "sqlstate", None) == _LOCK_NOT_AVAILABLE
    )


async def migrate(
    engine: AsyncEngine,
    *,
    lock_timeout: float = 5.0,
    attempts: int = 5,
    retry_delay: float = 1.0,
    lock_wait: float = 1800.0,
    timezone: str = "Asia/Shanghai",
) -> None:
    """Bring the schema to the newest migration. Safe to run on every start, by any number
    of processes at once; a schema already at head costs one query and takes no lock.

    On PostgreSQL the migrations run under an advisory lock (:data:`MIGRATION_LOCK_KEY`), one
    transaction each (a migration may build an index ``CONCURRENTLY`` outside any), with
    every statement waiting at most ``lock_timeout`` seconds for a table lock. A migration
    that times out is rolled back and tried again, ``attempts`` times in all, after
    ``retry_delay`` seconds doubling each time. On SQLite one transaction runs them all.

    Raises :class:`ConfigError` if the database is at a revision this code does not know,
    if another process held the migration lock for longer than ``lock_wait`` seconds, if a
    migration could not take its locks, if the engine goes through a transaction-mode
    pooler and the schema is behind, or if a migration fails.
    """
    script = _script()
    try:
        if engine.dialect.name == "postgresql":
            await _migrate_postgresql(
                engine,
                script,
                lock_timeout=lock_timeout,
                attempts=attempts,
                retry_delay=retry_delay,
                lock_wait=lock_wait,
                timezone=timezone,
            )
            return
        async with engine.begin() as connection:
            if _behind(script, await connection.run_sync(_heads)):
                await connection.run_sync(_upgrade, timezone)
    except (SQLAlchemyError, OSError, CommandError) as exc:
        raise ConfigError(f"database: migration failed: {exc}") from exc


async def _migrate_postgresql(
    engine: AsyncEngine,
    script: ScriptDirectory,
    *,
    lock_timeout: float,
    attempts: int,
    retry_delay: float,
    lock_wait: float,
    timezone: str,
) -> None:
    async with engine.connect() as connection:
        behind = _behind(script, await connection.run_sync(_heads))
        await connection.commit()
        if not behind:
            return
        if engine.get_execution_options().get(_POOLED_BY_TRANSACTION):
            raise ConfigError(
                f"database: the schema needs migrating to {script.get_current_head()}, but "
                "database_statement_cache = false says connections go through a "
                "transaction-mode pooler, where the migration lock cannot be held: run "
                "`dsgw init` with database_url pointing at PostgreSQL itself, then start "
                "the gateways"
            )
        await _take_lock(connection, lock_wait)
        try:
            await connection.execute(text(f"SET lock_timeout = '{round(lock_timeout * 1000)}ms'"))
            await connection.commit()
            retrying = AsyncRetrying(
                retry=retry_if_exception(_lock_not_available),
                stop=stop_after_attempt(attempts),
                # retry_delay, then doubling: retry_delay * 2 ** (attempt - 1).
                wait=wait_exponential(multiplier=retry_delay, exp_base=2),
                before_sleep=_log_lock_retry(attempts, lock_timeout),
                reraise=True,
            )
            try:
                await retrying(_upgrade_under_lock, connection, script, timezone)
            except DBAPIError as exc:
                if not _lock_not_available(exc):
                    raise
                raise ConfigError(
                    f"database: a migration waited more than {lock_timeout:g} s for "
                    f"a table lock, {attempts} times: a long transaction holds the "
                    "table (see pg_stat_activity); end it or retry when it is done. "
                    f"Last error: {exc.orig}"
                ) from exc
        finally:
            # Closing the session releases the lock and drops the session's lock_timeout,
            # whatever state a failed migration left it in; the pool opens a fresh one.
            await connection.invalidate()


async def _upgrade_under_lock(
    connection: AsyncConnection, script: ScriptDirectory, timezone: str
) -> None:
    """One try at the migrations, under the migration lock already held. A try that timed
    out on a table lock is rolled back before it is raised, so that nothing it took is held
    while the next try waits."""
    try:
        # Read again under the lock: another process may have migrated meanwhile.
        if _behind(script, await connection.run_sync(_heads)):
            await connection.commit()
            await connection.run_sync(_upgrade, timezone)
        await connection.commit()
    except DBAPIError as exc:
        if _lock_not_available(exc):
            await connection.rollback()
        raise


def _log_lock_retry(attempts: int, lock_timeout: float) -> Callable[[RetryCallState], None]:
    """The warning logged before each wait for another try."""

    def log_retry(state: RetryCallState) -> None:
        log.warning(
            "database: migration %d/%d waited more than %g s for a table lock; "
            "trying again in %g s",
            state.attempt_number,
            attempts,
            lock_timeout,
            state.upcoming_sleep,
        )

    return log_retry


async def _take_lock(connection: AsyncConnection, lock_wait: float) -> None:
    """Take the migration lock, waiting at most ``lock_wait`` seconds for another process's
    migration. Session-level: it outlives the migrations' own transactions and goes with
    the session if the process dies."""
    deadline = time.monotonic() + lock_wait
    told = 0.0
    key = {"namespace": LOCK_NAMESPACE, "key": MIGRATION_LOCK_KEY}
    while True:
        taken = await connection.scalar(text("SELECT pg_try_advisory_lock(:namespace, :key)"), key)
        await connection.commit()
        if taken:
            return
        now = time.monotonic()
        if now >= deadline:
            raise ConfigError(
                f"database: another process has held the migration lock for more than "
                f"{lock_wait:g} s (pg_locks: locktype 'advisory', classid {LOCK_NAMESPACE}, "
                f"objid {MIGRATION_LOCK_KEY}); start again once its migration is done"
            )
        if now - told >= 30.0:
            log.info("database: waiting for another process's migration to finish")
            told = now
        await asyncio.sleep(0.2)
