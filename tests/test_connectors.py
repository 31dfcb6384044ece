"""Connectors against real backends: a SQLite file made by ``write_sqlite``, a PostgreSQL
schema made per test, and CSV files; every answer is checked against a plain Python
computation over the same generated rows."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import secrets
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from connectors import (
    AggregateQuery,
    Condition,
    Connector,
    ConnectorError,
    CsvConnector,
    FieldType,
    Measure,
    Row,
    RowQuery,
    SqlConnector,
    Value,
    synthetic,
)

PG_DSN = os.environ.get("DSGW_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
PG_URL = "postgresql+psycopg://" + PG_DSN.split("://", 1)[1]
BACKENDS = ("sqlite", "postgresql", "csv")

ENTERPRISES = list(synthetic.generate("enterprises", 300, seed=11))
INSURANCE = list(synthetic.generate("social_insurance", 900, seed=11, employers=300))
SPECIAL_FIELDS: dict[str, FieldType] = {
    "id": "integer",
    "label": "string",
    "amount": "decimal",
    "day": "date",
    "flag": "boolean",
}
SPECIAL: list[Row] = [
    {"id": i, "label": label, "amount": amount, "day": day, "flag": flag}
    for i, (label, amount, day, flag) in enumerate(
        [
            ("50%_off", Decimal("10.50"), dt.date(2024, 1, 1), True),
            ("50%x", Decimal("-3.25"), dt.date(2024, 2, 29), False),
            ("50a_b", Decimal("0.01"), dt.date(2023, 12, 31), True),
            ("50_b", Decimal("1000000.99"), None, False),
            ("a\\b", None, dt.date(2020, 5, 5), None),
            ("Abc", Decimal("7"), dt.date(2021, 1, 1), True),
            ("abc", Decimal("7.00"), dt.date(2021, 1, 2), False),
            (None, Decimal("2.5"), dt.date(2022, 3, 3), True),
            ("长沙市_公司", Decimal("99.99"), dt.date(2022, 3, 4), False),
        ],
        start=1,
    )
]
TABLES: dict[str, tuple[dict[str, FieldType], list[Row]]] = {
    "enterprises": (synthetic.SCHEMAS["enterprises"], ENTERPRISES),
    "social_insurance": (synthetic.SCHEMAS["social_insurance"], INSURANCE),
    "special": (SPECIAL_FIELDS, SPECIAL),
}
INJECTIONS = [
    "' OR '1'='1",
    "x'; DROP TABLE enterprises; --",
    '" OR 1=1 --',
    "%",
    "_",
    "\\",
    "%' OR 1=1 --",
    "1) OR (1=1",
]


# --- plain Python expectations ------------------------------------------------------


def _matches(row: Row, cond: Condition) -> bool:
    value = row[cond.field]
    if cond.op == "eq":
        return value == cond.value if cond.value is not None else value is None
    if cond.op == "in":
        assert isinstance(cond.value, tuple)
        return value in cond.value
    if value is None:
        return False
    ops: dict[str, Any] = {
        "gt": lambda a, b: a > b,
        "gte": lambda a, b: a >= b,
        "lt": lambda a, b: a < b,
        "lte": lambda a, b: a <= b,
        "prefix": lambda a, b: a.startswith(b),
    }
    return bool(ops[cond.op](value, cond.value))


def _null_first(row: Row, names: Sequence[str]) -> tuple[Any, ...]:
    return tuple((0, 0) if row[n] is None else (1, row[n]) for n in names)


def expected_fetch(rows: list[Row], query: RowQuery) -> list[Row]:
    hits = [r for r in rows if all(_matches(r, c) for c in query.conditions)]
    hits.sort(key=lambda r: _null_first(r, query.order_by))
    page = hits[query.offset : query.offset + query.limit]
    return [{f: r[f] for f in query.fields} for r in page]


def expected_aggregate(rows: list[Row], query: AggregateQuery) -> list[Row]:
    groups: dict[tuple[Value, ...], list[Row]] = defaultdict(list)
    if not query.group_by:
        groups[()] = []
    for row in rows:
        if all(_matches(row, c) for c in query.conditions):
            groups[tuple(row[g] for g in query.group_by)].append(row)
    out = []
    for key in sorted(groups, key=lambda k: tuple((0, 0) if v is None else (1, v) for v in k)):
        members = groups[key]
        result: Row = dict(zip(query.group_by, key, strict=True))
        for m in query.measures:
            values = (
                [] if m.field is None else [r[m.field] for r in members if r[m.field] is not None]
            )
            if m.fn == "count":
                result[m.name] = len(members) if m.field is None else len(values)
            else:
                total = sum((Decimal(v) for v in values), Decimal(0)) if values else None  # type: ignore[arg-type]
                result[m.name] = (
                    total if m.fn == "sum" or total is None else total / Decimal(len(values))
                )
        subjects = {r[query.subject_field] for r in members} - {None}
        result["_subjects"] = len(subjects)
        out.append(result)
    return out[: query.limit]


# --- sources ------------------------------------------------------------------------


def _text(value: Value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def _write_csv(path: Path, fields: Mapping[str, FieldType], rows: list[Row]) -> None:
    import csv

    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["unused_extra", *reversed(list(fields))])  # order must not matter
        for row in rows:
            writer.writerow(["junk", *(_text(row[f]) for f in reversed(list(fields)))])


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("sources")
    synthetic.write_sqlite(
        base / "db.sqlite3", {"enterprises": 300, "social_insurance": 900}, seed=11
    )
    import sqlite3

    conn = sqlite3.connect(base / "db.sqlite3")
    with conn:
        conn.execute(
            "CREATE TABLE special (id INTEGER, label TEXT, amount NUMERIC, day DATE, flag BOOLEAN)"
        )
        conn.executemany(
            "INSERT INTO special VALUES (?, ?, ?, ?, ?)",
            [
                (
                    r["id"],
                    r["label"],
                    None if r["amount"] is None else str(r["amount"]),
                    None if r["day"] is None else _text(r["day"]),
                    r["flag"],
                )
                for r in SPECIAL
            ],
        )
    conn.close()
    synthetic.write_csv(base / "enterprises.csv", "enterprises", 300, seed=11)
    _write_csv(base / "social_insurance.csv", *TABLES["social_insurance"])
    _write_csv(base / "special.csv", *TABLES["special"])
    return base


PG_TYPES = {
    "string": "text",
    "integer": "bigint",
    "decimal": "numeric",
    "date": "date",
    "boolean": "boolean",
}


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh schema holding every test table, dropped afterwards."""
    with pg_tables(TABLES) as schema:
        yield schema


