"""The floor: what aiohttp and the database driver alone do for the benchmark's calls.

It serves the data-plane path of the gateway,
``POST /v1/scenarios/{scenario}/datasets/enterprises/{verify|query|aggregate}``, takes the
bodies ``bench/modes.py`` sends and answers in the gateway's envelope with the same members,
straight from the driver: the standard library's ``sqlite3`` on the same SQLite source file
(read-only, one connection, queried on the event loop: no thread hop, no SQLAlchemy), or
``psycopg`` (the driver the gateway's SQL connector uses for PostgreSQL) in async mode on a
few connections. The SQL is the gateway connector's (same columns, same ``ORDER BY``, same
``COLLATE "C"`` on PostgreSQL). No token, no policy, no masking, no marks, no call log: the
floor is the bound for any server of these answers written in Python on aiohttp.

    .venv/bin/python bench/floor_server.py --db DIR/sources/registry.sqlite3 --port 8091
    .venv/bin/python bench/floor_server.py --pg postgresql://127.0.0.1:5432/db --port 8091
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sqlite3
import unicodedata
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiohttp import web
from plain_server import data_app, page, scenario_fields, serve_app

TABLE = "enterprises"
KEY = "credit_code"
# The enterprise-credit scenario's returnable fields, in its order.
FIELDS = scenario_fields()
FILTERS = ("credit_code", "district")
VERIFY_FIELDS = ("name", "legal_rep_name", "legal_rep_id")
GROUPS = ("district", "industry", "status")
DEFAULT_LIMIT = 50

Fetch = Callable[[str, Sequence[Any]], Any]


def _value(value: Any) -> Any:
    """A column value as the gateway writes it: decimals and floats as plain text, dates ISO."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _decimal(value: Any) -> Any:
    """A decimal column: SQLite gives whole numbers back as integers, the gateway text."""
    return _value(value) if value is None or not isinstance(value, int) else str(value)


COLUMNS = tuple((name, _decimal if name == "registered_capital" else _value) for name in FIELDS)


def _cents(total: Any) -> Any:
    """SQLite sums a ``NUMERIC`` column of 0.01 steps as a float; round off its error."""
    return round(total, 2) if isinstance(total, float) else total


def _normalise(value: Any) -> Any:
    if isinstance(value, str):
        return unicodedata.normalize("NFKC", value).strip().upper()
    return value


class Statements:
    """The SQL of each call, in the driver's parameter style, with the connector's order."""

    def __init__(self, *, postgres: bool) -> None:
        mark = "%s" if postgres else "?"
        collate = ' COLLATE "C"' if postgres else ""
        columns = ", ".join(FIELDS)
        self.verify = {
            name: f"SELECT {name} FROM {TABLE} WHERE {KEY} = {mark} ORDER BY {KEY}{collate} LIMIT 2"
            for name in VERIFY_FIELDS
        }
        self.query = {
            name: f"SELECT {columns} FROM {TABLE} WHERE {name} = {mark} "
            f"ORDER BY {KEY}{collate} LIMIT {mark} OFFSET {mark}"
            for name in FILTERS
        }
        self.aggregate = {
            (name, group): f"SELECT {group}, count(*), sum(registered_capital), "
            f"count(DISTINCT {KEY}) FROM {TABLE} WHERE {name} = {mark} "
            f"GROUP BY {group} ORDER BY {group}{collate}"
            for name in FILTERS
            for group in GROUPS
        }


def make_app(fetch: Fetch, statements: Statements, min_subjects: int) -> web.Application:
    async def verify(body: dict[str, Any]) -> dict[str, Any]:
        values = body["values"]
        claims = {k: v for k, v in values.items() if k != KEY}
        if len(claims) != 1:
            raise web.HTTPBadRequest(text="the floor verifies one claimed field")
        ((field, claimed),) = claims.items()
        rows = await fetch(statements.verify[field], (values[KEY],))
        if len(rows) == 1:
            mismatched = [field] if _normalise(claimed) != _normalise(rows[0][0]) else []
        else:
            mismatched = sorted([KEY, field])
        return {"match": not mismatched, "mismatched": mismatched}

    async def query(body: dict[str, Any]) -> dict[str, Any]:
        ((field, wanted),) = body["filters"].items()
        limit = int(body.get("limit", DEFAULT_LIMIT))
        offset = int(body.get("offset", 0))
        rows = await fetch(statements.query[field], (wanted, limit, offset))
        out = [
            {name: format_(v) for (name, format_), v in zip(COLUMNS, row, strict=True)}
            for row in rows
        ]
        return page(out, limit, offset)

    async def aggregate(body: dict[str, Any]) -> dict[str, Any]:
        ((field, wanted),) = body["filters"].items()
        (group,) = body["group_by"]
        rows = await fetch(statements.aggregate[(field, group)], (wanted,))
        groups = [
            {group: key, "count": count, "sum_registered_capital": _value(_cents(total))}
            for key, count, total, subjects in rows
            if subjects >= min_subjects
        ]
        return {
            "groups": groups,
            "suppressed_groups": len(rows) - len(groups),
            "withheld_groups": 0,
            "min_subjects": min_subjects,
        }

    return data_app({"verify": verify, "query": query, "aggregate": aggregate}, "floor")


@asynccontextmanager
async def sqlite_fetch(db: Path) -> AsyncIterator[Fetch]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)

    async def fetch(sql: str, params: Sequence[Any]) -> list[Any]:
        return conn.execute(sql, params).fetchall()

    try:
        yield fetch
    finally:
        conn.close()


@asynccontextmanager
async def postgres_fetch(dsn: str, connections: int) -> AsyncIterator[Fetch]:
    import psycopg

    idle: asyncio.Queue[psycopg.AsyncConnection[Any]] = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(await psycopg.AsyncConnection.connect(dsn, autocommit=True))

    async def fetch(sql: str, params: Sequence[Any]) -> list[Any]:
        conn = await idle.get()
        try:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchall()
        finally:
            idle.put_nowait(conn)

    try:
        yield fetch
    finally:
        while not idle.empty():
            await idle.get_nowait().close()


async def serve(args: argparse.Namespace) -> None:
    source = (
        postgres_fetch(args.pg, args.connections) if args.pg else sqlite_fetch(args.db.resolve())
    )
    async with source as fetch:
        app = make_app(fetch, Statements(postgres=bool(args.pg)), args.min_subjects)
        await serve_app(app, args.host, args.port, "floor server")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--db", type=Path, help="the source SQLite file")
    where.add_argument("--pg", help="PostgreSQL conninfo/URL of the database with the table")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=4, help="PostgreSQL connections")
    parser.add_argument(
        "--min-subjects", type=int, default=10, help="aggregate cells below are suppressed"
    )
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
