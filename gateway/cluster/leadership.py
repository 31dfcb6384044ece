"""One leader among all gateway processes, for the work that must run exactly once.

Serving calls scales out; some background work must not: two anchoring workers would sign
with the same account and race for its nonces, and every process folding the same trees
and signing the same checkpoints is waste. Every process of a deployment therefore runs a
:class:`Leadership` loop and only the holder of the deployment's leader lock runs that work.

The lock dies with its holder, so failover needs no lease arithmetic and no clock agreement:

* **PostgreSQL** (several machines): a session-level advisory lock held on a connection of
  its own. A killed process's connection closes and the server releases the lock at once;
  a machine that vanishes is detected by TCP keepalives set on that connection (about 25 s
  in the worst case). The leader checks its connection every ``interval`` and steps down
  the moment it fails, before anyone else can have taken over.
* **SQLite** (one machine): an exclusive ``flock`` on a file in the data directory, which
  the kernel releases when the process dies.

Whoever holds the lock next resumes from the database, which is where all the work's state
is: the anchoring worker's queued, signed and broadcast transactions, the checkpoints, the
monitor's cursor. Nothing the old leader did is lost and nothing is done twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final, Protocol

import asyncpg
from sqlalchemy.engine import URL

from gateway.db.sessions import LOCK_NAMESPACE, close_session, libpq_dsn
from gateway.dependencies import DependencyHealth, describe
from gateway.tasks import Supervised

__all__ = [
    "LEADER_LOCK_KEY",
    "FileLeaderLock",
    "LeaderLock",
    "Leadership",
    "PostgresLeaderLock",
    "application_name",
    "leader_lock_for",
]

log = logging.getLogger(__name__)

LEADER_LOCK_KEY: Final = 100
_PG_ERRORS: Final = (asyncpg.PostgresError, asyncpg.InterfaceError)


class LeaderLock(Protocol):
    """A lock that only one process of the deployment can hold at a time."""

    async def try_acquire(self) -> bool:
        """Take the lock if it is free; ``True`` if this process now holds it."""

    async def held(self) -> bool:
        """Whether this process still holds the lock (``False`` once it may have lost it)."""

    async def release(self) -> None:
        """Give the lock up (harmless when not held)."""


class FileLeaderLock:
    """``flock`` on ``path``: one holder per machine, released by the kernel on exit."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    async def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    async def held(self) -> bool:
        return self._fd is not None

    async def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class PostgresLeaderLock:
    """A session advisory lock on a dedicated connection (not from the pool: returning a
    pooled connection would hand the lock to whoever borrows it next)."""

    # Server-side keepalives on the lock's connection: a leader whose machine is gone is
    # dropped after about idle + interval * count seconds, and its lock with it.
    KEEPALIVES: Final = {
        "tcp_keepalives_idle": "10",
        "tcp_keepalives_interval": "5",
        "tcp_keepalives_count": "3",
    }

    def __init__(
        self,
        url: URL,
        *,
        key: int = LEADER_LOCK_KEY,
        timeout: float = 5.0,
        health: DependencyHealth | None = None,
    ) -> None:
        self._dsn = libpq_dsn(url)
        self._key = key
        self._timeout = timeout
        self._conn: Any = None
        # A database that is down is logged there once, not once per campaign round.
        self._health = health or DependencyHealth()

    async def _connection(self) -> Any:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                self._dsn,
                timeout=self._timeout,
                server_settings={"application_name": application_name(), **self.KEEPALIVES},
            )
        return self._conn

    async def try_acquire(self) -> bool:
        try:
            conn = await self._connection()
            async with asyncio.timeout(self._timeout):
                got = await conn.fetchval(
                    "SELECT pg_try_advisory_lock($1, $2)", LOCK_NAMESPACE, self._key
                )
        except (OSError, TimeoutError, *_PG_ERRORS) as exc:
            if not self._health.absorb(exc):
                log.warning("leadership: cannot reach PostgreSQL to campaign: %s", exc)
            await self._drop()
            return False
        self._health.recovered("database")
        return bool(got)

    async def held(self) -> bool:
        if self._conn is None or self._conn.is_closed():
            return False
        try:
            async with asyncio.timeout(self._timeout):
                # The lock lives exactly as long as this session: a session that still
                # answers still holds it (pg_locks would say the same, at more cost).
                await self._conn.fetchval("SELECT 1")
        except (OSError, TimeoutError, *_PG_ERRORS) as exc:
            self._health.absorb(exc)
            log.error("leadership: lost the leader connection: %s", describe(exc))
            await self._drop()
            return False
        return True

    async def release(self) -> None:
        if self._conn is not None and not self._conn.is_closed():
            with contextlib.suppress(OSError, TimeoutError, *_PG_ERRORS):
                async with asyncio.timeout(self._timeout):
                    await self._conn.fetchval(
                        "SELECT pg_advisory_unlock($1, $2)", LOCK_NAMESPACE, self._key
                    )
        await self._drop()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        # Ending the session releases the lock whatever state it is in.
        await close_session(conn, self._timeout)


def application_name() -> str:
    """``dsgw-leader <host> <pid>``: the lock connection's name, so an operator can ask
    PostgreSQL who leads (``docs/cluster.md``)."""
    return f"dsgw-leader {socket.gethostname()[:40]} {os.getpid()}"


def leader_lock_for(
    url: URL, data_dir: Path, *, health: DependencyHealth | None = None
) -> LeaderLock:
    """The leader lock that fits the store: PostgreSQL's, else a file beside SQLite's."""
    if url.get_backend_name() == "postgresql":
        return PostgresLeaderLock(url, health=health)
    return FileLeaderLock(data_dir / "leader.lock")


class Leadership:
    """Campaigns for ``lock`` every ``interval`` seconds; runs ``on_elected`` when this
    process wins it and ``on_deposed`` when it loses it (or stops)."""

    def __init__(
        self,
        lock: LeaderLock,
        *,
        on_elected: Callable[[], Awaitable[None]],
        on_deposed: Callable[[], Awaitable[None]],
        interval: float = 1.0,
    ) -> None:
        self._lock = lock
        self._on_elected = on_elected
        self._on_deposed = on_deposed
        self._interval = interval
        self._task = Supervised("dsgw-leadership", log=log)
        self._stopping = asyncio.Event()
        self.leading = False
        self.terms = 0
        self.changed = asyncio.Event()

    def start(self) -> None:
        if not self._task.running:
            self._stopping.clear()
            self._task.start(self._run)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                if not self.leading:
                    if await self._lock.try_acquire():
                        await self._elected()
                elif not await self._lock.held():
                    await self._deposed("lost the leader lock")
            except Exception:  # the campaign must outlive any one failed round
                log.exception("leadership: round failed")
                if self.leading:
                    await self._deposed("a round failed")
                    await self._lock.release()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval)

    async def _elected(self) -> None:
        self.leading = True
        self.terms += 1
        log.info("leadership: this process (pid %d) now leads", os.getpid())
        try:
            await self._on_elected()
        finally:
            self.changed.set()

    async def _deposed(self, why: str) -> None:
        self.leading = False
        log.warning("leadership: stepping down (%s)", why)
        try:
            await self._on_deposed()
        finally:
            self.changed.set()

    async def stop(self) -> None:
        """Stop campaigning; a leader finishes its work's current round and lets go."""
        if self._task.running:
            self._stopping.set()
            await self._task.join()
        if self.leading:
            await self._deposed("stopping")
        await self._lock.release()