@contextmanager
def pg_tables(tables: Mapping[str, tuple[dict[str, FieldType], list[Row]]]) -> Iterator[str]:
    """A fresh schema holding ``tables`` (no index), dropped afterwards."""
    schema = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            for table, (fields, rows) in tables.items():
                name = sql.Identifier(schema, table)
                columns = sql.SQL(", ").join(
                    sql.SQL("{} {}").format(sql.Identifier(f), sql.SQL(PG_TYPES[t]))
                    for f, t in fields.items()
                )
                conn.execute(sql.SQL("CREATE TABLE {} ({})").format(name, columns))
                insert = sql.SQL("INSERT INTO {} VALUES ({})").format(
                    name, sql.SQL(", ").join(sql.Placeholder() * len(fields))
                )
                with conn.cursor() as cur:
                    cur.executemany(insert, [tuple(r[f] for f in fields) for r in rows])
            yield schema
        finally:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@dataclass
class Sources:
    """Opens connectors for one backend and closes them all at the end."""

    backend: str
    files: Path
    schema: str | None
    opened: list[Connector] = field(default_factory=list)

    def connector(self, table: str) -> Connector:
        fields = TABLES[table][0]
        connector: Connector
        if self.backend == "csv":
            index = {
                "enterprises": ("credit_code", "district"),
                "social_insurance": ("record_id",),
                "special": ("label",),
            }[table]
            connector = CsvConnector(self.files / f"{table}.csv", fields, index_fields=index)
        elif self.backend == "sqlite":
            connector = SqlConnector(
                f"sqlite:///{self.files / 'db.sqlite3'}", table, fields, pool_size=2
            )
        else:
            connector = SqlConnector(PG_URL, table, fields, schema=self.schema, pool_size=2)
        self.opened.append(connector)
        return connector

    async def close(self) -> None:
        for connector in self.opened:
            await connector.close()


