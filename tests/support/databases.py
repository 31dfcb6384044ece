"""Test databases: a PostgreSQL database per test created from a migrated template, and a
migrated store made once per run, so that no test pays for running the migrations."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import secrets
from collections.abc import Coroutine
from typing import Any, TypeVar

from gateway.db.engines import create_engine, migrate

__all__ = [
    "PG_ADMIN_DSN",
    "create_pg_database",
    "drop_pg_database",
    "drop_pg_database_later",
    "migrated",
    "pg_url",
    "run_aside",
    "wait_for_drops",
]

PG_ADMIN_DSN = os.environ.get("DSGW_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
T = TypeVar("T")


async def create_pg_database(template: str | None = None) -> str:
    """Create a database with a random name (a copy of ``template`` if given); returns the
    name. The caller drops it with :func:`drop_pg_database`."""
    import asyncpg

    name = f"dsgw_t_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        copy = f' TEMPLATE "{template}"' if template else ""
        await conn.execute(f'CREATE DATABASE "{name}"{copy}')
    finally:
        await conn.close()
    return name


async def drop_pg_database(name: str) -> None:
    """Drop ``name``, closing any connection still open to it."""
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


_dropping: list[concurrent.futures.Future[None]] = []
_dropper = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="drop-test-db")


def drop_pg_database_later(name: str) -> None:
    """Drop ``name`` on a thread of its own while the next test runs (a drop waits for the
    server to remove the files); :func:`wait_for_drops` waits for them all."""
    _dropping.append(_dropper.submit(asyncio.run, drop_pg_database(name)))


def wait_for_drops() -> None:
    """Wait until every database handed to :func:`drop_pg_database_later` is dropped."""
    while _dropping:
        _dropping.pop().result()


def pg_url(name: str) -> str:
    """The URL of database ``name`` on the server of :data:`PG_ADMIN_DSN`."""
    return PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + name


async def migrated(url: str) -> None:
    """Run the migrations on the store at ``url`` up to the newest revision."""
    engine = create_engine(url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


def run_aside(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a loop of its own: session fixtures are first asked for
    from inside a test's running loop (``getfixturevalue`` in an async fixture)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
