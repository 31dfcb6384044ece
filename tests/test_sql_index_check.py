"""What the catalog requires of a SQL source's indexes: the connector reads the index list
from SQLite and PostgreSQL, and registration refuses a grantable dataset whose key no index
leads with, naming the table, the key and the ``CREATE INDEX`` that fixes it."""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from connectors import SqlConnector
from gateway.authorization.roles import Role
from gateway.cli.demo import demo_datasets
from gateway.errors import CatalogError
from gateway.governance.actor import LOCAL_ADMIN
from gateway.settings import Settings
from tests.support.world import World
from tests.test_connectors import PG_DSN, PG_URL

FIELDS: dict[str, Any] = {"id": "integer", "code": "string", "kind": "string"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared settings, with the test PostgreSQL server allowed as a source host."""
    return settings.replace(source_hosts=("127.0.0.1:5432",))


@pytest.fixture
def pg_table() -> Iterator[str]:
    """A fresh table ``(id, code, kind)`` without any index in the test database."""
    name = f"ix_{secrets.token_hex(6)}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE TABLE {} (id bigint, code text, kind text)").format(
                sql.Identifier(name)
            )
        )
        conn.execute(
            sql.SQL("INSERT INTO {} VALUES (1, 'a', 'x'), (2, 'b', 'y')").format(
                sql.Identifier(name)
            )
        )
        try:
            yield name
        finally:
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))


def _sqlite_source(path: Path) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE plain (id INTEGER, code TEXT, kind TEXT)")
        conn.execute("CREATE TABLE keyed (id INTEGER PRIMARY KEY, code TEXT UNIQUE, kind TEXT)")
        conn.execute("CREATE INDEX keyed_partial ON keyed (kind) WHERE kind IS NOT NULL")
        conn.execute("CREATE INDEX keyed_expression ON keyed (lower(code))")
        conn.execute('CREATE TABLE "odd ""name""" (id INTEGER, code TEXT, kind TEXT)')
    conn.close()


# --- reading the index list ---------------------------------------------------------


async def test_sqlite_index_list(tmp_path: Path) -> None:
    path = tmp_path / "src.sqlite3"
    _sqlite_source(path)
    url = f"sqlite:///{path}"
    plain = SqlConnector(url, "plain", FIELDS)
    keyed = SqlConnector(url, "keyed", FIELDS)
    odd = SqlConnector(url, 'odd "name"', FIELDS)
    missing = SqlConnector(url, "absent", FIELDS)
    try:
        assert await plain.indexes() == ()
        # The rowid key and the unique constraint; partial and expression indexes serve no
        # plain lookup and are left out.
        assert set(await keyed.indexes() or ()) == {("id",), ("code",)}
        assert await missing.indexes() is None
        create = odd.create_index_sql(["code"])
        assert create == 'CREATE INDEX "odd ""name""_code" ON "odd ""name""" (code)'
        conn = sqlite3.connect(path)
        with conn:
            conn.execute(create)  # the statement the refusal names runs as it is
        conn.close()
        assert await odd.indexes() == (("code",),)
    finally:
        for connector in (plain, keyed, odd, missing):
            await connector.close()


async def test_postgresql_index_list(pg_table: str) -> None:
    connector = SqlConnector(PG_URL, pg_table, FIELDS)
    missing = SqlConnector(PG_URL, f"{pg_table}_absent", FIELDS)
    try:
        assert await connector.indexes() == ()
        assert await missing.indexes() is None
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            table = sql.Identifier(pg_table)
            conn.execute(sql.SQL("CREATE INDEX ON {} (kind) WHERE kind <> 'x'").format(table))
            conn.execute(sql.SQL("CREATE INDEX ON {} (lower(code))").format(table))
            assert await connector.indexes() == ()
            conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (id)").format(table))
            conn.execute(connector.create_index_sql(["code", "kind"]))
        assert set(await connector.indexes() or ()) == {("id",), ("code", "kind")}
    finally:
        await connector.close()
        await missing.close()


# --- the check at registration ------------------------------------------------------


def _entry(dataset_id: str, source: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": dataset_id,
        "name": "索引检查",
        "provider": "市场监督管理局",
        "fields": [{"name": n, "type": t} for n, t in FIELDS.items()],
        "open_attribute": "conditional",
        "key_fields": ["code"],
        "subject_field": "code",
        "source": source,
        **extra,
    }


async def test_registration_refuses_an_unindexed_sqlite_key(world: World) -> None:
    catalog = world.gateway.governance.catalog
    name = f"ix-{secrets.token_hex(4)}.sqlite3"
    path = world.gateway.settings.data_dir / "sources" / name
    _sqlite_source(path)
    source = {"kind": "sql", "url": f"sqlite:///sources/{name}", "table": "plain"}
    with pytest.raises(CatalogError) as refused:
        await catalog.register_dataset(LOCAL_ADMIN, _entry("plain", source))
    detail = refused.value.detail
    assert "source table plain has no index on its key field(s) code" in detail
    assert "CREATE INDEX plain_code ON plain (code)" in detail
    # Over HTTP: a 422 problem carrying the statement to run; nothing was registered.
    authority = await world.staff_token(Role.AUTHORITY)
    resp = await world.client.post(
        "/admin/datasets",
        json=_entry("plain", source),
        headers={"Authorization": f"Bearer {authority}"},
    )
    body = json.loads(await resp.text())
    assert resp.status == 422 and body["type"] == "/problems/catalog-rule", body
    assert body["create_index"] == "CREATE INDEX plain_code ON plain (code)"
    assert body["table"] == "plain" and body["columns"] == ["code"]
    assert "plain" not in (await world.gateway.governance.snapshot()).datasets
    # The statement of the refusal, run in the source, makes the entry acceptable.
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(body["create_index"])
    conn.close()
    await catalog.register_dataset(LOCAL_ADMIN, _entry("plain", source))
    # An index that leads with the key (a unique constraint, here) serves as well.
    keyed = source | {"table": "keyed"}
    await catalog.register_dataset(LOCAL_ADMIN, _entry("keyed", keyed))
    # A table that does not exist is refused by name.
    with pytest.raises(CatalogError, match="the source has no table absent"):
        await catalog.register_dataset(LOCAL_ADMIN, _entry("absent", source | {"table": "absent"}))
    # Data that can never be granted is never looked up: not checked.
    closed = _entry("closed", source | {"table": "absent"}, open_attribute="not_open")
    await catalog.register_dataset(LOCAL_ADMIN, closed)


async def test_registration_reads_postgresql_indexes(world: World, pg_table: str) -> None:
    catalog = world.gateway.governance.catalog
    url = "postgresql+psycopg://postgres@127.0.0.1:5432/" + PG_URL.rsplit("/", 1)[1]
    source = {"kind": "sql", "url": url, "table": pg_table}
    with pytest.raises(CatalogError) as refused:
        await catalog.register_dataset(LOCAL_ADMIN, _entry("pg-plain", source))
    create = refused.value.extensions["create_index"]
    assert create == f"CREATE INDEX {pg_table}_code ON {pg_table} (code)"
    assert f"source table {pg_table} has no index on its key field(s) code" in str(refused.value)
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(create)
    await catalog.register_dataset(LOCAL_ADMIN, _entry("pg-plain", source))


def test_the_demo_sources_carry_the_indexes_the_catalog_requires(tmp_path: Path) -> None:
    """The demo's SQLite tables (written by ``synthetic.write_sqlite``) index every key."""
    from connectors import synthetic

    path = tmp_path / "registry.sqlite3"
    synthetic.write_sqlite(path, {"enterprises": 5, "social_insurance": 5}, seed=1)
    conn = sqlite3.connect(path)
    for entry in demo_datasets():
        if entry["source"]["kind"] != "sql" or entry["open_attribute"] == "not_open":
            continue
        table = entry["source"]["table"]
        leading = {
            conn.execute(f"PRAGMA index_info('{index}')").fetchone()[2]
            for _, index, *_ in conn.execute(f"PRAGMA index_list('{table}')")
        }
        assert leading & set(entry["key_fields"]), table
    conn.close()
