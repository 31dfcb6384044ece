"""The SQL connector's fast paths: row queries compiled once per shape, and index lookups of
a local SQLite file answered on the event loop, everything else in the thread pool.

"On the loop" is observed from outside: a call that never leaves the loop completes in the
first step of its coroutine; a call handed to the thread pool suspends there."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.dialects import postgresql, sqlite

from connectors import Condition, Row, RowQuery, SqlConnector, synthetic
from connectors._sql_statements import CompiledFetch, FetchStatements, SqlStatements
from connectors._sqlite_loop import LoopReader, LoopRefused, is_index_lookup
from tests.test_connectors import (
    ENTERPRISES,
    PG_DSN,
    PG_URL,
    TABLES,
    expected_fetch,
    pg_tables,
)

FIELDS = ("credit_code", "name", "registered_capital", "established", "district")
SAMPLE = ENTERPRISES[17]


def _on_loop(call: Coroutine[Any, Any, list[Row]]) -> list[Row] | None:
    """Drive ``call`` one step: its answer if it finished without suspending (it never left
    the event loop), else ``None`` -- it waits on the thread pool, and is dropped."""
    try:
        call.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    call.close()
    return None


def _query(*conditions: Condition, limit: int = 50, offset: int = 0) -> RowQuery:
    return RowQuery(FIELDS, conditions, ("credit_code",), limit, offset)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("paths") / "db.sqlite3"
    synthetic.write_sqlite(path, {"enterprises": 300}, seed=11)
    return path


@pytest.fixture
async def enterprises(registry: Path) -> AsyncIterator[SqlConnector]:
    connector = SqlConnector(
        f"sqlite:///{registry}", "enterprises", synthetic.SCHEMAS["enterprises"], pool_size=2
    )
    yield connector
    await connector.close()


# --- compiled once per shape --------------------------------------------------------


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.psycopg.dialect()])
def test_a_shape_is_compiled_once_and_values_only_bound(dialect: Any) -> None:
    statements = FetchStatements(
        SqlStatements("enterprises", synthetic.SCHEMAS["enterprises"], schema=None, dialect=dialect)
    )
    decided: list[str] = []

    def decide(compiled: CompiledFetch) -> bool:
        decided.append(compiled.sql)
        return False

    by_code = _query(Condition("credit_code", "eq", "91A"))
    first = statements.get(by_code, by_code.conditions, decide)
    # The same shape with other values (and another limit and offset): the same statement.
    other = _query(Condition("credit_code", "eq", "x' OR 1=1 --"), limit=3, offset=7)
    assert statements.get(other, other.conditions, decide) is first
    assert "x' OR" not in first.sql and "91A" not in first.sql
    assert first.parameters({"c0": "x' OR 1=1 --", "lim": 3, "off": 7}) in (
        ("x' OR 1=1 --", 3, 7),
        {"c0": "x' OR 1=1 --", "lim": 3, "off": 7},
    )
    # Another shape: another operator, a null, another number of listed values.
    by_district = _query(Condition("district", "eq", "岳麓区"))
    null_code = _query(Condition("credit_code", "eq", None))
    two = _query(Condition("credit_code", "in", ("a", "b")))
    three = _query(Condition("credit_code", "in", ("a", "b", "c")))
    shapes = {id(statements.get(q, q.conditions, decide)) for q in (by_district, null_code, two)}
    shapes.add(id(statements.get(three, three.conditions, decide)))
    assert len(shapes) == 4 and id(first) not in shapes
    assert len(statements) == 5 and len(decided) == 5  # each shape decided once
    assert "IS NULL" in statements.get(null_code, null_code.conditions, decide).sql


async def test_same_shape_other_values_answer_as_python(enterprises: SqlConnector) -> None:
    rows = TABLES["enterprises"][1]
    for row in ENTERPRISES[:5]:
        query = _query(Condition("credit_code", "eq", row["credit_code"]))
        assert await enterprises.fetch(query) == expected_fetch(rows, query)
    districts = {r["district"] for r in ENTERPRISES[:3]}
    for district in districts:
        for offset in (0, 2):
            query = _query(Condition("district", "eq", district), limit=4, offset=offset)
            assert await enterprises.fetch(query) == expected_fetch(rows, query)


# --- the loop path and the thread path ----------------------------------------------


async def test_an_indexed_point_lookup_runs_on_the_loop(enterprises: SqlConnector) -> None:
    rows = TABLES["enterprises"][1]
    for query in (
        _query(Condition("credit_code", "eq", SAMPLE["credit_code"])),
        _query(Condition("credit_code", "in", (SAMPLE["credit_code"], "91NOSUCH"))),
        _query(Condition("credit_code", "eq", SAMPLE["credit_code"]), limit=2),
    ):
        await enterprises.fetch(query)  # the first call of a shape compiles and plans it
        assert _on_loop(enterprises.fetch(query)) == expected_fetch(rows, query)
    # The step budget is per call: thousands of lookups (far more steps in all) stay there.
    query = _query(Condition("credit_code", "eq", SAMPLE["credit_code"]))
    for _ in range(3000):
        assert _on_loop(enterprises.fetch(query)) == expected_fetch(rows, query)


async def test_scans_sorts_ranges_and_big_pages_go_to_the_thread_pool(
    enterprises: SqlConnector,
) -> None:
    rows = TABLES["enterprises"][1]
    code = SAMPLE["credit_code"]
    for query in (
        _query(Condition("name", "eq", SAMPLE["name"])),  # no index on name: a scan
        _query(Condition("district", "eq", SAMPLE["district"])),  # indexed, but sorted
        _query(Condition("credit_code", "gt", code)),  # a range
        _query(Condition("credit_code", "prefix", code[:6])),  # LIKE: a scan
        _query(Condition("credit_code", "eq", code), limit=1000, offset=1),  # > 1000 rows
    ):
        assert await enterprises.fetch(query) == expected_fetch(rows, query)
        assert _on_loop(enterprises.fetch(query)) is None, query


async def test_a_lookup_that_turns_out_big_is_interrupted_and_rerun_in_the_pool(
    tmp_path: Path,
) -> None:
    """An index search by equality that must read 60,000 rows to filter them: planned as
    a lookup, stopped by the step budget, answered by the pool, and kept off the loop."""
    path = tmp_path / "skewed.sqlite3"
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE t (k INTEGER, v TEXT)")
        conn.executemany("INSERT INTO t VALUES (1, ?)", ((f"v{i}",) for i in range(60_000)))
        conn.execute("CREATE INDEX t_k ON t (k)")
    conn.close()
    connector = SqlConnector(f"sqlite:///{path}", "t", {"k": "integer", "v": "string"})
    query = RowQuery(
        ("k", "v"), (Condition("k", "eq", 1), Condition("v", "eq", "v59999")), ("k",), 5
    )
    try:
        assert await connector.fetch(query) == [{"k": 1, "v": "v59999"}]
        assert _on_loop(connector.fetch(query)) is None
        assert await connector.fetch(query) == [{"k": 1, "v": "v59999"}]
    finally:
        await connector.close()


@pytest.fixture
def pg_enterprises() -> Iterator[str]:
    """A fresh schema holding ``enterprises`` indexed on its key, dropped afterwards."""
    with pg_tables({"enterprises": TABLES["enterprises"]}) as schema:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            table = sql.Identifier(schema, "enterprises")
            conn.execute(sql.SQL("CREATE INDEX ON {} (credit_code)").format(table))
        yield schema


async def test_postgresql_always_uses_the_thread_pool(pg_enterprises: str) -> None:
    connector = SqlConnector(
        PG_URL, "enterprises", synthetic.SCHEMAS["enterprises"], schema=pg_enterprises
    )
    query = _query(Condition("credit_code", "eq", SAMPLE["credit_code"]))
    try:
        assert await connector.fetch(query) == expected_fetch(TABLES["enterprises"][1], query)
        assert _on_loop(connector.fetch(query)) is None
    finally:
        await connector.close()


# --- the loop's guards --------------------------------------------------------------


def test_only_equality_searches_of_an_index_are_lookups() -> None:
    assert is_index_lookup(["SEARCH t USING INDEX t_k (k=?)"])
    assert is_index_lookup(["SEARCH t USING COVERING INDEX t_kv (k=? AND v=?)"])
    assert is_index_lookup(["SEARCH t USING INTEGER PRIMARY KEY (rowid=?)"])
    assert not is_index_lookup([])
    assert not is_index_lookup(["SCAN t"])
    assert not is_index_lookup(["SCAN t USING INDEX t_k"])
    assert not is_index_lookup(["SEARCH t USING INDEX t_k (k>?)"])
    assert not is_index_lookup(["SEARCH t USING INDEX t_k (k=?)", "USE TEMP B-TREE FOR ORDER BY"])


def test_the_loop_reader_refuses_long_work_locks_and_writes(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite3"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("CREATE TABLE t (k INTEGER)")
    reader = LoopReader(str(path))
    try:
        count = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) "
        assert reader.fetch(count + "SELECT count(*) FROM c", (10,)) == [(10,)]
        with pytest.raises(LoopRefused):  # beyond the step budget
            reader.fetch(count + "SELECT count(*) FROM c", (10_000_000,))
        with pytest.raises(LoopRefused):  # read-only
            reader.fetch("INSERT INTO t VALUES (?)", (1,))
        writer.execute("BEGIN EXCLUSIVE")
        with pytest.raises(LoopRefused):  # a locked file is not waited for
            reader.fetch("SELECT count(*) FROM t", ())
        writer.execute("ROLLBACK")
        assert reader.fetch("SELECT count(*) FROM t", ()) == [(0,)]
    finally:
        reader.close()
        writer.close()
    missing = LoopReader(str(tmp_path / "absent.sqlite3"))
    with pytest.raises(LoopRefused):
        missing.fetch("SELECT 1", ())
    assert not (tmp_path / "absent.sqlite3").exists()


async def test_a_locked_file_is_answered_by_the_pool(registry: Path, tmp_path: Path) -> None:
    """The loop does not wait for a lock; the pool does, and answers once it is released."""
    path = tmp_path / "locked.sqlite3"
    path.write_bytes(registry.read_bytes())
    connector = SqlConnector(f"sqlite:///{path}", "enterprises", synthetic.SCHEMAS["enterprises"])
    query = _query(Condition("credit_code", "eq", SAMPLE["credit_code"]))
    expected = expected_fetch(TABLES["enterprises"][1], query)
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        assert await connector.fetch(query) == expected
        writer.execute("BEGIN EXCLUSIVE")
        asyncio.get_running_loop().call_later(0.2, writer.execute, "ROLLBACK")
        assert await connector.fetch(query) == expected
        assert _on_loop(connector.fetch(query)) == expected
    finally:
        writer.close()
        await connector.close()