async def _open(backend: str, files: Path, request: pytest.FixtureRequest) -> Sources:
    schema = request.getfixturevalue("pg_schema") if backend == "postgresql" else None
    return Sources(backend, files, schema)


@pytest.fixture(params=BACKENDS)
async def src(request: pytest.FixtureRequest, files: Path) -> AsyncIterator[Sources]:
    sources = await _open(request.param, files, request)
    try:
        yield sources
    finally:
        await sources.close()


@pytest.fixture
async def every(request: pytest.FixtureRequest, files: Path) -> AsyncIterator[list[Sources]]:
    """All three backends at once, for comparing their answers."""
    opened = [await _open(b, files, request) for b in BACKENDS]
    try:
        yield opened
    finally:
        for sources in opened:
            await sources.close()


def q(
    fields: Sequence[str],
    *conds: Condition,
    order_by: Sequence[str] = ("credit_code",),
    limit: int = 1000,
    offset: int = 0,
) -> RowQuery:
    return RowQuery(tuple(fields), tuple(conds), tuple(order_by), limit, offset)


async def check_fetch(connector: Connector, rows: list[Row], query: RowQuery) -> list[Row]:
    got = await connector.fetch(query)
    assert got == expected_fetch(rows, query), query
    return got


# --- operators ----------------------------------------------------------------------

SAMPLE = ENTERPRISES[17]


async def test_eq_and_in(src: Sources) -> None:
    ent = src.connector("enterprises")
    fields = ("credit_code", "name", "registered_capital", "established", "district")
    got = await check_fetch(
        ent, ENTERPRISES, q(fields, Condition("credit_code", "eq", SAMPLE["credit_code"]))
    )
    assert len(got) == 1 and got[0]["name"] == SAMPLE["name"]
    got = await check_fetch(ent, ENTERPRISES, q(fields, Condition("district", "eq", "望城区")))
    assert got
    codes = (*(str(r["credit_code"]) for r in ENTERPRISES[5:40:3]), "91NOSUCHCODE")
    got = await check_fetch(
        ent, ENTERPRISES, q(("credit_code",), Condition("credit_code", "in", codes))
    )
    assert len(got) == len(codes) - 1
    await check_fetch(
        ent,
        ENTERPRISES,
        q(
            fields,
            Condition("status", "in", ("注销", "吊销")),
            Condition("district", "eq", "岳麓区"),
        ),
    )
    assert await ent.fetch(q(fields, Condition("status", "in", ()))) == []


@pytest.mark.parametrize("op", ["gt", "gte", "lt", "lte"])
async def test_ordered_operators(src: Sources, op: str) -> None:
    ent = src.connector("enterprises")
    fields = ("credit_code", "registered_capital", "established")
    for cond in (
        Condition("registered_capital", op, SAMPLE["registered_capital"]),  # type: ignore[arg-type]
        Condition("registered_capital", op, Decimal("500")),  # type: ignore[arg-type]
        Condition("established", op, SAMPLE["established"]),  # type: ignore[arg-type]
        Condition("credit_code", op, SAMPLE["credit_code"]),  # type: ignore[arg-type]
        Condition("name", op, "长沙"),  # type: ignore[arg-type]
    ):
        got = await check_fetch(ent, ENTERPRISES, q(fields, cond))
        assert 0 < len(got) < len(ENTERPRISES)
    special = src.connector("special")
    for cond in (
        Condition("id", op, 4),  # type: ignore[arg-type]
        Condition("amount", op, Decimal("7")),  # type: ignore[arg-type]
        Condition("day", op, dt.date(2022, 1, 1)),  # type: ignore[arg-type]
        Condition("label", op, "a"),  # type: ignore[arg-type]
    ):
        await check_fetch(
            special, SPECIAL, q(("id", "label", "amount", "day"), cond, order_by=("id",))
        )


