"""Where the query-path benchmark keeps things: PostgreSQL databases made for one run, the
source table copied into PostgreSQL, the call log pre-filled, and the log read back.

- :class:`PgDatabases` creates fresh databases beside the admin DSN (``--pg-url``) and
  drops them at the end, even after a failure.
- :func:`copy_enterprises` copies the generated SQLite ``enterprises`` table into a
  PostgreSQL database with the same indexes (unique credit code, district, district and
  credit code in the connector's ``COLLATE "C"`` order) and ANALYZEs it.
- :func:`prefill_log` appends N valid call records with the gateway's own row builder and
  store sink (hash-linked, their ``trace_rows``), in large transactions, and folds the
  Merkle tree, so the gateway starts on a log of that size as if it had answered them.
- :func:`read_calls` reads the ``calls`` stream back for ``query_path.compare_log``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import os
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import psycopg

PREFILL_BATCH = 20_000
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


@dataclass(frozen=True, slots=True)
class _Record:
    """What ``_build_row`` reads of a ``PendingRecord``, with the payload made beforehand."""

    stream: str
    kind: str
    recorded_at: dt.datetime
    merchant_id: str | None
    scenario_id: str | None
    dataset_id: str | None
    decision: str | None
    trace_hashes: tuple[int, ...]


class PrefillRecords:
    """One-row query-call records as the gateway writes them, made fast: 64 real ones from
    ``bench/log_size.py``'s ``Calls`` (merchants, districts, offsets, canonical encoding)
    are the templates, and each record gets the values every call has of its own: its
    time, token id, response hash, rows digest and trace hashes. The payload stays the
    canonical encoding of a valid call record (keys in order, values of the same kinds)."""

    FIELDS = ("response_sha256", "rows_digest", "time", "token_id")

    def __init__(self, seed: int = 11) -> None:
        from log_size import Calls

        calls = Calls(merchants=50, rows=1, rate=20.0, seed=seed)
        self._start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        self._templates: list[tuple[Any, list[str]]] = []
        for i in range(64):
            record = calls.record(i)
            text = record.payload().decode("utf-8")
            pieces, at = [], 0
            for name in self.FIELDS:
                found = re.search(f'"{name}":"([^"]*)"', text)
                if found is None:
                    raise SystemExit(f"pre-fill: the call record has no {name}")
                pieces.append(text[at : found.start(1)])
                at = found.end(1)
            pieces.append(text[at:])
            self._templates.append((record, pieces))

    def make(self, i: int) -> tuple[_Record, bytes]:
        template, pieces = self._templates[i % len(self._templates)]
        # 20 calls a second; the odd microsecond keeps the time's text the same length.
        at = self._start + dt.timedelta(microseconds=50_000 * i + 1)
        noise = os.urandom(80)
        values = (
            noise[:32].hex(),
            noise[32:64].hex(),
            at.isoformat(timespec="microseconds").replace("+00:00", "Z"),
            base64.urlsafe_b64encode(noise[64:80]).decode().rstrip("="),
        )
        payload = "".join(p + v for p, v in zip(pieces, (*values, ""), strict=True))
        record = _Record(
            "calls",
            template.kind,
            at,
            template.merchant_id,
            template.scenario_id,
            template.dataset_id,
            template.decision,
            (int.from_bytes(noise[:8]) >> 1, int.from_bytes(noise[8:16]) >> 1),
        )
        return record, payload.encode("utf-8")


def _batch(made: list[tuple[_Record, bytes]], salts: bytes, heads: Any) -> Any:
    """The rows of one pre-fill batch on the ``calls`` head, as ``LogWriter`` builds them."""
    from gateway.ledger.entries import SALT_BYTES
    from gateway.ledger.log import _build_row

    head = heads["calls"]
    rows: list[dict[str, Any]] = []
    traces: list[dict[str, int]] = []
    for i, (record, payload) in enumerate(made):
        salt = salts[i * SALT_BYTES : (i + 1) * SALT_BYTES]
        row, appended = _build_row("sha256", record, payload, salt, head)  # type: ignore[arg-type]
        head = (appended.seq + 1, appended.entry_hash)
        rows.append(row)
        traces += [{"hash": h, "seq": appended.seq} for h in record.trace_hashes]
    return rows, traces, []


async def _prefill(store_url: str, records: int, say: Any) -> dict[str, Any]:
    """Batches of :data:`PREFILL_BATCH` records, each built on the stream's head by the
    gateway's own row builder (``gateway.ledger.log._build_row``: salt, leaf and chain
    hashes) and committed by its own sink in one transaction with its ``trace_rows``;
    the per-record futures and wake-ups of ``LogWriter.append`` are what this skips."""
    from gateway.db.engines import create_engine
    from gateway.ledger.entries import SALT_BYTES
    from gateway.ledger.sinks import PostgresSink, SqliteSink
    from gateway.ledger.tree import MerkleTree

    engine = create_engine(store_url)
    sink: Any = SqliteSink(engine) if engine.dialect.name == "sqlite" else PostgresSink(engine)
    maker = PrefillRecords()
    started = time.monotonic()
    try:
        for low in range(0, records, PREFILL_BATCH):
            made = [maker.make(i) for i in range(low, min(records, low + PREFILL_BATCH))]
            salts = os.urandom(SALT_BYTES * len(made))
            await sink.write(["calls"], partial(_batch, made, salts))
            done = min(records, low + PREFILL_BATCH)
            if done % 500_000 < PREFILL_BATCH or done == records:
                rate = done / (time.monotonic() - started)
                say(f"  log pre-fill: {done:,} records ({rate:,.0f}/s)")
        written = time.monotonic() - started
        tree = MerkleTree(engine, "calls")
        while await tree.fold() > 0:
            pass
    finally:
        await sink.close()
        await engine.dispose()
    return {
        "records": records,
        "append_seconds": round(written, 1),
        "total_seconds": round(time.monotonic() - started, 1),
    }


def prefill_log(store_url: str, records: int, say: Any = print) -> dict[str, Any]:
    """Append ``records`` valid query-call records to the ``calls`` stream of the (otherwise
    idle) store at ``store_url`` (an async SQLAlchemy URL) and fold its Merkle tree;
    returns the timings."""
    return asyncio.run(_prefill(store_url, records, lambda m: say(m, flush=True)))


def read_calls(store_url: str, since: int = 0) -> tuple[int, dict[str, int], set[int], int | None]:
    """``(records, by kind/decision, seqs from ``since`` on of data/allow records, max seq)``
    of the ``calls`` stream."""
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
                f"AND decision = 'allow' AND seq >= {int(since)}"
            ).fetchall()
        }
        top = conn.execute("SELECT max(seq) FROM log_entries WHERE stream = 'calls'").fetchone()
    finally:
        conn.close()
    return int(total[0]), by_kind, allowed, top[0]
