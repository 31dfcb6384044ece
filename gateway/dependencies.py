"""What the gateway needs to answer a call, and what happens when one of those goes away.

A call needs the store (database), the local disk under the store and the data directory,
the keystore, and Redis when quotas are shared through it. When one of them fails the
gateway refuses with a 503 problem naming it (:class:`~gateway.errors.DependencyUnavailableError`
and its subclasses) and a ``Retry-After``; it never answers 500 for an outage and never
shows a caller a driver message or an internal address.

Two pieces, used by the HTTP layer, the call-log writer, the policy watch, the background
loops and ``/metrics`` alike:

- :func:`dependency_error` classifies any exception in one place: SQLAlchemy, asyncpg,
  psycopg, sqlite3, redis-py and ``OSError`` failures that mean "the dependency is not
  there" become the matching problem; anything else (a bug) is left alone (``None``).
- :class:`DependencyHealth` is this process's view of each dependency. It logs one line
  when a dependency goes (with the driver's message, for operators) and one when it is
  back, however many calls fail in between, and tells its listeners (the
  ``dsgw_dependency_up`` gauge and the failures counter) about every change.
"""

from __future__ import annotations

import errno
import logging
import socket
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final, Protocol

from sqlalchemy.exc import DBAPIError, DisconnectionError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from gateway.errors import (
    DependencyUnavailableError,
    DiskFullError,
    DsgwError,
    KeystoreError,
    KeystoreUnavailableError,
    QuotaStoreUnavailableError,
    StoreUnavailableError,
)

__all__ = [
    "DEPENDENCIES",
    "DependencyHealth",
    "HealthListener",
    "dependency_error",
    "describe",
]

log = logging.getLogger(__name__)


def _raised_by(exc: BaseException, module: str, *names: str) -> bool:
    """Whether ``exc`` is one of ``module``'s exception classes ``names``.

    A driver not imported yet cannot have raised anything, so it is not imported here: the
    drivers (redis, psycopg, asyncpg) cost a CLI command most of a second to import, and
    only the one a deployment uses is ever loaded.
    """
    loaded = sys.modules.get(module)
    return loaded is not None and isinstance(exc, tuple(getattr(loaded, n) for n in names))


#: Every dependency the gateway tracks, as the ``dependency`` label of its metrics.
DEPENDENCIES: Final = ("database", "disk", "keystore", "redis")

_DISK_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT})
# SQLite primary result codes (the low byte of sqlite3.Error.sqlite_errorcode).
_SQLITE_BUSY: Final = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
_SQLITE_FULL: Final = sqlite3.SQLITE_FULL
_SQLITE_DOWN: Final = frozenset(
    {sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY}
)
# PostgreSQL SQLSTATEs that mean the server is not there for us (not that a statement is
# wrong): connection exceptions (class 08), shutdown or start-up in progress, no free
# connection slot, a resource the server ran out of, and a standby after a failover.
_PG_DOWN_CLASSES: Final = ("08", "53", "57P0")
_PG_DOWN_STATES: Final = frozenset({"25006", "58030"})
# How far :func:`dependency_error` follows ``__cause__``/``__context__``/``.orig`` links.
_MAX_DEPTH: Final = 8

_STORE_DOWN: Final = (
    "the gateway's store is unavailable; nothing was answered or recorded. Retry shortly"
)
_STORE_BUSY: Final = (
    "the gateway's store is busy: no database connection came free in time; retry shortly"
)
_DISK_FULL: Final = "the gateway's disk is full; nothing was answered or recorded. Retry later"
_REDIS_DOWN: Final = (
    "the shared quota store is unreachable; the call is refused rather than answered "
    "without its limits. Retry shortly"
)
_KEYSTORE_DOWN: Final = "the gateway's keystore cannot be read; retry later"


