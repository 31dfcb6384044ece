"""What a group commit of call records costs: the gateway's LogWriter, here or in another
checkout (``--source``), against the floor of a bare threaded write.

On a scratch store made by the gateway's own migrations (same schema, same SQLite pragmas:
WAL, ``synchronous=FULL``), for batches of ``--batch`` call records:

``logwriter``   the real :class:`gateway.ledger.log.LogWriter` of the checkout measured:
                ``--batch`` concurrent ``append`` calls, i.e. one group commit.
``harness``     what the ``logwriter`` figures hold besides the writer: the same records
                made, their payloads encoded, and gathered as ``--batch`` tasks, with no
                writer. ``logwriter`` minus ``harness`` is the writer's own cost.
``floor``       the same rows, prebuilt on the loop, written by a stdlib ``sqlite3``
                connection on one dedicated thread: BEGIN IMMEDIATE, executemany, COMMIT
                in one hop, no head read, no futures. What a commit cannot go below.

    .venv/bin/python bench/log_commit.py [--batch 13] [--batches 300] [--repeat 3]
    .venv/bin/python bench/log_commit.py --source DIR   # DIR/gateway instead of this one
    .venv/bin/python bench/log_commit.py --json OUT --baseline BEFORE.json

Reports wall, process CPU (all threads) and the event-loop thread's own CPU per record,
medians of ``--repeat`` runs. To compare writers, measure both checkouts minutes apart
(``git archive <commit> gateway | tar -x -C DIR`` gives a checkout) and pass the first
run's ``--json`` as the second's ``--baseline``: ratios hold on a noisy machine better
than absolute times.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
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

COLUMNS = (
    "stream", "seq", "recorded_at", "kind", "merchant_id", "scenario_id", "dataset_id",
    "decision", "payload", "salt", "leaf_hash", "prev_hash", "entry_hash",
)  # fmt: skip
INSERT = (
    f"INSERT INTO log_entries ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})"
)


def call_record(stream: str) -> Any:
    """A record shaped like a governed query's call record."""
    from gateway.ledger.log import PendingRecord

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


Figures = tuple[float, float, float]  # wall, process CPU, loop-thread CPU; µs per record


async def measure(fn: Callable[[], Awaitable[int]], batches: int, repeat: int) -> Figures:
    wall, cpu, loop_cpu = [], [], []
    for _ in range(repeat):
        t0, c0, l0 = time.perf_counter(), time.process_time(), time.thread_time()
        records = 0
        for _ in range(batches):
            records += await fn()
        wall.append((time.perf_counter() - t0) / records * 1e6)
        cpu.append((time.process_time() - c0) / records * 1e6)
        loop_cpu.append((time.thread_time() - l0) / records * 1e6)
    return statistics.median(wall), statistics.median(cpu), statistics.median(loop_cpu)


async def run(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    from gateway.db.engines import create_engine, migrate
    from gateway.ledger.hashing import GENESIS
    from gateway.ledger.log import LogWriter, _build_row

    path = data_dir / "scratch.sqlite3"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    await migrate(engine)
    results: dict[str, Any] = {}
    writer = LogWriter(engine, batch_max=512)
    await writer.start()
    head: tuple[int, bytes] = (0, GENESIS)

    async def logwriter() -> int:
        await asyncio.gather(*(writer.append(call_record("calls")) for _ in range(args.batch)))
        return int(args.batch)

    async def encoded() -> bytes:
        return bytes(call_record("calls").payload())

    async def harness() -> int:
        await asyncio.gather(*(encoded() for _ in range(args.batch)))
        return int(args.batch)

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

    async def floor() -> int:
        nonlocal head
        params = []
        for _ in range(args.batch):
            record = call_record("products")
            row, appended = _build_row("sha256", record, record.payload(), os.urandom(16), head)
            head = (appended.seq + 1, appended.entry_hash)
            params.append(tuple(sqlite_value(row[c]) for c in COLUMNS))
        await loop.run_in_executor(thread, write, params)
        return int(args.batch)

    try:
        for name, fn in (("logwriter", logwriter), ("harness", harness), ("floor", floor)):
            await fn()  # warm caches and connections
            results[name] = await measure(fn, args.batches, args.repeat)
        results["_check"] = (writer.records_committed, writer.batches_committed)
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
    parser.add_argument("--source", type=Path, default=ROOT, help="checkout whose gateway runs")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--baseline", type=Path, help="a --json of an earlier run: ratios")
    args = parser.parse_args()
    source = args.source.resolve()
    sys.path.insert(0, str(source))
    import gateway

    if Path(gateway.__file__).resolve().parent.parent != source:
        raise SystemExit(f"gateway imported from {gateway.__file__}, not from {source}")
    data_dir = Path(tempfile.mkdtemp(prefix="dsgw-logcommit-"))
    try:
        results = asyncio.run(run(args, data_dir))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    records, batches = results.pop("_check")
    print(f"gateway from {source}")
    print(
        f"batch of {args.batch} records; LogWriter committed {records} records in "
        f"{batches} batches (mean {records / batches:.1f})"
    )
    baseline = json.loads(args.baseline.read_text())["paths"] if args.baseline else {}
    print(
        f"{'path':<10} {'wall µs/rec':>12} {'CPU µs/rec':>11} {'loop CPU µs/rec':>16} "
        f"{'CPU µs/batch':>13}"
    )
    for name, (wall, cpu, loop_cpu) in results.items():
        line = f"{name:<10} {wall:>12.1f} {cpu:>11.1f} {loop_cpu:>16.1f} {cpu * args.batch:>13.0f}"
        if name in baseline:
            before = baseline[name]
            line += (
                f"   vs baseline: wall x{wall / before['wall_us']:.2f}, "
                f"CPU x{cpu / before['cpu_us']:.2f}, "
                f"loop CPU x{loop_cpu / before['loop_cpu_us']:.2f}"
            )
        print(line)
    if "harness" in results:
        own = [a - b for a, b in zip(results["logwriter"], results["harness"], strict=True)]
        line = (
            f"{'writer':<10} {'':>12} {own[1]:>11.1f} {own[2]:>16.1f} {own[1] * args.batch:>13.0f}"
        )
        if "harness" in baseline:
            before = [
                baseline["logwriter"][k] - baseline["harness"][k] for k in ("cpu_us", "loop_cpu_us")
            ]
            line += (
                f"   vs baseline: CPU x{own[1] / before[0]:.2f}, loop CPU x{own[2] / before[1]:.2f}"
            )
        print(line + "   (logwriter - harness: the writer's own cost)")
    if args.json:
        paths = {
            name: {"wall_us": wall, "cpu_us": cpu, "loop_cpu_us": loop_cpu}
            for name, (wall, cpu, loop_cpu) in results.items()
        }
        document = {"source": str(source), "batch": args.batch, "paths": paths}
        args.json.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
