"""PostgreSQL as the production store: migrations many processes start at once, a schema
newer than the code, the call log's indexes and the plans that use them, connection pool
limits and what a caller sees when the pool is exhausted (docs/postgresql.md)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp import encode_basic_auth
from aiohttp.test_utils import TestClient, TestServer
from alembic import command
from alembic.config import Config
from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine

from connectors import synthetic
from gateway.api.app import create_app
from gateway.cli.demo import DEMO_SCENARIO
from gateway.db.engines import HEAD_REVISION, create_engine, engine_for, migrate
from gateway.db.upgrade import MIGRATIONS
from gateway.errors import ConfigError
from gateway.monitoring.calls import CallWindows
from gateway.settings import Settings, load_settings
from tests.support.databases import PG_ADMIN_DSN, create_pg_database, drop_pg_database
from tests.support.world import FixedClock
from tests.support.world import build_world as build_world_of

HEAD = HEAD_REVISION
LOG_INDEXES = {
    "ix_log_entries_merchant_time": ["merchant_id", "recorded_at"],
    "ix_log_entries_merchant_seq": ["stream", "merchant_id", "seq"],
    "ix_log_entries_time": ["recorded_at"],
}


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database (SQLAlchemy URL), dropped afterwards."""
    name = await create_pg_database()
    yield "postgresql+asyncpg://" + PG_ADMIN_DSN.split("://", 1)[1].rsplit("/", 1)[0] + "/" + name
    await drop_pg_database(name)


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _versions(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return list((await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars())


def _alembic(connection: Connection, verb: str, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    getattr(command, verb)(config, revision)


# -- migrations ---------------------------------------------------------------------------


def test_head_revision_is_the_newest_migration() -> None:
    """The shortcut that skips alembic for a store at head must know the real head: a new
    migration that did not update HEAD_REVISION would otherwise never run on start."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_heads() == [HEAD_REVISION]


async def test_concurrent_migrations_run_once(pg_url: str) -> None:
    """Six processes start together on an empty database: every one comes up, and the
    migrations ran once (a second run of any would fail on the tables the first created)."""
    engines = [create_engine(pg_url) for _ in range(6)]
    try:
        await asyncio.gather(*(migrate(engine) for engine in engines))
        assert await _versions(engines[0]) == [HEAD]
        async with engines[0].connect() as conn:
            invalid = await conn.scalar(text("SELECT count(*) FROM pg_index WHERE NOT indisvalid"))
            locks = await conn.scalar(
                text(
                    "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                    "WHERE l.locktype = 'advisory' AND d.datname = current_database()"
                )
            )
        assert invalid == 0
        assert locks == 0  # every migrating session gave its lock back
        # Starting again finds the schema at head and takes no lock.
        await asyncio.gather(*(migrate(engine) for engine in engines))
        assert await _versions(engines[0]) == [HEAD]
    finally:
        for engine in engines:
            await engine.dispose()


async def test_database_newer_than_the_code_refuses_to_start(settings: Settings) -> None:
    """A process older than the database's schema (a newer release migrated it) stops with
    a ConfigError naming both revisions (``Gateway.open`` migrates first of all)."""
    engine = create_engine(settings.resolved_database_url)
    try:
        await migrate(engine)
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '0999'"))
        with pytest.raises(ConfigError) as refused:
            await migrate(engine)
        assert "revision 0999" in refused.value.detail
        assert f"its newest is {HEAD}" in refused.value.detail
        assert await _versions(engine) == ["0999"]
    finally:
        await engine.dispose()


async def test_migration_gives_up_on_a_held_table_lock_then_succeeds(pg_url: str) -> None:
    """DDL behind a long transaction times out and is retried, then fails with a clear error
    rather than wait; once the transaction ends, the next start migrates."""
    engine = create_engine(pg_url)
    await migrate(engine)
    async with engine.connect() as conn:
        await conn.commit()
        await conn.run_sync(_alembic, "downgrade", "0007")
    blocker = await asyncpg.connect(_dsn(pg_url))
    try:
        # Every migration records itself in alembic_version: this lock stops them all.
        blocking = blocker.transaction()
        await blocking.start()
        await blocker.execute("LOCK TABLE alembic_version IN EXCLUSIVE MODE")
        with pytest.raises(ConfigError) as refused:
            await migrate(engine, lock_timeout=0.2, attempts=3, retry_delay=0.05)
        assert "waited more than 0.2 s for a table lock, 3 times" in refused.value.detail
        assert await _versions(engine) == ["0007"]

        async def end_transaction() -> None:
            await asyncio.sleep(0.5)
            await blocking.rollback()

        ending = asyncio.create_task(end_transaction())
        await migrate(engine, lock_timeout=0.2, attempts=8, retry_delay=0.05)
        await ending
        assert await _versions(engine) == [HEAD]
        async with engine.connect() as conn:
            assert await conn.scalar(text("SHOW lock_timeout")) == "0"  # a fresh session
            invalid = await conn.scalar(text("SELECT count(*) FROM pg_index WHERE NOT indisvalid"))
        assert invalid == 0
    finally:
        await blocker.close()
        await engine.dispose()


async def test_no_migration_through_a_transaction_pooler(pg_url: str) -> None:
    """With the statement cache off (PgBouncer in transaction mode) a session lock cannot be
    held, so such a process refuses to migrate; once migrated directly, it runs."""
    pooled = create_engine(pg_url, statement_cache=False)
    direct = create_engine(pg_url)
    try:
        with pytest.raises(ConfigError, match="dsgw init"):
            await migrate(pooled)
        await migrate(direct)
        await migrate(pooled)
        async with pooled.connect() as conn:
            for _ in range(3):  # the same statement again: no cached prepared statement
                assert await conn.scalar(text("SELECT count(*) FROM log_entries")) == 0
    finally:
        await pooled.dispose()
        await direct.dispose()


async def test_call_log_indexes_after_migration(settings: Settings) -> None:
    engine = create_engine(settings.resolved_database_url)
    await migrate(engine)
    try:
        async with engine.connect() as conn:
            found = await conn.run_sync(lambda c: inspect(c).get_indexes("log_entries"))
            columns = {index["name"]: index["column_names"] for index in found}
            assert columns == LOG_INDEXES
            if engine.dialect.name == "postgresql":
                definition = await conn.scalar(
                    text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_log_entries_time'")
                )
                assert "USING brin (recorded_at)" in definition
                assert "autosummarize='on'" in definition
    finally:
        await engine.dispose()


# -- plans --------------------------------------------------------------------------------

_ROWS = """
INSERT INTO log_entries (stream, seq, recorded_at, kind, merchant_id, scenario_id, dataset_id,
                         decision, payload, salt, leaf_hash, prev_hash, entry_hash)
SELECT 'calls', g, CAST(:start AS timestamptz) + g * interval '10 seconds', 'data',
       'm-' || (g % 40), 's-' || (g % 5), 'enterprises',
       CASE WHEN g % 17 = 0 THEN 'deny' ELSE 'allow' END,
       repeat('x', 600), '\\x00', '\\x00', '\\x00', '\\x00'
FROM generate_series(0, :n - 1) AS g
"""


async def test_monitor_window_queries_use_the_call_log_indexes(pg_url: str) -> None:
    """The monitor's windows, as it runs them, read through an index on a month of records.

    No planner setting is changed: the table is large enough (60,000 records over a week,
    each with a 600-byte payload) that a sequential scan would be the planner's choice for
    any query the indexes do not serve."""
    engine = create_engine(pg_url)
    await migrate(engine)
    start = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
    n = 60_000
    async with engine.begin() as conn:
        await conn.execute(text(_ROWS), {"start": start, "n": n})
    async with engine.connect() as conn:
        await conn.execute(text("ANALYZE log_entries"))
        await conn.commit()
    captured: list[tuple[str, Any]] = []

    def capture(_c: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "FROM log_entries" in statement:
            captured.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    now = start + dt.timedelta(seconds=10 * n)
    windows = CallWindows(engine, n)
    try:
        await windows.data_calls({"m-7", "m-8"}, now - dt.timedelta(hours=1))
        await windows.denied_calls(now - dt.timedelta(minutes=10))
        await windows.count_allowed_data("m-7", now - dt.timedelta(days=3, hours=1), now)
        await windows.first_allowed_data("m-7")
        event.remove(engine.sync_engine, "before_cursor_execute", capture)
        assert len(captured) == 4
        async with engine.connect() as conn:
            for statement, parameters in captured:
                result = await conn.exec_driver_sql(
                    "EXPLAIN (FORMAT JSON) " + statement, parameters
                )
                plan = json.dumps(result.scalar())
                assert '"Seq Scan"' not in plan, (statement, plan)
                assert any(f'"Index Name": "{name}"' in plan for name in LOG_INDEXES), plan
    finally:
        await engine.dispose()


# -- the connection pool ------------------------------------------------------------------


def test_pool_settings_are_validated() -> None:
    environ = {
        "DSGW_DATABASE_POOL_SIZE": "4",
        "DSGW_DATABASE_MAX_OVERFLOW": "0",
        "DSGW_DATABASE_POOL_TIMEOUT_SECONDS": "2.5",
        "DSGW_DATABASE_STATEMENT_CACHE": "false",
    }
    settings = load_settings(None, environ=environ)
    assert settings.database.pool_size == 4
    assert settings.database.max_overflow == 0
    assert settings.database.pool_timeout_seconds == 2.5
    assert settings.database.statement_cache is False
    for bad in (
        {"database_pool_size": 0},
        {"database_max_overflow": -1},
        {"database_pool_timeout_seconds": 0},
    ):
        with pytest.raises(ConfigError, match="database_"):
            load_settings(None, environ={}, **bad)


async def test_pool_settings_applied(pg_url: str) -> None:
    settings = load_settings(
        None,
        environ={},
        database_url=pg_url,
        database_pool_size=3,
        database_max_overflow=2,
        database_pool_timeout_seconds=0.3,
    )
    engine = engine_for(settings)
    held = []
    try:
        assert engine.pool.size() == 3
        assert engine.pool.timeout() == 0.3
        held = [await engine.connect() for _ in range(3 + 2)]
        assert engine.pool.checkedout() == 5
        started = asyncio.get_running_loop().time()
        with pytest.raises(PoolTimeoutError):
            await engine.connect()
        assert asyncio.get_running_loop().time() - started >= 0.3
    finally:
        for conn in held:
            await conn.close()
        await engine.dispose()


@pytest.mark.parametrize("settings", ["postgresql"], indirect=True)  # pools: PostgreSQL only
async def test_exhausted_pool_answers_503_problem(settings: Settings, clock: FixedClock) -> None:
    """A caller that waits past ``database_pool_timeout_seconds`` for a connection gets a
    503 problem it may retry, not a 500; the gateway serves again once connections free."""
    settings = settings.replace(
        database_pool_size=2,
        database_max_overflow=0,
        database_pool_timeout_seconds=0.3,
    )
    gateway, creds = await build_world_of(settings, clock)
    client = TestClient(TestServer(create_app(gateway), host="127.0.0.1"))
    await client.start_server()
    held = []
    try:
        resp = await client.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", "scope": f"scenario:{DEMO_SCENARIO}"},
            headers={"Authorization": encode_basic_auth(*creds["merchant"])},
        )
        token = (await resp.json())["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}
        held = [await gateway.engine.connect() for _ in range(2)]

        listing = await client.get("/v1/calls", headers=bearer)
        problem = await listing.json(content_type=None)
        assert listing.status == 503, problem
        assert listing.content_type == "application/problem+json"
        assert problem["type"] == "/problems/store-unavailable"
        assert listing.headers["Retry-After"] == "5"
        assert "no database connection came free" in problem["detail"]

        # The day's quota is seeded from the store, so a data call needs the pool too: it is
        # refused, and the refusal is recorded (the call log has a connection of its own).
        code = next(synthetic.generate("enterprises", 1, seed=7))["credit_code"]
        data = await client.post(
            f"/v1/scenarios/{DEMO_SCENARIO}/datasets/enterprises/query",
            json={"filters": {"credit_code": code}},
            headers=bearer,
        )
        refused = await data.json(content_type=None)
        assert data.status == 503, refused
        assert refused["type"] == "/problems/store-unavailable"
        assert data.headers["Dsgw-Record-Id"].startswith("calls/")

        for conn in held:
            await conn.close()
        held = []
        listing = await client.get("/v1/calls", headers=bearer)
        assert listing.status == 200, await listing.text()
    finally:
        for conn in held:
            await conn.close()
        await client.close()
        await gateway.close()
