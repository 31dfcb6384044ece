"""Profiling harness for the query path: one server in this process, load from another.

Runs the governed gateway (or, with ``--side bare``, the bare handler of
``bench/bare_server.py``) inside this process, drives it with ``bench/load.py`` in a child
process, and reports:

- requests/s, server CPU per call (whole process, all threads) and event-loop-thread CPU
  per call (``time.thread_time`` of the main thread);
- for the gateway, the log writer's batches and records committed during the window (mean
  group-commit batch size) and policy reloads;
- with ``--variant``, the same measurement with parts of the gateway swapped *in this
  process only* (no gateway code is changed), to size what each part costs end to end:
  ``no-log`` answers without writing any call record (NOT a valid configuration, a
  measurement), ``no-epoch-stat`` skips the per-call check of the policy epoch;
- with ``--chain``, ``--env DSGW_NAME=VALUE`` and ``--gc default``, the same measurement
  with another anchoring backend, another setting (e.g. the monitor off), or CPython's own
  collector thresholds instead of what ``dsgw serve`` sets (``settle_heap``), to size each;
- with ``--cprofile``, the top functions of the event-loop thread by own time and by
  cumulative time (cProfile slows the loop down; read the shares, not the absolute times).

    .venv/bin/python bench/profile_gateway.py [--side governed|bare] [--seconds 10]
                                              [--concurrency 32] [--rows 20000] [--cprofile]
                                              [--variant no-log|no-epoch-stat]
                                              [--chain none|embedded|anvil] [--gc default]
                                              [--env DSGW_MONITOR_ENABLED=false]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import resource
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bare_server  # noqa: E402
import query_path  # noqa: E402

from gateway.cli.demo import DEMO_SCENARIO, REGISTRY  # noqa: E402
from gateway.cli.server import running_gateway, settle_heap  # noqa: E402
from gateway.ledger.log import AppendedEntry, PendingRecord  # noqa: E402
from gateway.runtime import Gateway  # noqa: E402
from gateway.settings import load_settings  # noqa: E402


async def fetch_token(base: str, client_id: str, secret: str) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{base}/oauth/token",
            data={"grant_type": "client_credentials", "scope": f"scenario:{DEMO_SCENARIO}"},
            headers={"Authorization": aiohttp.encode_basic_auth(client_id, secret)},
        ) as resp,
    ):
        body = await resp.json()
        assert resp.status == 200, body
        return str(body["access_token"])


async def drive(url: str, codes: Path, args: argparse.Namespace, token: str) -> dict[str, Any]:
    command = [
        sys.executable, str(ROOT / "bench" / "load.py"),
        "--url", url, "--codes", str(codes),
        "--seconds", str(args.seconds), "--warmup", str(args.warmup),
        "--concurrency", str(args.concurrency), "--server-pid", str(os.getpid()),
    ]  # fmt: skip
    if token:
        command += ["--token", token]
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"load generator failed:\n{err.decode()}")
    result: dict[str, Any] = json.loads(out)
    result.pop("record_seqs", None)
    return result


async def measured(
    args: argparse.Namespace, url: str, codes: Path, token: str, gateway: Gateway | None
) -> dict[str, Any]:
    profiler = cProfile.Profile() if args.cprofile else None
    load = asyncio.create_task(drive(url, codes, args, token))
    await asyncio.sleep(args.warmup)
    thread0 = time.thread_time()
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    log0 = (gateway.log.batches_committed, gateway.log.records_committed) if gateway else None
    reloads0 = gateway.policy.reloads if gateway else 0
    if profiler:
        profiler.enable()
    await asyncio.sleep(args.seconds)
    if profiler:
        profiler.disable()
    thread_cpu = time.thread_time() - thread0
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    log1 = (gateway.log.batches_committed, gateway.log.records_committed) if gateway else None
    result = await load
    ok = max(1, result["ok"])
    report: dict[str, Any] = {
        "variant": ",".join(args.variant) or ("bare" if gateway is None else "full"),
        "switch_interval_s": sys.getswitchinterval(),
        "rps": result["rps"],
        "latency_ms": result["latency_ms"],
        "errors": result["errors"],
        "server_cpu_us_per_call": result["server_cpu_s"] / ok * 1e6,
        "loop_thread_cpu_us_per_call": thread_cpu / ok * 1e6,
        "server_user_us_per_call": (usage1.ru_utime - usage0.ru_utime) / ok * 1e6,
        "server_system_us_per_call": (usage1.ru_stime - usage0.ru_stime) / ok * 1e6,
        "context_switches_per_call": (
            usage1.ru_nvcsw - usage0.ru_nvcsw + usage1.ru_nivcsw - usage0.ru_nivcsw
        )
        / ok,
        "server_cpu_share_of_one_core": result["server_cpu_s"] / args.seconds,
        "client_cpu_share_of_one_core": result["client_cpu_s"] / args.seconds,
    }
    if gateway and log0 and log1:
        batches, records = log1[0] - log0[0], log1[1] - log0[1]
        report["log_batches"] = batches
        report["log_records"] = records
        report["mean_batch"] = records / batches if batches else None
        report["policy_reloads"] = gateway.policy.reloads - reloads0
    if profiler:
        for key in ("tottime", "cumulative"):
            buffer = io.StringIO()
            stats = pstats.Stats(profiler, stream=buffer)
            stats.sort_stats(key).print_stats(args.top)
            report[f"cprofile_{key}"] = buffer.getvalue()
    return report


async def run(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    passphrase = secrets.token_urlsafe(24)
    query_path.generate_sources(data_dir, args.rows)
    client_id, secret = await query_path.setup_gateway(data_dir, passphrase)
    codes = data_dir / "codes.txt"
    query_path.write_codes(codes, args.rows)
    if args.side == "bare":
        runner = web.AppRunner(
            bare_server.make_app(data_dir / REGISTRY, load_settings(environ={}).source.pool_size),
            access_log=None,
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = int(runner.addresses[0][1])
        try:
            return await measured(args, f"http://127.0.0.1:{port}/query", codes, "", None)
        finally:
            await runner.cleanup()
    environ = dict(item.split("=", 1) for item in args.env)
    settings = load_settings(
        None, environ=environ, data_dir=data_dir, keystore_passphrase=passphrase, port=0
    )
    if args.chain is not None:
        settings = settings.replace(chain=args.chain)
    async with running_gateway(settings) as (gateway, port):
        base = f"http://127.0.0.1:{port}"
        token = await fetch_token(base, client_id, secret)
        apply_variants(gateway, args.variant)
        if args.gc == "serve":
            settle_heap()
        return await measured(args, base + query_path.GOVERNED_PATH, codes, token, gateway)


def apply_variants(gateway: Gateway, variants: list[str]) -> None:
    """Swap parts of this process's gateway for a measurement (never a deployment)."""
    if "no-log" in variants:
        seq = iter(range(1 << 62))

        async def append(record: PendingRecord) -> AppendedEntry:
            return AppendedEntry(record.stream, next(seq), bytes(32), bytes(32))

        gateway.log.append = append  # type: ignore[method-assign]
    if "no-epoch-stat" in variants:
        policy = gateway.policy

        async def current() -> Any:
            return policy._snapshot

        policy.current = current  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=("governed", "bare"), default="governed")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--cprofile", action="store_true")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        choices=("no-log", "no-epoch-stat"),
        help="swap a part of the gateway in this process (repeatable); see the docstring",
    )
    parser.add_argument(
        "--chain",
        choices=("none", "embedded", "anvil"),
        default=None,
        help="anchoring backend of the governed side (default: as shipped, anvil if installed)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="DSGW_NAME=VALUE",
        help="a setting of the governed side, as its environment variable (repeatable), "
        "e.g. DSGW_MONITOR_ENABLED=false to size the monitor's share",
    )
    parser.add_argument(
        "--gc",
        choices=("serve", "default"),
        default="serve",
        help="the collector as `dsgw serve` tunes it (settle_heap), or CPython's defaults",
    )
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument(
        "--switch-interval",
        type=float,
        default=None,
        help="sys.setswitchinterval() for the server (CPython default 0.005 s); an experiment",
    )
    args = parser.parse_args()
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    data_dir = Path(tempfile.mkdtemp(prefix="dsgw-profile-"))
    try:
        report = asyncio.run(run(args, data_dir))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    for key, value in report.items():
        if not key.startswith("cprofile_"):
            print(f"{key:>32}: {value}")
    for key in ("cprofile_tottime", "cprofile_cumulative"):
        if key in report:
            print(f"\n===== {key} =====\n{report[key]}")


if __name__ == "__main__":
    main()
