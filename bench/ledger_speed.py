"""Ledger throughput: records/s appended (group commit), folded into the Merkle tree, and
audited (every leaf, link and checkpoint recomputed).

    .venv/bin/python bench/ledger_speed.py [--records 200000] [--db sqlite|postgresql]

Absolute numbers depend on the machine; docs/benchmarks.md records the command and figures.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import secrets
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.clock import SystemClock
from gateway.db.engines import create_engine, migrate
from gateway.ledger.audit import audit_stream
from gateway.ledger.checkpoints import Checkpointer, NoteSigner
from gateway.ledger.log import LogWriter, PendingRecord
from gateway.ledger.tree import MerkleTree

PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/"


def record(i: int, now: dt.datetime) -> PendingRecord:
    body = {
        "merchant": "m-001",
        "scenario": "enterprise-credit",
        "dataset": "enterprises",
        "mode": "query",
        "decision": "allow",
        "status": 200,
        "rows": 1,
        "i": i,
        "response_sha256": secrets.token_hex(32),
        "latency_us": 900,
    }
    return PendingRecord(
        stream="calls",
        kind="data",
        recorded_at=now,
        body=body,
        merchant_id="m-001",
        decision="allow",
    )


async def main(records: int, db: str) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="dsgw-ledger-bench-"))
    if db == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp / 'bench.sqlite3'}"
        name = None
    else:
        import asyncpg

        name = f"dsgw_bench_{secrets.token_hex(4)}"
        conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()
        url = PG + name
    engine = create_engine(url)
    await migrate(engine)
    writer = LogWriter(engine, batch_max=512)
    await writer.start()
    now = dt.datetime.now(dt.UTC)
    started = time.perf_counter()
    chunk = 2048
    for start in range(0, records, chunk):
        await asyncio.gather(
            *(writer.append(record(i, now)) for i in range(start, min(records, start + chunk)))
        )
    await writer.close()
    append_s = time.perf_counter() - started

    tree = MerkleTree(engine, "calls")
    started = time.perf_counter()
    folded = 0
    while (n := await tree.fold()) > 0:
        folded += n
    fold_s = time.perf_counter() - started

    key = Ed25519PrivateKey.generate()
    checkpointer = Checkpointer(
        engine, NoteSigner("bench.local", key), SystemClock(), deployment="bench.local"
    )
    await checkpointer.checkpoint("calls")

    started = time.perf_counter()
    report = await audit_stream(
        engine, "calls", algorithm="sha256", checkpoint_key=("bench.local", key.public_key())
    )
    audit_s = time.perf_counter() - started
    assert report.clean, report.findings[:3]
    await engine.dispose()
    if name is not None:
        import asyncpg

        conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
        await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await conn.close()

    print(f"store: {db}, records: {records}")
    print(f"append (group commit, durable):  {records / append_s:10.0f} records/s")
    print(f"fold into the Merkle tree:       {folded / fold_s:10.0f} records/s")
    print(
        f"audit (leaves, links, checkpoint): {records / audit_s:8.0f} records/s "
        f"-> 1M records in {1_000_000 / (records / audit_s):.1f} s"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    asyncio.run(main(args.records, args.db))