async def test_values_are_coerced_to_field_types(src: Sources) -> None:
    special = src.connector("special")
    query = q(
        ("id",),
        Condition("amount", "gte", "7"),
        Condition("day", "lt", "2022-01-01"),
        order_by=("id",),
    )
    assert await special.fetch(query) == [{"id": 6}, {"id": 7}]
    assert await special.fetch(q(("id",), Condition("flag", "eq", True), order_by=("id",))) == [
        {"id": i} for i in (1, 3, 6, 8)
    ]


async def test_prefix_matches_literally(src: Sources) -> None:
    special = src.connector("special")
    cases = {
        "50%": [1, 2],
        "50%_": [1],
        "50_": [4],
        "50": [1, 2, 3, 4],
        "a\\": [5],
        "A": [6],
        "a": [5, 7],
        "长沙市_": [9],
        "长沙市%": [],
        "%": [],
        "_": [],
        "": [1, 2, 3, 4, 5, 6, 7, 9],
    }
    for prefix, ids in cases.items():
        query = q(("id", "label"), Condition("label", "prefix", prefix), order_by=("id",))
        got = await check_fetch(special, SPECIAL, query)
        assert [r["id"] for r in got] == ids, prefix


async def test_nulls(src: Sources) -> None:
    special = src.connector("special")
    fields = ("id", "label", "amount", "day", "flag")
    got = await check_fetch(
        special, SPECIAL, q(fields, Condition("label", "eq", None), order_by=("id",))
    )
    assert [r["id"] for r in got] == [8]
    assert got[0]["amount"] == Decimal("2.5") and got[0]["day"] == dt.date(2022, 3, 3)
    got = await check_fetch(
        special, SPECIAL, q(fields, Condition("label", "in", ("abc", None)), order_by=("id",))
    )
    assert [r["id"] for r in got] == [7, 8]
    # NULL sorts first, and never satisfies an ordered comparison.
    got = await check_fetch(special, SPECIAL, q(("id", "amount"), order_by=("amount", "id")))
    assert got[0] == {"id": 5, "amount": None}
    await check_fetch(
        special, SPECIAL, q(("id",), Condition("day", "gt", dt.date(1900, 1, 1)), order_by=("id",))
    )
    await check_fetch(special, SPECIAL, q(fields, order_by=("flag", "label", "id")))


async def test_injection_strings_are_plain_values(src: Sources) -> None:
    ent = src.connector("enterprises")
    for text in INJECTIONS:
        for cond in (
            Condition("credit_code", "eq", text),
            Condition("name", "eq", text),
            Condition("name", "prefix", text),
            Condition("district", "in", (text, text + "x")),
            Condition("address", "gt", "\uffff" + text),
        ):
            assert await ent.fetch(q(("credit_code",), cond)) == [], (text, cond)
        groups = await ent.aggregate(
            AggregateQuery(
                ("district",),
                (Measure("count"),),
                "credit_code",
                (Condition("status", "eq", text),),
            )
        )
        assert groups == []
    total = await ent.aggregate(AggregateQuery((), (Measure("count"),), "credit_code"))
    assert total == [{"count": len(ENTERPRISES), "_subjects": len(ENTERPRISES)}]


async def test_paging_is_stable(src: Sources) -> None:
    ent = src.connector("enterprises")
    order = ("established", "credit_code")
    full = expected_fetch(ENTERPRISES, q(("credit_code", "established"), order_by=order))
    pages: list[Row] = []
    for offset in range(0, len(ENTERPRISES) + 37, 37):
        pages += await check_fetch(
            ent,
            ENTERPRISES,
            q(("credit_code", "established"), order_by=order, limit=37, offset=offset),
        )
    assert pages == full
    assert await ent.fetch(q(("credit_code",), limit=0)) == []


# --- refusals -----------------------------------------------------------------------

