"""Index lookups of a local SQLite source, answered on the event loop without a thread hop.

Why this is safe: the loop runs a query here only when SQLite's own plan for it
(``EXPLAIN QUERY PLAN``, asked once per compiled shape) is a search of an index or of the
primary key by equality alone -- no scan, no temporary sort, no range -- and the call reads
at most :data:`LOOP_MAX_ROWS` rows (limit plus offset). Such a lookup reads a few pages of a
local file, usually from the page cache: less work than handing the call to a thread and
back. Three guards keep even a wrong guess from stalling the loop:

- a progress handler interrupts any statement after :data:`LOOP_VM_STEPS` virtual-machine
  steps (a point lookup takes under a hundred), and the call is re-run in the thread pool;
- the connection never waits for a lock (``timeout=0``): a busy file sends the call to the
  thread pool, whose connections wait as usual;
- the connection is read-only twice over (``mode=ro`` URI, ``PRAGMA query_only``).

Servers (PostgreSQL, ...) and everything else keep the thread pool: a network round trip
cannot be bounded like a file read.
"""

from __future__ import annotations

import re
import sqlite3
import urllib.parse
from collections.abc import Sequence
from typing import Any

__all__ = ["LOOP_MAX_ROWS", "LOOP_VM_STEPS", "LoopReader", "LoopRefused", "is_index_lookup"]

#: Most rows (limit + offset) a call may read on the loop; a grant's row cap is at most 1000.
LOOP_MAX_ROWS = 1000
#: Virtual-machine steps after which a statement on the loop is interrupted (roughly a
#: millisecond of work; a one-row lookup by an index takes under a hundred).
LOOP_VM_STEPS = 100_000

# One plan line of a search by equality: of an index, or of the rowid / primary key.
_LOOKUP = re.compile(
    r"SEARCH (?:TABLE )?\S+ USING "
    r"(?:(?:COVERING )?INDEX \S+|INTEGER PRIMARY KEY|PRIMARY KEY) "
    r"\(\w+=\?(?: AND \w+=\?)*\)"
)


class LoopRefused(Exception):
    """The loop did not answer (interrupted, busy, or any SQLite error): run in the pool.

    ``interrupted``: the step budget stopped the statement, so its shape is no lookup."""

    def __init__(self, reason: str, *, interrupted: bool = False) -> None:
        super().__init__(reason)
        self.interrupted = interrupted


def is_index_lookup(plan: Sequence[str]) -> bool:
    """Whether every line of an ``EXPLAIN QUERY PLAN`` is an equality search of an index."""
    return bool(plan) and all(_LOOKUP.fullmatch(line) for line in plan)


#: SQLite calls the progress handler every this many steps, counted over the life of a
#: cached statement (not per run): the handler counts its calls during one run instead.
_TICK = 1_000


class LoopReader:
    """A read-only connection to one SQLite file, opened on first use, for the loop only."""

    def __init__(self, path: str) -> None:
        self._uri = "file:" + urllib.parse.quote(path) + "?mode=ro"
        self._conn: sqlite3.Connection | None = None
        self._broken = False
        self._ticks = 0

    def _progress(self) -> int:
        """Non-zero interrupts the running statement: once it ran ``LOOP_VM_STEPS``."""
        self._ticks += 1
        return self._ticks > LOOP_VM_STEPS // _TICK

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        if self._broken:
            raise LoopRefused("the file could not be opened")
        try:
            conn = sqlite3.connect(
                self._uri,
                uri=True,
                timeout=0,
                isolation_level=None,
                check_same_thread=False,
                cached_statements=512,
            )
            conn.execute("PRAGMA query_only = ON")
        except sqlite3.Error as exc:
            self._broken = True  # the pool's connections will say what is wrong
            raise LoopRefused(str(exc)) from None
        conn.set_progress_handler(self._progress, _TICK)
        self._conn = conn
        return conn

    def is_lookup(self, sql: str, parameters: int) -> bool:
        """Whether SQLite plans ``sql`` as an index lookup (no scan, no sort)."""
        self._ticks = 0
        try:
            rows = self._connection().execute(f"EXPLAIN QUERY PLAN {sql}", (None,) * parameters)
            plan = [str(row[3]) for row in rows.fetchall()]
        except (sqlite3.Error, LoopRefused):
            return False
        return is_index_lookup(plan)

    def fetch(self, sql: str, parameters: tuple[object, ...]) -> list[Any]:
        """Run ``sql`` now. Raises :class:`LoopRefused` when SQLite did not answer."""
        self._ticks = 0
        try:
            return self._connection().execute(sql, parameters).fetchall()
        except sqlite3.Error as exc:
            name = getattr(exc, "sqlite_errorname", type(exc).__name__)
            raise LoopRefused(name, interrupted=name == "SQLITE_INTERRUPT") from None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
