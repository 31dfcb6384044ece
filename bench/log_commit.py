"""What a group commit of call records costs: the gateway's LogWriter against leaner write
paths (prototypes that live only in this file, to size a proposed change).

On a scratch store made by the gateway's own migrations (same schema, same SQLite pragmas:
WAL, ``synchronous=FULL``), for batches of ``--batch`` call records:

``logwriter``   the real :class:`gateway.ledger.log.LogWriter`: ``--batch`` concurrent
                ``append`` calls, i.e. one group commit through SQLAlchemy's asyncio layer and
                aiosqlite (several thread round trips per batch).
``driver_sql``  the same rows (built by the real ``_build_row``) inserted with one
                ``exec_driver_sql`` executemany in ``engine.begin()``: SQLAlchemy's per-row
                bind processing skipped, the aiosqlite round trips kept.
``thread``      the same rows written by a stdlib ``sqlite3`` connection owned by one
                dedicated thread: BEGIN, executemany, COMMIT in one hop from the event loop.

    .venv/bin/python bench/log_commit.py [--batch 13] [--batches 300] [--repeat 3]

Reports wall and process CPU time (all threads) per record, medians of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.db import create_engine, migrate  # noqa: E402
from gateway.ledger.hashing import GENESIS, HashAlgorithm  # noqa: E402
from gateway.ledger.log import LogWriter, PendingRecord, _build_row  # noqa: E402

COLUMNS = (
    "stream", "seq", "recorded_at", "kind", "merchant_id", "scenario_id", "dataset_id",
    "decision", "payload", "salt", "leaf_hash", "prev_hash", "entry_hash",
)  # fmt: skip
INSERT = (
    f"INSERT INTO log_entries ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})"
)


def call_record(stream: str) -> PendingRecord:
    """A record shaped like a governed query's call record."""
    now = dt.datetime.now(dt.UTC)
    return PendingRecord(
        stream=stream,
        kind="data",
        recorded_at=now,
        merchant_id="xingchen-credit",
        scenario_id="enterprise-credit",
        dataset_id="enterprises",
        decision="allow",
        body={
            "method": "POST",
            "path": "/v1/scenarios/enterprise-credit/datasets/enterprises/query",
            "merchant": "xingchen-credit",
            "client": "xingchen-credit-0237ecaf",
            "scenario": "enterprise-credit",
            "agreement": "agr-0123456789abcdef",
            "token_id": "3f0e8f9c6f1e4b0f9a1d2c3b4a5f6e7d",
            "dataset": "enterprises",
            "mode": "query",
            "fields": [
                "credit_code",
                "name",
                "legal_rep_name",
                "registered_capital",
                "established",
                "district",
                "industry",
                "status",
            ],
            "parameters": {"credit_code": "91430100MA4L0XXXXX", "limit": 50, "offset": 0},
            "decision": "allow",
            "status": 200,
            "reason": None,
            "reason_detail": None,
            "rows": 1,
            "response_sha256": "0" * 64,
            "mark_id": None,
            "latency_us": 1234,
            "remote": "127.0.0.1",
        },
    )


def sqlite_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        # SQLAlchemy's SQLite DATETIME storage format.
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


class ThreadedCommit:
    """Prototype of a leaner ``LogWriter._commit`` for SQLite stores: one stdlib ``sqlite3``
    connection owned by one dedicated thread; a batch is BEGIN IMMEDIATE, one executemany,
    COMMIT, i.e. one hop from the event loop instead of several aiosqlite round trips.
    Same rows (the real ``_build_row``), same pragmas, same durability (``synchronous=FULL``).

    ``install(writer)`` swaps it in for a :class:`LogWriter`'s ``_commit`` (benchmark only).
    Unlike the real writer it does not handle other processes appending concurrently.
    """

    def __init__(self, path: Path, algorithm: HashAlgorithm = "sha256") -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "busy_timeout=10000"):
            self._conn.execute(f"PRAGMA {pragma}")
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dsgw-log")
        self._algorithm: HashAlgorithm = algorithm
        self._heads: dict[str, tuple[int, bytes]] = {}

    def _head(self, stream: str) -> tuple[int, bytes]:
        row = self._conn.execute(
            "SELECT seq, entry_hash FROM log_entries WHERE stream = ? ORDER BY seq DESC LIMIT 1",
            (stream,),
        ).fetchone()
        return (0, GENESIS) if row is None else (row[0] + 1, bytes(row[1]))

    def _write(self, params: list[tuple[Any, ...]]) -> None:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.executemany(INSERT, params)
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    async def commit(self, jobs: Any) -> list[Any]:
        loop = asyncio.get_running_loop()
        heads = dict(self._heads)
        params, results = [], []
        for job in jobs:
            stream = job.record.stream
            if stream not in heads:
                heads[stream] = await loop.run_in_executor(self._thread, self._head, stream)
            row, appended = _build_row(
                self._algorithm,
                job.record,
                job.payload,
                job.salt,
                heads[stream],
            )
            heads[stream] = (appended.seq + 1, appended.entry_hash)
            params.append(tuple(sqlite_value(row[c]) for c in COLUMNS))
            results.append(appended)
        await loop.run_in_executor(self._thread, self._write, params)
        self._heads = heads
        return results

    def install(self, writer: LogWriter) -> None:
        async def commit(jobs: Any) -> list[Any]:
            results = await self.commit(jobs)
            writer.batches_committed += 1
            writer.records_committed += len(results)
            return results

        writer._commit = commit  # type: ignore[method-assign]

    def close(self) -> None:
        self._thread.shutdown()
        self._conn.close()