BAD_QUERIES: list[RowQuery | AggregateQuery] = [
    q(("credit_code", "password")),
    q(("credit_code",), Condition("password", "eq", "x")),
    q(("credit_code",), order_by=("password",)),
    q(("credit_code",), Condition("registered_capital", "prefix", "1")),
    q(("credit_code",), Condition("registered_capital", "gt", "lots")),
    q(("credit_code",), Condition("established", "eq", "2024-02-30")),
    q(("credit_code",), Condition("district", "gt", None)),
    q(("credit_code",), Condition("district", "in", "芙蓉区")),
    q(("credit_code",), Condition("district", "eq", ("芙蓉区",))),
    q(("credit_code",), Condition("district", "like", "%")),  # type: ignore[arg-type]
    q((), order_by=()),
    q(("credit_code",), limit=-1),
    AggregateQuery(("password",), (Measure("count"),), "credit_code"),
    AggregateQuery(("district",), (Measure("sum", "password"),), "credit_code"),
    AggregateQuery(("district",), (Measure("sum", "name"),), "credit_code"),
    AggregateQuery(("district",), (Measure("avg"),), "credit_code"),
    AggregateQuery(("district",), (Measure("count"),), "password"),
    AggregateQuery(("district",), (Measure("count"), Measure("count")), "credit_code"),
    AggregateQuery(
        ("district",), (Measure("count"),), "credit_code", (Condition("password", "eq", 1),)
    ),
]


@pytest.mark.parametrize("query", BAD_QUERIES)
async def test_bad_queries_raise_value_error(
    src: Sources,
    query: RowQuery | AggregateQuery,
) -> None:
    ent = src.connector("enterprises")
    call = ent.fetch(query) if isinstance(query, RowQuery) else ent.aggregate(query)
    with pytest.raises(ValueError) as info:
        await call
    assert not isinstance(info.value, ConnectorError)


async def test_unknown_field_is_refused_before_touching_the_database(tmp_path: Path) -> None:
    fields = synthetic.SCHEMAS["enterprises"]
    unreachable = SqlConnector(
        "postgresql+psycopg://postgres@127.0.0.1:1/none", "enterprises", fields
    )
    missing = CsvConnector(tmp_path / "missing.csv", fields)
    try:
        for connector in (unreachable, missing):
            with pytest.raises(ValueError, match="unknown field 'password'"):
                await connector.fetch(q(("password",)))
            with pytest.raises(ValueError, match="unknown field 'password'"):
                await connector.aggregate(AggregateQuery(("password",), (), "credit_code"))
    finally:
        await unreachable.close()
        await missing.close()


# --- aggregates ---------------------------------------------------------------------

AGGREGATES: list[tuple[str, AggregateQuery]] = [
    (
        "enterprises",
        AggregateQuery(
            ("district",),
            (
                Measure("count"),
                Measure("sum", "registered_capital"),
                Measure("avg", "registered_capital"),
            ),
            "credit_code",
        ),
    ),
    (
        "enterprises",
        AggregateQuery(
            ("district", "status"),
            (Measure("count"), Measure("avg", "registered_capital")),
            "legal_rep_id",
            (Condition("established", "gte", dt.date(2015, 1, 1)),),
        ),
    ),
    (
        "enterprises",
        AggregateQuery(
            (),
            (Measure("sum", "registered_capital"), Measure("count")),
            "credit_code",
            (Condition("industry", "eq", "制造业"),),
        ),
    ),
    (
        "enterprises",
        AggregateQuery(
            (),
            (
                Measure("sum", "registered_capital"),
                Measure("avg", "registered_capital"),
                Measure("count"),
            ),
            "credit_code",
            (Condition("industry", "eq", "不存在"),),
        ),
    ),
    ("enterprises", AggregateQuery(("industry",), (Measure("count"),), "credit_code", limit=4)),
    (
        "social_insurance",
        AggregateQuery(
            ("insurance_type",),
            (
                Measure("sum", "amount"),
                Measure("avg", "base"),
                Measure("count"),
                Measure("sum", "record_id"),
                Measure("avg", "record_id"),
            ),
            "person_id",
        ),
    ),
    (
        "social_insurance",
        AggregateQuery(
            ("district", "month"),
            (Measure("count"), Measure("sum", "amount")),
            "person_id",
            (Condition("month", "lt", dt.date(2024, 1, 1)),),
        ),
    ),
    (
        "special",
        AggregateQuery(
            ("flag",),
            (
                Measure("count"),
                Measure("count", "amount"),
                Measure("sum", "amount"),
                Measure("avg", "amount"),
            ),
            "label",
        ),
    ),
]


