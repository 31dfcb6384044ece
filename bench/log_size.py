"""Bytes per call in the gateway's store, and what a million calls take.

Fills a fresh store (SQLite in a temporary directory, and a fresh PostgreSQL database created
beside ``--database-url`` and dropped at the end) with ``--calls`` call records through the
real ``LogWriter`` (group commit, the ``trace_rows`` entries in the record's transaction).
Each record is a query answer as ``gateway/dataplane/service.py`` and the HTTP handler
record it: the demo scenario's eight fields, a district filter, limit and offset, the
response hash, the delivery's mark id, canary ids, the rows digest, and ``--rows`` delivered
rows of two ``trace_rows`` entries each (the whole row and the credit code, as the
enterprises dataset gives). A checkpoint of the calls stream is signed every
``--checkpoint-every`` records through the real ``Checkpointer`` (which folds the Merkle tree
into ``tree_nodes`` with ``MerkleTree``): the default, 60, is one per
``checkpoint_every_seconds`` (5 s) at about 1M calls a day.

Then it measures each table with its indexes (PostgreSQL after ``VACUUM ANALYZE``:
``pg_table_size`` and each index's ``pg_total_relation_size``, all forks; SQLite: ``dbstat``,
every page of each B-tree) and prints bytes per call and the extrapolation to 1M calls.

    .venv/bin/python bench/log_size.py                        # 200k calls, SQLite and PostgreSQL
    .venv/bin/python bench/log_size.py --calls 1000000 --store postgresql
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import platform
import random
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncEngine  # noqa: E402

from gateway.clock import SystemClock  # noqa: E402
from gateway.db.engines import create_engine, migrate  # noqa: E402
from gateway.ledger.checkpoints import Checkpointer, NoteSigner  # noqa: E402
from gateway.ledger.log import LogWriter, PendingRecord  # noqa: E402
from gateway.ledger.records import CallRecord, keyed_digest  # noqa: E402
from gateway.ledger.tree import MerkleTree  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
TABLES = ("log_entries", "trace_rows", "tree_nodes", "checkpoints")
FIELDS = [
    "credit_code",
    "name",
    "legal_rep_name",
    "registered_capital",
    "established",
    "district",
    "industry",
    "status",
]
DISTRICTS = [
    "芙蓉区",
    "天心区",
    "岳麓区",
    "开福区",
    "雨花区",
    "望城区",
    "长沙县",
    "浏阳市",
    "宁乡市",
]
SCENARIO = "enterprise-credit"
MILLION = 1_000_000


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Calls:
    """Query-call records as the gateway writes them, for ``merchants`` merchants (skewed: a
    few heavy, a long tail), one call every ``1 / rate`` seconds."""

    def __init__(self, merchants: int, rows: int, rate: float, seed: int) -> None:
        self._rng = random.Random(seed)
        self._rows = rows
        self._step = dt.timedelta(seconds=1 / rate)
        self._start = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
        self._param_key = secrets.token_bytes(32)
        names = [f"merchant-{i:03d}" for i in range(merchants)]
        self._merchants = [
            (name, f"{name}-{secrets.token_hex(4)}", f"agr-{name}", f"mk1:{secrets.token_hex(8)}")
            for name in names
        ]
        self._weights = [1 / (i + 1) ** 0.8 for i in range(merchants)]

    def record(self, i: int) -> PendingRecord:
        merchant, client, agreement, mark = self._rng.choices(self._merchants, self._weights)[0]
        started = self._start + i * self._step
        call = CallRecord(
            kind="data",
            started_at=started,
            method="POST",
            path=f"/v1/scenarios/{SCENARIO}/datasets/enterprises/query",
            remote=f"10.20.{self._rng.randrange(256)}.{self._rng.randrange(256)}",
        )
        call.merchant_id, call.client_id = merchant, client
        call.agreement_id, call.token_id = agreement, secrets.token_urlsafe(16)
        call.scenario_id, call.dataset_id, call.mode = SCENARIO, "enterprises", "query"
        district = self._rng.choice(DISTRICTS)
        # district is not a sensitive field: logged as asked; a credit code would be a
        # keyed digest (64 hex), as the second filter of some calls is.
        call.parameters = {"district": district}
        if self._rng.random() < 0.3:
            call.parameters["credit_code"] = keyed_digest(self._param_key, secrets.token_hex(9))
        call.parameters["limit"] = self._rows
        call.parameters["offset"] = self._rows * self._rng.randrange(50)
        call.fields = list(FIELDS)
        call.decision, call.status, call.rows = "allow", 200, self._rows
        call.response_sha256 = secrets.token_hex(32)
        call.mark_id = mark
        # About one canary per 64 delivered rows (trace_canary_rate).
        call.canaries = [
            secrets.token_hex(8) for _ in range(self._rows) if self._rng.random() < 1 / 64
        ]
        call.trace_hashes = tuple(secrets.randbits(63) for _ in range(2 * self._rows))
        call.rows_digest = secrets.token_hex(32)
        latency = dt.timedelta(microseconds=self._rng.randrange(2_000, 40_000))
        return call.to_pending(started + latency)


async def fill(engine: AsyncEngine, args: argparse.Namespace) -> dict[str, Any]:
    calls = Calls(args.merchants, args.rows, args.rate, args.seed)
    writer = LogWriter(engine, batch_max=512)
    key = Ed25519PrivateKey.generate()
    checkpointer = Checkpointer(
        engine,
        NoteSigner("bench.local", key),
        SystemClock(),
        deployment="bench.local",
    )
    await writer.start()
    payload = 0
    started = time.perf_counter()
    try:
        for low in range(0, args.calls, args.checkpoint_every):
            records = [
                calls.record(i) for i in range(low, min(args.calls, low + args.checkpoint_every))
            ]
            payload += sum(len(r.payload()) for r in records)
            await asyncio.gather(*(writer.append(r) for r in records))
            await checkpointer.checkpoint("calls")
            if low and low % 50_000 < args.checkpoint_every:
                say(f"  {low:,} calls")
    finally:
        await writer.close()
    tree = MerkleTree(engine, "calls")
    while await tree.fold() > 0:
        pass
    return {
        "fill_seconds": round(time.perf_counter() - started, 1),
        "payload_bytes_per_call": round(payload / args.calls, 1),
        "checkpoints": checkpointer.signed,
        "tree_size": await tree.size(),
    }


async def pg_sizes(engine: AsyncEngine) -> dict[str, dict[str, int]]:
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        # A table in its steady state: visibility map and free-space map written, every
        # BRIN range summarized (autovacuum would do the same in production).
        await conn.execute(text(f"VACUUM ANALYZE {', '.join(TABLES)}"))
        out: dict[str, dict[str, int]] = {}
        for table in TABLES:
            parts = {"table": int(await conn.scalar(text(f"SELECT pg_table_size('{table}')")))}
            rows = await conn.execute(
                text(
                    "SELECT indexrelid::regclass::text, pg_total_relation_size(indexrelid) "
                    "FROM pg_index WHERE indrelid = CAST(:t AS regclass) ORDER BY 1"
                ),
                {"t": table},
            )
            parts.update({str(name): int(size) for name, size in rows})
            total = int(await conn.scalar(text(f"SELECT pg_total_relation_size('{table}')")))
            assert total == sum(parts.values()), (table, total, parts)
            out[table] = parts
        # For comparison, the B-tree on time that the BRIN index replaced (built now, so as
        # tightly packed as a B-tree gets; measured, then dropped).
        await conn.execute(
            text("CREATE INDEX bench_btree_time ON log_entries (stream, recorded_at)")
        )
        btree = await conn.scalar(text("SELECT pg_total_relation_size('bench_btree_time')"))
        await conn.execute(text("DROP INDEX bench_btree_time"))
        out["for comparison"] = {"B-tree (stream, recorded_at)": int(btree)}
    return out


def sqlite_sizes(path: Path) -> dict[str, dict[str, int]]:
    db = sqlite3.connect(path)
    try:
        owners = dict(
            db.execute("SELECT name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index')")
        )
        pages = db.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall()
    finally:
        db.close()
    out: dict[str, dict[str, int]] = {table: {} for table in TABLES}
    # The table's own B-tree first, then its indexes by name (as on PostgreSQL).
    for name, size in sorted(pages, key=lambda page: (page[0] != owners.get(page[0]), page[0])):
        table = owners.get(name)
        if table in out:
            out[table]["table" if name == table else name] = int(size)
    return out


async def measure(store: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    pg_name = None
    if store == "postgresql":
        pg_name = f"dsgw_bench_{secrets.token_hex(4)}"
        await _pg(args.database_url, f'CREATE DATABASE "{pg_name}"')
        url = "postgresql+asyncpg://" + args.database_url.split("://", 1)[1].rsplit("/", 1)[0]
        url += "/" + pg_name
    else:
        path = tmp / "log-size.sqlite3"
        url = f"sqlite+aiosqlite:///{path}"
    engine = create_engine(url)
    try:
        await migrate(engine)
        say(f"{store}: {args.calls:,} calls")
        result = await fill(engine, args)
        sizes = await pg_sizes(engine) if store == "postgresql" else None
    finally:
        await engine.dispose()
        if pg_name is not None and not args.keep:
            await _pg(args.database_url, f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
    if sizes is None:
        sizes = sqlite_sizes(path)
        result["file_bytes"] = path.stat().st_size
    return {"store": store, **result, "sizes": sizes}


async def _pg(dsn: str, statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def report(result: dict[str, Any], calls: int) -> None:
    def line(name: str, size: int) -> None:
        per_call = size / calls
        print(f"  {name:<42}{size:>14,}{per_call:>10.1f}{per_call * MILLION / 2**20:>12.1f}")

    print(
        f"\n{result['store']}: {calls:,} calls, {result['payload_bytes_per_call']:.0f} bytes of "
        f"payload per call, {result['checkpoints']:,} checkpoints, filled in "
        f"{result['fill_seconds']} s"
    )
    print(f"  {'relation':<42}{'bytes':>14}{'B/call':>10}{'MiB/1M':>12}")
    total = 0
    for table in TABLES:
        parts = result["sizes"][table]
        for name, size in parts.items():
            line(table if name == "table" else f"  {name}", size)
        subtotal = sum(parts.values())
        total += subtotal
        line(f"{table} with indexes", subtotal)
    line("all four", total)
    for name, size in result["sizes"].get("for comparison", {}).items():
        line(f"(not kept) {name}", size)
    if "file_bytes" in result:
        line("(database file)", result["file_bytes"])


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


async def amain(args: argparse.Namespace, tmp: Path) -> None:
    stores = ("sqlite", "postgresql") if args.store == "both" else (args.store,)
    results = [await measure(store, args, tmp) for store in stores]
    for result in results:
        report(result, args.calls)
    if args.json:
        document = {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "commit": _git_commit(),
            "machine": {"python": platform.python_version(), "platform": platform.platform()},
            "arguments": vars(args),
            "results": results,
        }
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=200_000, help="call records to write")
    parser.add_argument("--store", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--database-url", default=PG_ADMIN, help="PostgreSQL admin DSN")
    parser.add_argument("--rows", type=int, default=20, help="rows delivered per query answer")
    parser.add_argument("--checkpoint-every", type=int, default=60, help="records per checkpoint")
    parser.add_argument("--merchants", type=int, default=40)
    parser.add_argument("--rate", type=float, default=12.0, help="calls/s (recorded_at spacing)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", default="", help="also write every figure here")
    parser.add_argument("--keep", action="store_true", help="keep the store (directory, database)")
    args = parser.parse_args()
    if args.calls < 1 or args.rows < 0 or args.checkpoint_every < 1:
        parser.error("--calls and --checkpoint-every must be at least 1, --rows at least 0")
    tmp = Path(tempfile.mkdtemp(prefix="dsgw-log-size-"))
    try:
        asyncio.run(amain(args, tmp))
    finally:
        if args.keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