async def measure(
    fn: Callable[[], Awaitable[int]], batches: int, repeat: int
) -> tuple[float, float]:
    wall, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        records = 0
        for _ in range(batches):
            records += await fn()
        wall.append((time.perf_counter() - t0) / records * 1e6)
        cpu.append((time.process_time() - c0) / records * 1e6)
    return statistics.median(wall), statistics.median(cpu)


async def run(args: argparse.Namespace, data_dir: Path) -> dict[str, tuple[float, float]]:
    path = data_dir / "scratch.sqlite3"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    await migrate(engine)
    results: dict[str, tuple[float, float]] = {}
    writer = LogWriter(engine, batch_max=512)
    await writer.start()
    heads: dict[str, tuple[int, bytes]] = {"governance": (0, GENESIS), "products": (0, GENESIS)}

    def build(stream: str) -> list[dict[str, Any]]:
        rows = []
        for _ in range(args.batch):
            record = call_record(stream)
            row, appended = _build_row(
                "sha256", record, record.payload(), os.urandom(16), heads[stream]
            )
            heads[stream] = (appended.seq + 1, appended.entry_hash)
            rows.append(row)
        return rows

    async def logwriter() -> int:
        await asyncio.gather(*(writer.append(call_record("calls")) for _ in range(args.batch)))
        return int(args.batch)

    async def driver_sql() -> int:
        rows = build("governance")
        params = [tuple(sqlite_value(row[c]) for c in COLUMNS) for row in rows]
        async with engine.begin() as conn:
            await conn.exec_driver_sql(INSERT, params)
        return len(rows)

    direct = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in ("journal_mode=WAL", "synchronous=FULL", "busy_timeout=10000"):
        direct.execute(f"PRAGMA {pragma}")
    thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="log-writer")
    loop = asyncio.get_running_loop()

    def write(params: list[tuple[Any, ...]]) -> None:
        direct.execute("BEGIN IMMEDIATE")
        try:
            direct.executemany(INSERT, params)
        except BaseException:
            direct.execute("ROLLBACK")
            raise
        direct.execute("COMMIT")

    async def in_thread() -> int:
        rows = build("products")
        params = [tuple(sqlite_value(row[c]) for c in COLUMNS) for row in rows]
        await loop.run_in_executor(thread, write, params)
        return len(rows)

    try:
        for name, fn in (
            ("logwriter", logwriter),
            ("driver_sql", driver_sql),
            ("thread", in_thread),
        ):
            await fn()  # warm caches and connections
            results[name] = await measure(fn, args.batches, args.repeat)
        results["_check"] = (float(writer.records_committed), float(writer.batches_committed))
    finally:
        await writer.close()
        thread.shutdown()
        direct.close()
        await engine.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=13, help="records per group commit")
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="dsgw-logcommit-"))
    try:
        results = asyncio.run(run(args, data_dir))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    records, batches = results.pop("_check")
    print(
        f"batch of {args.batch} records; LogWriter committed {records:.0f} records in "
        f"{batches:.0f} batches (mean {records / batches:.1f})"
    )
    print(f"{'path':<12} {'wall µs/record':>15} {'CPU µs/record':>14} {'CPU µs/batch':>13}")
    for name, (wall, cpu) in results.items():
        print(f"{name:<12} {wall:>15.1f} {cpu:>14.1f} {cpu * args.batch:>13.0f}")


if __name__ == "__main__":
    main()
