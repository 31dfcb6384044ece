"""Closed-loop HTTP load: N concurrent workers posting query bodies for a fixed time.

Each worker loops: pick a random credit code, ``POST {"filters": {"credit_code": code}}``
(or, with ``--bodies``, a random line of that file as the body), read the whole answer,
repeat. The first ``--warmup`` seconds are not measured; then every
answer that *completes* within the next ``--seconds`` seconds is counted (200s for
throughput and latency, anything else as an error). At the deadline workers stop sending but
still read the answer they are waiting for, so every request sent gets its answer read:
``total_ok`` (all 200s, warm-up and tail included) is comparable with the number of call
records the gateway committed.

If ``--server-pid`` is given, the server's CPU time (user + system, all threads, from
``/proc/PID/stat``) is sampled at the start and end of the measured window; so are this
process's own CPU time and the whole machine's busy CPU time (``/proc/stat``), so that
CPU used by anything else on the machine during the window can be reported.

Prints one JSON document on stdout.

    .venv/bin/python bench/load.py --url URL --codes codes.txt [--token T] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

CLK_TCK = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After "pid (comm)": state is fields[0]; utime and stime are stat fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy (not idle, not waiting for I/O) since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    rank = max(1, int(-(-q * len(sorted_values) // 100)))  # ceil(q/100 * n)
    return sorted_values[min(rank, len(sorted_values)) - 1]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.bodies:
        lines = args.bodies.read_text(encoding="utf-8").splitlines()
        bodies = [line.encode() for line in lines if line.strip()]
    else:
        codes = [line.strip() for line in args.codes.read_text().splitlines() if line.strip()]
        bodies = [json.dumps({"filters": {"credit_code": code}}).encode() for code in codes]
    headers = {"Content-Type": "application/json"}
    if args.token:
        headers["Authorization"] = f"Bearer {args.token}"
    rng = random.Random(args.seed)

    latencies: list[float] = []
    measured_ok = 0
    measured_errors: Counter[str] = Counter()
    total_ok = 0
    total_errors: Counter[str] = Counter()
    record_seqs: list[int] = []
    missing_record_header = 0
    rows_returned = 0

    loop = asyncio.get_running_loop()
    start = loop.time()
    window_start = start + args.warmup
    window_end = window_start + args.seconds
    cpu: dict[str, float] = {}

    async def sample_cpu() -> None:
        await asyncio.sleep(max(0.0, window_start - loop.time()))
        cpu["client_start"] = own_cpu_seconds()
        cpu["machine_start"] = machine_busy_seconds()
        if args.server_pid:
            cpu["server_start"] = process_cpu_seconds(args.server_pid)
        await asyncio.sleep(max(0.0, window_end - loop.time()))
        cpu["client_end"] = own_cpu_seconds()
        cpu["machine_end"] = machine_busy_seconds()
        if args.server_pid:
            cpu["server_end"] = process_cpu_seconds(args.server_pid)

    connector = aiohttp.TCPConnector(limit=args.concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def worker() -> None:
            nonlocal measured_ok, total_ok, missing_record_header, rows_returned
            while loop.time() < window_end:
                body = bodies[int(rng.random() * len(bodies))]
                t0 = loop.time()
                try:
                    async with http.post(args.url, data=body, headers=headers) as resp:
                        payload = await resp.read()
                        status = resp.status
                        record_id = resp.headers.get("Dsgw-Record-Id")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    status, payload, record_id = None, b"", None
                    error = type(exc).__name__
                else:
                    error = str(status)
                t1 = loop.time()
                measured = window_start <= t1 < window_end
                if status == 200:
                    total_ok += 1
                    if args.token:
                        if record_id and record_id.startswith("calls/"):
                            record_seqs.append(int(record_id.split("/", 1)[1]))
                        else:
                            missing_record_header += 1
                    if measured:
                        measured_ok += 1
                        latencies.append(t1 - t0)
                        if args.check_rows:
                            rows_returned += json.loads(payload)["count"]
                else:
                    total_errors[error] += 1
                    if measured:
                        measured_errors[error] += 1
                    if len(total_errors) == 1 and sum(total_errors.values()) == 1:
                        # Show the first failure's answer once, for diagnosis.
                        text = payload[:500].decode("utf-8", "replace")
                        print(json.dumps({"first_error": error, "body": text}), file=sys.stderr)

        sampler = asyncio.create_task(sample_cpu())
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        await sampler
    latencies.sort()
    ms = 1000.0
    result: dict[str, Any] = {
        "url": args.url,
        "concurrency": args.concurrency,
        "warmup_s": args.warmup,
        "seconds": args.seconds,
        "ok": measured_ok,
        "errors": dict(measured_errors),
        "rps": measured_ok / args.seconds,
        "latency_ms": {
            "p50": (percentile(latencies, 50) or 0.0) * ms,
            "p95": (percentile(latencies, 95) or 0.0) * ms,
            "p99": (percentile(latencies, 99) or 0.0) * ms,
            "max": (latencies[-1] if latencies else 0.0) * ms,
        },
        "total_ok": total_ok,
        "total_errors": dict(total_errors),
        "client_cpu_s": cpu["client_end"] - cpu["client_start"],
        "machine_busy_cpu_s": cpu["machine_end"] - cpu["machine_start"],
    }
    if args.check_rows:
        result["rows_returned"] = rows_returned
    if args.server_pid:
        result["server_cpu_s"] = cpu["server_end"] - cpu["server_start"]
    if args.token:
        result["record_seqs"] = record_seqs
        result["missing_record_header"] = missing_record_header
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--codes", type=Path, help="one credit code per line")
    source.add_argument("--bodies", type=Path, help="one JSON request body per line")
    parser.add_argument("--token", default="", help="bearer token (governed side)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--server-pid", type=int, default=0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--check-rows", action="store_true", help="parse answers and count returned rows"
    )
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