def _links(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps (``.orig`` of SQLAlchemy errors, causes, contexts),
    breadth first, each once, at most :data:`_MAX_DEPTH` deep."""
    seen: set[int] = set()
    level = [exc]
    for _ in range(_MAX_DEPTH):
        following: list[BaseException] = []
        for item in level:
            if id(item) in seen:
                continue
            seen.add(id(item))
            yield item
            orig = getattr(item, "orig", None)
            for link in (orig, item.__cause__, item.__context__):
                if isinstance(link, BaseException):
                    following.append(link)
        if not following:
            return
        level = following


def _sqlstate(exc: BaseException) -> str | None:
    state = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    return state if isinstance(state, str) else None


def _classify(exc: BaseException) -> DependencyUnavailableError | None:
    """The problem one exception (not its links) stands for, if it means an outage."""
    if isinstance(exc, DependencyUnavailableError):
        return exc
    if isinstance(exc, KeystoreError):
        return KeystoreUnavailableError(_KEYSTORE_DOWN)
    if isinstance(exc, PoolTimeoutError):
        return StoreUnavailableError(_STORE_BUSY, outage=False)
    if _raised_by(exc, "redis.exceptions", "RedisError"):
        return QuotaStoreUnavailableError(_REDIS_DOWN)
    if isinstance(exc, sqlite3.Error):
        code = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
        if code == _SQLITE_FULL:
            return DiskFullError(_DISK_FULL)
        if code in _SQLITE_BUSY:
            return StoreUnavailableError(_STORE_BUSY, outage=False)
        if code in _SQLITE_DOWN:
            return StoreUnavailableError(_STORE_DOWN)
        return None
    state = _sqlstate(exc)
    if state is not None:
        if state.startswith(_PG_DOWN_CLASSES) or state in _PG_DOWN_STATES:
            return StoreUnavailableError(_STORE_DOWN)
        return None
    if _raised_by(exc, "psycopg", "OperationalError", "InterfaceError"):
        return StoreUnavailableError(_STORE_DOWN)  # connection failed, or closed under us
    if _raised_by(exc, "asyncpg", "InterfaceError") and "closed" in str(exc):
        return StoreUnavailableError(_STORE_DOWN)
    if isinstance(exc, DisconnectionError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        return StoreUnavailableError(_STORE_DOWN)
    if isinstance(exc, OSError):
        if exc.errno in _DISK_ERRNOS:
            return DiskFullError(_DISK_FULL)
        # The database drivers let socket errors through unwrapped when connecting
        # (asyncpg under SQLAlchemy raises ConnectionRefusedError itself); redis-py and the
        # connectors wrap theirs, so a bare one here is the store's.
        if isinstance(exc, ConnectionError | socket.gaierror | TimeoutError):
            return StoreUnavailableError(_STORE_DOWN)
    return None


def dependency_error(exc: BaseException) -> DependencyUnavailableError | None:
    """The 503 problem ``exc`` stands for when it means a required dependency failed, or
    ``None`` when it does not (a bug stays a bug: the caller answers 500 for it).

    Follows what ``exc`` wraps, so ``DsgwError("... failed") from OperationalError(...)``
    is classified by its cause. Only an internal error (500) is: a refusal the code already
    made (4xx) or a 503 it already named (``source-unavailable``: a data source of a
    department, not the gateway's own store) is never reclassified. The returned error's detail
    is fixed text: log :func:`describe` of ``exc`` for the driver's message.
    """
    if (
        isinstance(exc, DsgwError)
        and not isinstance(exc, DependencyUnavailableError)
        and exc.status != 500
    ):
        # A refusal the code already made, or an outage it already named: a data source
        # that is down (source-unavailable) is not the gateway's store, whatever its cause.
        return None
    for link in _links(exc):
        found = _classify(link)
        if found is not None:
            return found
    return None


def describe(exc: BaseException) -> str:
    """One line for the operator's log: the outermost driver error under ``exc`` (the
    first that is neither a dsgw error nor a SQLAlchemy wrapper), its type and the first
    line of its message. Never SQLAlchemy's rendering, which appends the statement and its
    parameters (personal data, possibly)."""
    chosen: BaseException = exc
    for link in _links(exc):
        if isinstance(link, Exception) and not isinstance(link, DsgwError | SQLAlchemyError):
            chosen = link
            break
    if isinstance(chosen, DsgwError):
        first = chosen.detail
    else:
        lines = str(chosen).strip().splitlines()
        first = lines[0] if lines else ""
    name = type(chosen).__name__
    return f"{name}: {first[:300]}" if first else name


class HealthListener(Protocol):
    """Told of every change and failure (the metrics)."""

    def dependency_changed(self, dependency: str, up: bool) -> None: ...

    def dependency_failed(self, dependency: str) -> None: ...


@dataclass(slots=True)
class _Outage:
    since: float
    failures: int
    cause: str


class DependencyHealth:
    """This process's view of its dependencies: up until an operation on one fails, down
    until one succeeds again (or a probe finds it back).

    Logs exactly one line (WARNING) when a dependency goes, with the cause, and one when it
    is back, with how long it was gone and how many operations failed meanwhile; repeated
    failures in between are logged at DEBUG only. Not thread-safe: report from the event
    loop.
    """

    def __init__(
        self,
        dependencies: tuple[str, ...] = DEPENDENCIES,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        # What this process uses (Redis only when configured): what listeners are told of.
        self.dependencies = dependencies
        self._monotonic = monotonic
        self._outages: dict[str, _Outage] = {}
        self._listeners: list[HealthListener] = []

    def subscribe(self, listener: HealthListener) -> None:
        """Tell ``listener`` about every change from now on (the current state first)."""
        self._listeners.append(listener)
        for dependency in self.dependencies:
            listener.dependency_changed(dependency, self.is_up(dependency))

    def is_up(self, dependency: str) -> bool:
        return dependency not in self._outages

    def down(self) -> dict[str, str]:
        """Every dependency now down, with the cause first seen."""
        return {name: outage.cause for name, outage in self._outages.items()}

    def failed(self, dependency: str, cause: BaseException | str) -> None:
        """An operation on ``dependency`` failed because of ``cause``."""
        text = cause if isinstance(cause, str) else describe(cause)
        outage = self._outages.get(dependency)
        if outage is None:
            self._outages[dependency] = _Outage(self._monotonic(), 1, text)
            log.warning(
                "dependency %s is down: %s",
                dependency,
                text,
                extra={"dependency": dependency, "event": "down"},
            )
            for listener in self._listeners:
                listener.dependency_changed(dependency, False)
        else:
            outage.failures += 1
            log.debug("dependency %s still down: %s", dependency, text)
        for listener in self._listeners:
            listener.dependency_failed(dependency)

    def recovered(self, dependency: str) -> None:
        """An operation on ``dependency`` succeeded (cheap when it was up: call freely)."""
        outage = self._outages.pop(dependency, None)
        if outage is None:
            return
        seconds = self._monotonic() - outage.since
        log.warning(
            "dependency %s is back after %.1f s (%d failed operations meanwhile)",
            dependency,
            seconds,
            outage.failures,
            extra={
                "dependency": dependency,
                "event": "up",
                "down_seconds": round(seconds, 3),
                "failures": outage.failures,
            },
        )
        for listener in self._listeners:
            listener.dependency_changed(dependency, True)

    def report(self, error: DependencyUnavailableError, cause: BaseException) -> None:
        """Count ``error`` (caused by ``cause``) against its dependency, once however many
        callers it reaches; a saturated dependency (``error.outage`` false) is not down."""
        if error.outage and not error.reported:
            error.reported = True
            self.failed(error.dependency, cause)

    def observe(self, exc: BaseException) -> DependencyUnavailableError | None:
        """:func:`dependency_error` of ``exc``, reported (:meth:`report`) when it is one."""
        error = dependency_error(exc)
        if error is not None:
            self.report(error, exc)
        return error

    def absorb(self, exc: BaseException) -> bool:
        """For background loops: whether ``exc`` is a dependency failure, which is then
        reported here (logged once for the whole outage); the loop logs anything else."""
        return self.observe(exc) is not None