@pytest.mark.parametrize(("table", "query"), AGGREGATES)
async def test_aggregates_match_python(src: Sources, table: str, query: AggregateQuery) -> None:
    connector = src.connector(table)
    got = await connector.aggregate(query)
    assert got == expected_aggregate(TABLES[table][1], query)
    for row in got:
        assert isinstance(row["_subjects"], int)
        for m in query.measures:
            value = row[m.name]
            if m.fn == "count":
                assert type(value) is int
            else:
                assert value is None or isinstance(value, Decimal)


async def test_small_cells_exist(src: Sources) -> None:
    groups = await src.connector("enterprises").aggregate(
        AggregateQuery(("district",), (Measure("count"),), "credit_code")
    )
    subjects = [int(str(g["_subjects"])) for g in groups]
    assert min(subjects) < 10 <= max(subjects)


async def test_backends_agree(every: list[Sources]) -> None:
    """The same questions get the same answers, in the same order, from each backend."""
    row_queries = [
        (
            "enterprises",
            q(
                tuple(synthetic.SCHEMAS["enterprises"]),
                Condition("district", "in", ("芙蓉区", "望城区")),
                order_by=("name", "credit_code"),
                limit=50,
                offset=5,
            ),
        ),
        (
            "enterprises",
            q(
                ("credit_code", "registered_capital"),
                Condition("name", "prefix", "长沙市"),
                order_by=("registered_capital", "credit_code"),
            ),
        ),
        (
            "social_insurance",
            q(
                ("record_id", "person_id", "month", "amount"),
                Condition("amount", "gt", Decimal("100")),
                Condition("insurance_type", "eq", "失业"),
                order_by=("month", "record_id"),
                limit=40,
            ),
        ),
        ("special", q(tuple(SPECIAL_FIELDS), order_by=("label", "id"))),
    ]
    for table, query in row_queries:
        answers = [await s.connector(table).fetch(query) for s in every]
        assert answers[0], query
        assert answers[0] == answers[1] == answers[2], query
    for table, agg in AGGREGATES:
        answers = [await s.connector(table).aggregate(agg) for s in every]
        assert answers[0] == answers[1] == answers[2], agg


async def test_concurrent_queries(src: Sources) -> None:
    ent = src.connector("enterprises")
    queries = [
        q(("credit_code", "name"), Condition("credit_code", "eq", r["credit_code"]))
        for r in ENTERPRISES[:24]
    ]
    results = await asyncio.gather(*(ent.fetch(query) for query in queries))
    assert [r[0]["credit_code"] for r in results] == [r["credit_code"] for r in ENTERPRISES[:24]]


async def test_closed_connector_refuses(src: Sources) -> None:
    ent = src.connector("enterprises")
    assert isinstance(ent, Connector)
    await ent.fetch(q(("credit_code",), limit=1))
    await ent.close()
    await ent.close()  # idempotent
    with pytest.raises(ConnectorError, match="closed"):
        await ent.fetch(q(("credit_code",), limit=1))


# --- failures -----------------------------------------------------------------------


def _assert_discreet(err: ConnectorError, secret: str) -> None:
    text = str(err)
    assert secret not in text
    assert "SELECT" not in text.upper() and "WHERE" not in text.upper()
    assert err.status == 503


async def test_unreachable_postgres() -> None:
    connector = SqlConnector(
        "postgresql+psycopg://postgres@127.0.0.1:1/test",
        "enterprises",
        synthetic.SCHEMAS["enterprises"],
    )
    try:
        with pytest.raises(ConnectorError, match="enterprises") as info:
            await connector.fetch(
                q(("credit_code",), Condition("legal_rep_id", "eq", "430104199001011234"))
            )
        _assert_discreet(info.value, "430104199001011234")
    finally:
        await connector.close()


