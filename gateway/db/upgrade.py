"""Schema migration that any number of processes may start at once.

Why migrations take a lock: every gateway process migrates on start, and a production
deployment starts many at once against one PostgreSQL. A session-level advisory lock lets
one of them run the migrations while the others wait, then find the schema at head. Why a
``lock_timeout``: DDL waiting for a table lock blocks every query queued behind it, so a
migration stuck behind a long transaction gives up after a few seconds and tries again
rather than stalling the gateways' traffic. ``docs/postgresql.md`` has the policy.

Alembic is imported here only, so commands that just read the store do not load it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from gateway.db.sessions import LOCK_NAMESPACE, POOLED_BY_TRANSACTION
from gateway.errors import ConfigError

__all__ = ["MIGRATIONS", "MIGRATION_LOCK_KEY", "migrate"]

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
# Second key of the advisory lock every dsgw process migrates under (gateway.db.sessions).
MIGRATION_LOCK_KEY = 101
_LOCK_NOT_AVAILABLE = "55P03"


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
        if engine.get_execution_options().get(POOLED_BY_TRANSACTION):
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
