"""Telling gateway processes on other machines that policy changed.

A revocation, a suspension or a supervision measure commits to the database and bumps the
machine-local epoch file (:mod:`gateway.governance.epoch`), which every process on *that*
machine checks before each call. Processes on other machines learn of it two ways:

* **Push.** On PostgreSQL the change's own transaction sends ``NOTIFY dsgw_policy``, which
  the server delivers when (and only if) it commits. Each process LISTENs on a connection of
  its own and reloads its policy snapshot before its next call: the change is in force
  there within the notification's delivery time, a few milliseconds on a LAN.
* **Poll, as a bound.** A notification can be missed (the listening connection broke and
  was re-made), so every ``poll_seconds`` each process also compares the heads of the
  ``governance`` and ``products`` streams, which every change appends to, with what it saw
  last. However the push fails, a change is in force everywhere within that bound. A lost
  listening connection also counts as a possible change: the process reloads rather than
  trust it heard everything.

When the database is down neither channel works. The store then decides from its last
snapshot for at most ``policy_max_staleness_seconds`` (:class:`PolicyStore`), reconnecting
with a growing delay, and the outage is logged once (:mod:`gateway.dependencies`), not once
per attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.cluster.announce import POLICY_CHANNEL, POLICY_STREAMS
from gateway.db.schema import LogEntryRow
from gateway.db.sessions import close_session, libpq_dsn
from gateway.dependencies import DependencyHealth
from gateway.governance.policy import PolicyStore
from gateway.tasks import Supervised

__all__ = ["PolicyWatch"]

log = logging.getLogger(__name__)


async def _policy_heads(engine: AsyncEngine) -> tuple[tuple[str, int], ...]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(LogEntryRow.stream, func.max(LogEntryRow.seq))
            .where(LogEntryRow.stream.in_(POLICY_STREAMS))
            .group_by(LogEntryRow.stream)
        )
        return tuple(sorted((row[0], int(row[1])) for row in rows))


class PolicyWatch:
    """Reloads ``policy`` when another process, on any machine, changed it."""

    def __init__(
        self,
        engine: AsyncEngine,
        policy: PolicyStore,
        *,
        session_url: URL | None = None,
        poll_seconds: float = 2.0,
        reconnect_seconds: float = 1.0,
        reconnect_max_seconds: float = 10.0,
        health: DependencyHealth | None = None,
    ) -> None:
        self._engine = engine
        self._policy = policy
        # The listener's own connection: a LISTEN needs a session (not a pooled one).
        self._session_url = session_url or engine.url
        self._poll_seconds = poll_seconds
        self._reconnect_seconds = reconnect_seconds
        self._reconnect_max_seconds = reconnect_max_seconds
        self._health = health or DependencyHealth()
        self._poll_task = Supervised("dsgw-policy-poll", log=log)
        self._listen_task = Supervised("dsgw-policy-listen", log=log)
        self._listener: Any = None
        self._heads: tuple[tuple[str, int], ...] | None = None
        self.notifications = 0
        self.polled_changes = 0
        # Set once the push channel listens (tests wait on it; PostgreSQL only).
        self.listening = asyncio.Event()

    def start(self) -> None:
        self._poll_task.start(self._poll)
        if self._engine.dialect.name == "postgresql":
            self._listen_task.start(self._listen)

    async def stop(self) -> None:
        # Both cancelled before either is waited for: neither outlives the other's end.
        self._poll_task.cancel()
        self._listen_task.cancel()
        await self._poll_task.stop()
        await self._listen_task.stop()
        await self._close_listener()

    def _changed(self) -> None:
        self._policy.remote_change()

    def _notified(self, *_args: Any) -> None:
        self.notifications += 1
        self._changed()

    async def _poll(self) -> None:
        while True:
            try:
                heads = await _policy_heads(self._engine)
            except (SQLAlchemyError, OSError) as exc:
                if not self._health.absorb(exc):
                    log.warning("policy watch: cannot read the policy streams: %s", exc)
            else:
                self._health.recovered("database")
                if self._heads is not None and heads != self._heads:
                    self.polled_changes += 1
                    self._changed()
                self._heads = heads
            await asyncio.sleep(self._poll_seconds)

    async def _listen(self) -> None:
        import asyncpg

        dsn = libpq_dsn(self._session_url)
        delay = self._reconnect_seconds
        while True:
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(
                    dsn, timeout=5, server_settings={"application_name": "dsgw-policy-watch"}
                )
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(POLICY_CHANNEL, self._notified)
                self._listener = conn
                # Changes made while no one listened were not pushed: reload once now.
                self._policy.possibly_changed()
                self.listening.set()
                self._health.recovered("database")
                delay = self._reconnect_seconds
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), self._poll_seconds)
                    if not lost.is_set():
                        # Notices arrive only while the connection reads; a ping also
                        # finds a connection the network silently dropped.
                        async with asyncio.timeout(5):
                            await conn.fetchval("SELECT 1")
                log.warning("policy watch: the listening connection closed; reconnecting")
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                if not self._health.absorb(exc):
                    log.warning("policy watch: cannot listen for policy changes: %s", exc)
            if self.listening.is_set():
                # Notices may have been sent while the connection was going: until a reload
                # succeeds, the policy is only as current as the moment it was lost.
                self._policy.possibly_changed()
            self.listening.clear()
            await self._close_listener()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._reconnect_max_seconds)

    async def _close_listener(self) -> None:
        conn, self._listener = self._listener, None
        await close_session(conn, 2)
