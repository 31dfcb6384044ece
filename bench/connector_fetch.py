"""Micro-benchmark of ``SqlConnector.fetch`` for a one-row point lookup.

Writes a synthetic ``enterprises`` table (``--rows``, default 20,000, indexed as
``connectors.synthetic.write_sqlite`` indexes it) to a temporary SQLite file, then asks the
connector for one enterprise by ``credit_code`` (``eq``), the 8 fields of the demo query
grant, ordered by the key, limit 50 -- the data-plane's query call. ``--concurrency`` tasks
call in a closed loop for ``--seconds``; the report is calls/s and process CPU per call
(all threads: the event loop and the connector's pool).

    .venv/bin/python bench/connector_fetch.py [--rows 20000] [--seconds 5]
                                              [--concurrency 1] [--json]

Run it on two checkouts back to back to compare (the machine is shared: compare ratios).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bare_server import scenario_fields  # noqa: E402

from connectors import Condition, RowQuery, SqlConnector, synthetic  # noqa: E402


async def _measure(path: Path, rows: int, seconds: float, concurrency: int) -> dict[str, float]:
    codes = [r["credit_code"] for r in synthetic.generate("enterprises", min(rows, 5000), seed=7)]
    connector = SqlConnector(f"sqlite:///{path}", "enterprises", synthetic.SCHEMAS["enterprises"])
    fields = scenario_fields()
    calls = 0

    async def one(i: int) -> None:
        code = codes[i % len(codes)]
        got = await connector.fetch(
            RowQuery(fields, (Condition("credit_code", "eq", code),), ("credit_code",), 50)
        )
        assert [row["credit_code"] for row in got] == [code], got

    try:
        for i in range(200):  # warm-up: pools, caches, first compile
            await one(i)

        async def worker(start: int, deadline: float) -> None:
            nonlocal calls
            i = start
            while time.perf_counter() < deadline:
                await one(i)
                i += concurrency
                calls += 1

        cpu0, wall0 = time.process_time(), time.perf_counter()
        deadline = wall0 + seconds
        await asyncio.gather(*(worker(w, deadline) for w in range(concurrency)))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        await connector.close()
    return {
        "calls": calls,
        "calls_per_s": round(calls / wall, 1),
        "wall_us_per_call": round(wall / calls * 1e6, 1),
        "cpu_us_per_call": round(cpu / calls * 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "registry.sqlite3"
        synthetic.write_sqlite(path, {"enterprises": args.rows}, seed=7)
        result = asyncio.run(_measure(path, args.rows, args.seconds, args.concurrency))
    result |= {"rows": args.rows, "concurrency": args.concurrency}
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['calls_per_s']:.0f} calls/s, {result['cpu_us_per_call']:.1f} us CPU/call, "
            f"{result['wall_us_per_call']:.1f} us wall/call "
            f"({args.rows} rows, concurrency {args.concurrency})"
        )


if __name__ == "__main__":
    main()
