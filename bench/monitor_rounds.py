"""The misuse monitor's CPU per call with a full window, and with a long log behind it.

A governed call's budget is a few hundred microseconds of CPU, and the monitor must take
less than a tenth of it however many records the log already holds. This benchmark builds
the demo world, optionally puts ``--history`` allowed calls of the merchant in the log over
the week before the last hour (written directly, hash columns zero: the monitor does not
read them), fills the last hour with ``--window`` calls of one merchant (through the real
log writer), lets a monitor catch up, then ``--rounds`` times appends ``--batch`` new calls
(one round's worth at a steady rate) and times one monitor round in process CPU (all
threads).

Two thirds of the calls verify a distinct credit code and one third query one, so the
enumeration and scraping rules see their worst case: every identifier distinct and
consecutive.

    .venv/bin/python bench/monitor_rounds.py                       # 30k-call window
    .venv/bin/python bench/monitor_rounds.py --history 1000000     # with 1M older records
    .venv/bin/python bench/monitor_rounds.py --out bench/results/monitor_rounds.json

Prints the catch-up cost and each round's CPU per new call; the summary is the mean of the
rounds after the first.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import query_path  # noqa: E402
from sqlalchemy import func, insert, select  # noqa: E402

from gateway.cli.demo_data import DEMO_MERCHANT, DEMO_SCENARIO  # noqa: E402
from gateway.db.engines import engine_for  # noqa: E402
from gateway.db.schema import LogEntryRow, MonitorCursorRow  # noqa: E402
from gateway.ledger.records import CallRecord  # noqa: E402
from gateway.monitoring.monitor import Monitor  # noqa: E402
from gateway.monitoring.rules import Thresholds  # noqa: E402
from gateway.runtime import Gateway  # noqa: E402
from gateway.settings import Settings, load_settings  # noqa: E402

_ZERO = b"\0"


def call(i: int, at: dt.datetime) -> CallRecord:
    """Call ``i`` of the merchant: a verify of credit code ``i``, every third a query."""
    code = f"9143010{i:010d}X"
    query = i % 3 == 0
    parameters: dict[str, Any] = (
        {"credit_code": {"eq": code}, "limit": 10, "offset": 0} if query else {"credit_code": code}
    )
    return CallRecord(
        kind="data",
        started_at=at,
        merchant_id=DEMO_MERCHANT,
        client_id="bench-client",
        scenario_id=DEMO_SCENARIO,
        dataset_id="enterprises",
        mode="query" if query else "verify",
        decision="allow",
        status=200,
        remote="127.0.0.1",
        parameters=parameters,
    )


async def append_calls(
    gateway: Gateway, first: int, n: int, start: dt.datetime, end: dt.datetime
) -> None:
    """``n`` calls spread evenly over ``[start, end]``, through the real log writer."""
    records = [call(first + k, start + (end - start) * (k / max(n, 1))) for k in range(n)]
    for k in range(0, n, 1000):
        chunk = records[k : k + 1000]
        await asyncio.gather(*(gateway.log.append(r.to_pending(r.started_at)) for r in chunk))


async def write_history(settings: Settings, n: int) -> None:
    """``n`` older calls over the week before the last hour, and the monitor's cursor past
    them (they were evaluated long ago)."""
    engine = engine_for(settings)
    now = dt.datetime.now(dt.UTC)
    week = dt.timedelta(days=7)
    span = week - dt.timedelta(hours=1)
    try:
        async with engine.begin() as conn:
            base = int(
                await conn.scalar(
                    select(func.coalesce(func.max(LogEntryRow.seq) + 1, 0)).where(
                        LogEntryRow.stream == "calls"
                    )
                )
            )
            for k in range(0, n, 20_000):
                rows = []
                for j in range(k, min(n, k + 20_000)):
                    at = now - week + span * (j / n)
                    pending = call(10**8 + j, at).to_pending(at)
                    rows.append(
                        {
                            "stream": "calls",
                            "seq": base + j,
                            "recorded_at": at,
                            "kind": "data",
                            "merchant_id": DEMO_MERCHANT,
                            "scenario_id": DEMO_SCENARIO,
                            "dataset_id": "enterprises",
                            "decision": "allow",
                            "payload": pending.payload().decode("utf-8"),
                            "salt": _ZERO,
                            "leaf_hash": _ZERO,
                            "prev_hash": _ZERO,
                            "entry_hash": _ZERO,
                        }
                    )
                await conn.execute(insert(LogEntryRow), rows)
            await conn.execute(
                insert(MonitorCursorRow).values(name="alerts", position=base + n, updated_at=now)
            )
    finally:
        await engine.dispose()


async def measure(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    passphrase = secrets.token_urlsafe(16)
    query_path.generate_sources(data_dir, 2000)
    await query_path.setup_gateway(data_dir, passphrase)
    settings = load_settings(
        None, environ={}, data_dir=data_dir, keystore_passphrase=passphrase, chain="none"
    )
    if args.history:
        started = time.monotonic()
        await write_history(settings, args.history)
        print(f"history: {args.history} calls in {time.monotonic() - started:.0f} s")
    gateway = await Gateway.open(settings)
    try:
        now = gateway.clock.now()
        await append_calls(
            gateway, 0, args.window, now - dt.timedelta(minutes=55), now - dt.timedelta(seconds=5)
        )
        monitor = Monitor(
            gateway.engine,
            gateway.alerts,
            gateway.policy,
            gateway.clock,
            thresholds=Thresholds.from_settings(settings),
        )
        cpu = time.process_time()
        await monitor.run_once()
        catch_up = (time.process_time() - cpu) * 1e6 / args.window
        print(f"catch-up over {args.window} calls: {catch_up:.1f} µs/call")
        rounds: list[float] = []
        first = args.window
        for r in range(args.rounds):
            at = gateway.clock.now()
            await append_calls(gateway, first, args.batch, at - dt.timedelta(seconds=5), at)
            first += args.batch
            cpu = time.process_time()
            run = await monitor.run_once()
            spent = time.process_time() - cpu
            rounds.append(spent * 1e6 / args.batch)
            print(
                f"round {r}: {run.batches} batch(es), {spent * 1e3:.1f} ms CPU, "
                f"{rounds[-1]:.1f} µs/call"
            )
    finally:
        await gateway.close()
    steady = rounds[1:] or rounds
    return {
        "window": args.window,
        "batch": args.batch,
        "history": args.history,
        "catch_up_us_per_call": catch_up,
        "rounds_us_per_call": rounds,
        "steady_us_per_call": sum(steady) / len(steady),
        "commit": query_path.machine_facts().get("git_commit"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=30_000, help="calls in the last hour")
    parser.add_argument("--batch", type=int, default=2_250, help="new calls per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--history", type=int, default=0, help="older calls already logged")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON results here")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="dsgw-monitor-rounds-"))
    try:
        result = asyncio.run(measure(args, data_dir))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    print(f"steady monitor CPU per call: {result['steady_us_per_call']:.1f} µs")
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
