"""Where the query-path benchmark keeps things: PostgreSQL databases made for one run, the
source table copied into PostgreSQL, the call log pre-filled, and the log read back.

- :class:`PgDatabases` creates fresh databases beside the admin DSN (``--pg-url``) and
  drops them at the end, even after a failure.
- :func:`copy_enterprises` copies the generated SQLite ``enterprises`` table into a
  PostgreSQL database with the same indexes (unique credit code, district, district and
  credit code in the connector's ``COLLATE "C"`` order) and ANALYZEs it.
- :func:`prefill_log` appends N valid call records through the gateway's own ``LogWriter``
  (hash-linked, group commit, their ``trace_rows``) and folds the Merkle tree, so the
  gateway starts on a log of that size as if it had answered those calls.
- :func:`read_calls` reads the ``calls`` stream back for ``query_path.compare_log``.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Any

import psycopg

SOURCE_COLUMNS = {
    "credit_code": "TEXT",
    "name": "TEXT",
    "legal_rep_name": "TEXT",
    "legal_rep_id": "TEXT",
    "legal_rep_mobile": "TEXT",
    "registered_capital": "NUMERIC",
    "established": "DATE",
    "district": "TEXT",
    "industry": "TEXT",
    "status": "TEXT",
    "address": "TEXT",
}


class PgDatabases:
    """Fresh databases on the server of ``admin_dsn``, dropped by :meth:`drop_all`."""

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self.names: list[str] = []

    def create(self, purpose: str) -> str:
        """A new empty database; returns its DSN (``postgresql://host:port/name``)."""
        name = f"dsgw_bench_{purpose}_{secrets.token_hex(4)}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.names.append(name)
        return self.admin_dsn.rsplit("/", 1)[0] + "/" + name

    def drop_all(self) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            for name in self.names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.names.clear()


def copy_enterprises(sqlite_path: Path, dsn: str) -> float:
    """Copy the ``enterprises`` table into the database ``dsn``; returns the seconds taken."""
    started = time.monotonic()
    columns = ", ".join(f"{name} {kind}" for name, kind in SOURCE_COLUMNS.items())
    names = ", ".join(SOURCE_COLUMNS)
    source = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"CREATE TABLE enterprises ({columns})")
            with conn.cursor() as cur, cur.copy(f"COPY enterprises ({names}) FROM STDIN") as copy:
                for row in source.execute(f"SELECT {names} FROM enterprises"):
                    copy.write_row(row)
            conn.execute("CREATE UNIQUE INDEX enterprises_credit_code ON enterprises (credit_code)")
            conn.execute("CREATE INDEX enterprises_district ON enterprises (district)")
            conn.execute(
                "CREATE INDEX enterprises_district_credit_code "
                'ON enterprises (district, credit_code COLLATE "C")'
            )
            conn.execute("ANALYZE enterprises")
    finally:
        source.close()
    return time.monotonic() - started


def check_plan_sqlite(sqlite_path: Path) -> str:
    """The point lookup must search the credit-code index; raises SystemExit on a scan."""
    conn = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True)
    try:
        plan = " / ".join(
            str(row[-1])
            for row in conn.execute(
                "EXPLAIN QUERY PLAN SELECT name FROM enterprises WHERE credit_code = ? "
                "ORDER BY credit_code LIMIT 2",
                ("x",),
            )
        )
    finally:
        conn.close()
    if "USING INDEX" not in plan or plan.startswith("SCAN"):
        raise SystemExit(f"sanity check: the point lookup does not use the index: {plan}")
    return plan


def check_plan_pg(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = on")
        rows = conn.execute(
            "EXPLAIN SELECT name FROM enterprises WHERE credit_code = %s "
            'ORDER BY credit_code COLLATE "C" LIMIT 2',
            ("x",),
        ).fetchall()
    plan = " / ".join(str(r[0]).strip() for r in rows)
    if "Index" not in plan or "Seq Scan" in plan:
        raise SystemExit(f"sanity check: the point lookup does not use the index: {plan}")
    return plan


async def _prefill(store_url: str, records: int, say: Any) -> dict[str, Any]:
    from log_size import Calls

    from gateway.db import create_engine
    from gateway.ledger.log import LogWriter
    from gateway.ledger.tree import MerkleTree

    engine = create_engine(store_url)
    calls = Calls(merchants=50, rows=1, rate=20.0, seed=11)
    writer = LogWriter(engine, batch_max=2048)
    started = time.monotonic()
    await writer.start()
    try:
        step = 20_000
        for low in range(0, records, step):
            batch = [calls.record(i) for i in range(low, min(records, low + step))]
            await asyncio.gather(*(writer.append(r) for r in batch))
            if (low // step) % 25 == 24:
                rate = (low + step) / (time.monotonic() - started)
                say(f"  log pre-fill: {low + step:,} records ({rate:,.0f}/s)")
    finally:
        await writer.close()
    written = time.monotonic() - started
    tree = MerkleTree(engine, "calls")
    while await tree.fold() > 0:
        pass
    await engine.dispose()
    return {
        "records": records,
        "append_seconds": round(written, 1),
        "total_seconds": round(time.monotonic() - started, 1),
    }


def prefill_log(store_url: str, records: int, say: Any = print) -> dict[str, Any]:
    """Append ``records`` query-call records to the ``calls`` stream of the store at
    ``store_url`` (an async SQLAlchemy URL) and fold its tree; returns the timings."""
    return asyncio.run(_prefill(store_url, records, say))


def read_calls(store_url: str) -> tuple[int, dict[str, int], set[int], int | None]:
    """``(records, by kind/decision, seqs of data/allow records, max seq)`` of ``calls``."""
    if store_url.startswith("sqlite"):
        conn: Any = sqlite3.connect(f"file:{store_url.split(':///', 1)[1]}?mode=ro", uri=True)
    else:
        conn = psycopg.connect(store_url.replace("+asyncpg", ""), autocommit=True)
    try:
        total = conn.execute("SELECT count(*) FROM log_entries WHERE stream = 'calls'").fetchone()
        by_kind = {
            f"{kind}/{decision}": n
            for kind, decision, n in conn.execute(
                "SELECT kind, decision, count(*) FROM log_entries WHERE stream = 'calls' "
                "GROUP BY kind, decision"
            ).fetchall()
        }
        allowed = {
            row[0]
            for row in conn.execute(
                "SELECT seq FROM log_entries WHERE stream = 'calls' AND kind = 'data' "
                "AND decision = 'allow'"
            ).fetchall()
        }
        top = conn.execute("SELECT max(seq) FROM log_entries WHERE stream = 'calls'").fetchone()
    finally:
        conn.close()
    return int(total[0]), by_kind, allowed, top[0]