async def test_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "absent.sqlite3"
    connector = SqlConnector(f"sqlite:///{path}", "enterprises", synthetic.SCHEMAS["enterprises"])
    try:
        with pytest.raises(ConnectorError, match="enterprises"):
            await connector.fetch(q(("credit_code",)))
    finally:
        await connector.close()
    assert not path.exists()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_missing_table_or_column(
    backend: str, files: Path, request: pytest.FixtureRequest
) -> None:
    sources = await _open(backend, files, request)
    url = f"sqlite:///{files / 'db.sqlite3'}" if backend == "sqlite" else PG_URL
    fields = dict(synthetic.SCHEMAS["enterprises"])
    no_table = SqlConnector(url, "no_such_table", fields, schema=sources.schema)
    no_column = SqlConnector(
        url, "enterprises", {**fields, "ghost": "string"}, schema=sources.schema
    )
    secret = "914301SECRETVALUE"
    try:
        with pytest.raises(ConnectorError, match="no_such_table") as info:
            await no_table.fetch(q(("credit_code",), Condition("credit_code", "eq", secret)))
        _assert_discreet(info.value, secret)
        with pytest.raises(ConnectorError, match="enterprises") as info:
            await no_column.aggregate(
                AggregateQuery(
                    ("ghost",), (), "credit_code", (Condition("credit_code", "eq", secret),)
                )
            )
        _assert_discreet(info.value, secret)
    finally:
        await no_table.close()
        await no_column.close()


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("not a url", "not a valid SQLAlchemy URL"),
        ("sqlite+aiosqlite:///x.sqlite3", "async driver"),
        ("postgresql+asyncpg://u@h/d", "async driver"),
        ("postgresql+nosuchdriver://u@h/d", "no installed driver"),
        ("nosuchdb://u@h/d", "no installed driver"),
    ],
)
async def test_bad_urls(url: str, match: str) -> None:
    with pytest.raises(ConnectorError, match=match):
        SqlConnector(url, "enterprises", synthetic.SCHEMAS["enterprises"])


def _csv(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding)
    return path


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("id,label\n1,a\n", "lacks declared field.*amount"),
        ("", "empty"),
        ("id,label,amount,day,flag,label\n", "names a column twice"),
        ("id,label,amount,day,flag\n1,a,1.5,2024-01-01\n", "line 2 has 4 cells"),
        ("id,label,amount,day,flag\n1,a,1.5,2024-02-30,true\n", "line 2, column day"),
        ("id,label,amount,day,flag\nx,a,1.5,2024-01-01,true\n", "line 2, column id"),
        ('id,label,amount,day,flag\n1,"a,1.5,2024-01-01,true\n', "cannot read"),
    ],
)
async def test_bad_csv(tmp_path: Path, content: str, match: str) -> None:
    connector = CsvConnector(_csv(tmp_path / "bad.csv", content), SPECIAL_FIELDS)
    try:
        with pytest.raises(ConnectorError, match=match) as info:
            await connector.fetch(q(("id",), order_by=()))
        assert "bad.csv" in str(info.value)
        assert "2024-02-30" not in str(info.value)
    finally:
        await connector.close()


async def test_csv_unreadable(tmp_path: Path) -> None:
    for path in (
        tmp_path / "missing.csv",
        _csv(tmp_path / "latin.csv", "id,label,amount,day,flag\n1,é,1,,\n", "latin-1"),
    ):
        connector = CsvConnector(path, SPECIAL_FIELDS)
        with pytest.raises(ConnectorError, match=path.name):
            await connector.aggregate(AggregateQuery((), (Measure("count"),), "id"))
        await connector.close()


async def test_csv_bom_and_blank_lines(tmp_path: Path) -> None:
    path = _csv(
        tmp_path / "bom.csv", "\ufeffid, label ,amount,day,flag\n\n2,b,,,\n1,a,1.50,2024-01-01,1\n"
    )
    connector = CsvConnector(path, SPECIAL_FIELDS, index_fields=("id",))
    try:
        got = await connector.fetch(q(tuple(SPECIAL_FIELDS), order_by=()))
        assert got == [
            {"id": 2, "label": "b", "amount": None, "day": None, "flag": None},
            {
                "id": 1,
                "label": "a",
                "amount": Decimal("1.50"),
                "day": dt.date(2024, 1, 1),
                "flag": True,
            },
        ]
        assert await connector.fetch(q(("label",), Condition("id", "in", (1, 3)), order_by=())) == [
            {"label": "a"}
        ]
    finally:
        await connector.close()


def test_csv_index_fields_must_be_declared(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not declared"):
        CsvConnector(tmp_path / "x.csv", SPECIAL_FIELDS, index_fields=("nope",))
