"""Load benchmark of the query path: the governed gateway, a bare handler and the floor.

Three servers answer the same data-plane calls (``bench/modes.py``: ``verify``, ``query1``,
``query50``, ``aggregate`` on ``enterprises`` of the ``enterprise-credit`` scenario) from the
same source:

- **floor** (``bench/floor_server.py``): aiohttp and the database driver alone (stdlib
  ``sqlite3``; ``psycopg`` on PostgreSQL), no SQLAlchemy, no thread hop;
- **bare** (``bench/bare_server.py``): aiohttp and the gateway's ``SqlConnector`` calls;
- **governed** (``dsgw serve``): the gateway, which also verifies a bearer token, checks the
  scenario, agreement and quotas, masks, marks, audits aggregates and commits a hash-linked
  call record before each answer leaves.

Each server is its own process; the load generator (``wrk`` with ``bench/post_bodies.lua``,
or ``bench/load.py`` with ``--load-generator aiohttp``) is another. Each round runs every
mode on every side, the sides' order rotating from round to round; the medians of the
rounds are compared. At the end the gateway is stopped and its store is checked: every 200
answer's record is in the ``calls`` stream, with no gap in its seqs.

    .venv/bin/python bench/query_path.py [--modes verify,query1,query50,aggregate]
        [--seconds 8] [--rounds 3] [--concurrency 32] [--rows 20000] [--store sqlite]
        [--log-records N] [--workers W] [--load-generator wrk] [--out results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import os
import platform
import random
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

import modes as bench_modes  # noqa: E402
import stores  # noqa: E402
import wrk_load  # noqa: E402

from connectors import synthetic  # noqa: E402
from gateway.cli.demo_data import (  # noqa: E402
    DEMO_SCENARIO,
    REGISTRY,
    VEHICLES,
    register_demo_world,
)
from gateway.runtime import Gateway, initialise  # noqa: E402
from gateway.settings import load_settings  # noqa: E402

SEED = bench_modes.SEED
DATASET = bench_modes.DATASET
GOVERNED_PATH = f"/v1/scenarios/{DEMO_SCENARIO}/datasets/{DATASET}/query"
BIN = Path(sys.executable).parent
CODES_IN_POOL = 5000
BENCH_QUOTAS = {"rate_per_minute": 10_000_000}
SIDES = ("floor", "bare", "governed")
PG_ADMIN = "postgresql://127.0.0.1:5432/test"
DISTRICT_KEY_INDEX = "enterprises_district_credit_code"
# Goals of the issue, per mode (throughput ratios of the medians) and for every mode.
GOAL_VS_FLOOR = {"verify": 0.5, "query1": 0.5}
GOAL_VS_BARE = 0.8
GOAL_CPU_US = 250.0
GOAL_TAIL = 3.0


# --- setup -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def generate_sources(data_dir: Path, rows: int) -> None:
    """``rows`` enterprises (the benchmarks' dataset) and the demo's other sources, those
    capped at the default run's size so that a 1M-row run spends its time on enterprises."""
    registry = data_dir / REGISTRY
    registry.parent.mkdir(parents=True, exist_ok=True)
    others = min(rows, 20_000)
    synthetic.write_sqlite(
        registry, {"enterprises": rows, "social_insurance": others * 3}, seed=SEED
    )
    synthetic.write_csv(data_dir / VEHICLES, "vehicles", others, seed=SEED)
    with sqlite3.connect(registry) as conn:
        # A page of one district in key order (query50) walks this index instead of
        # sorting the whole district: the index a source would have for that query.
        conn.execute(f"CREATE INDEX {DISTRICT_KEY_INDEX} ON enterprises (district, credit_code)")
    conn.close()


async def setup_gateway(
    data_dir: Path,
    passphrase: str,
    *,
    sources: dict[str, dict[str, Any]] | None = None,
    **overrides: Any,
) -> tuple[str, str]:
    """The demo world (``gateway.cli.demo_data.register_demo_world``) with the scenario's
    rate limit out of the way; returns the merchant's client credentials.

    ``overrides`` are further settings (store URL, Redis, chain) for benchmarks that serve
    from something other than the default SQLite store; ``sources`` replaces datasets'
    sources (``{"enterprises": {"kind": "sql", "url": ..., "table": ...}}``).
    """
    settings = load_settings(
        None, environ={}, data_dir=data_dir, keystore_passphrase=passphrase, **overrides
    )
    await initialise(settings)
    gateway = await Gateway.open(settings)
    try:
        world = await register_demo_world(gateway, quotas=BENCH_QUOTAS, sources=sources)
        return world.client_id, world.client_secret
    finally:
        await gateway.close()


def store_url(data_dir: Path, passphrase: str, **overrides: Any) -> str:
    """The async SQLAlchemy URL of the gateway's store under these settings."""
    settings = load_settings(
        None, environ={}, data_dir=data_dir, keystore_passphrase=passphrase, **overrides
    )
    return settings.resolved_database_url


def write_codes(path: Path, rows: int) -> None:
    """A pool of credit codes that exist in the generated data."""
    rng = random.Random(SEED)
    indexes = rng.sample(range(rows), min(rows, CODES_IN_POOL))
    path.write_text(
        "".join(synthetic.enterprise_identity(SEED, i)[0] + "\n" for i in indexes),
        encoding="ascii",
    )


# --- processes -------------------------------------------------------------------------


def server_env(passphrase: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSGW_")}
    env["DSGW_KEYSTORE_PASSPHRASE"] = passphrase
    env["PYTHONPATH"] = str(ROOT)
    return env


def wait_healthy(base: str, proc: subprocess.Popen[bytes], name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with {proc.returncode} before becoming healthy")
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"{name} did not become healthy within {timeout} s")


def stop(proc: subprocess.Popen[bytes], name: str) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            print(f"{name} did not stop within 30 s; killing it", file=sys.stderr)
            proc.kill()
            proc.wait()


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read() or b"null")


def fetch_token(base: str, client_id: str, secret: str) -> str:
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    form = urllib.parse.urlencode(
        {"grant_type": "client_credentials", "scope": f"scenario:{DEMO_SCENARIO}"}
    ).encode()
    status, _headers, body = post(
        f"{base}/oauth/token",
        form,
        {"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"},
    )
    if status != 200:
        raise SystemExit(f"token request failed: {status} {body}")
    return str(body["access_token"])


# --- sanity ----------------------------------------------------------------------------


def _one_unit_apart(governed: Any, bare: Any) -> bool:
    try:
        g, b = Decimal(str(governed)), Decimal(str(bare))
    except ArithmeticError:
        return False
    exponent = g.as_tuple().exponent
    return isinstance(exponent, int) and abs(g - b) <= Decimal(1).scaleb(exponent)


def _number(value: Any) -> Any:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return value


def _same_groups(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    """Aggregate groups equal, sums compared as numbers (``1.50`` is ``1.5``)."""
    return [{k: _number(v) for k, v in g.items()} for g in a] == [
        {k: _number(v) for k, v in g.items()} for g in b
    ]


def _check_query(mode: str, answers: dict[str, Any]) -> dict[str, Any]:
    floor, bare, governed = answers["floor"], answers["bare"], answers["governed"]
    want = 1 if mode == "query1" else bench_modes.PAGE
    counts = {side: a["count"] for side, a in answers.items()}
    if set(counts.values()) != {want}:
        raise SystemExit(f"sanity check ({mode}): expected {want} rows each, got {counts}")
    if floor.keys() != governed.keys() or bare.keys() != governed.keys():
        raise SystemExit(f"sanity check ({mode}): different envelopes")
    if floor["rows"] != bare["rows"]:
        raise SystemExit(f"sanity check ({mode}): floor and bare rows differ")
    if mode == "query50":
        # Canary rows (docs/tracing.md) may stand in for a few real rows of a page.
        real = {r["credit_code"] for r in bare["rows"]}
        shared = sum(r["credit_code"] in real for r in governed["rows"])
        if shared < want - 5:
            raise SystemExit(f"sanity check ({mode}): only {shared} of {want} rows shared")
        return {"rows": want, "shared_with_governed": shared}
    g_row, b_row = governed["rows"][0], bare["rows"][0]
    if g_row.keys() != b_row.keys():
        raise SystemExit(f"sanity check: different fields {list(g_row)} / {list(b_row)}")
    differing = sorted(k for k in g_row if g_row[k] != b_row[k])
    # A leak-tracing mark (docs/tracing.md) moves a marked number by at most one unit in
    # its last decimal place; anything else must be masking.
    marked = [k for k in differing if _one_unit_apart(g_row[k], b_row[k])]
    differing = [k for k in differing if k not in marked]
    if differing != governed["masked_fields"]:
        raise SystemExit(f"sanity check: fields differ beyond masking: {differing}")
    return {"fields": list(g_row), "masked_fields": differing, "marked_fields": marked}


def sanity_check(
    mode: bench_modes.Mode, bases: dict[str, str], token: str, body: bytes
) -> dict[str, Any]:
    """Every side answers the mode's first body with 200 and the same answer (the gateway's
    masked, marked and audited as it must be); the governed answer names its record."""
    answers: dict[str, Any] = {}
    record = ""
    for side, base in bases.items():
        headers = {"Content-Type": "application/json"}
        if side == "governed":
            headers["Authorization"] = f"Bearer {token}"
        status, answer_headers, answer = post(base + mode.path, body, headers)
        if status != 200:
            raise SystemExit(f"sanity check ({mode.name}): {side} answered {status} {answer}")
        answers[side] = answer
        if side == "governed":
            record = answer_headers.get("Dsgw-Record-Id", "")
    if not record.startswith("calls/"):
        raise SystemExit(f"sanity check ({mode.name}): the governed answer names no record")
    if mode.name == "verify":
        if (
            not answers["floor"]
            == answers["bare"]
            == answers["governed"]
            == {
                "match": True,
                "mismatched": [],
            }
        ):
            raise SystemExit(f"sanity check (verify): answers differ: {answers}")
        found: dict[str, Any] = {"match": True}
    elif mode.endpoint == "query":
        found = _check_query(mode.name, answers)
    else:
        groups = {side: a["groups"] for side, a in answers.items()}
        if not groups["floor"] or not _same_groups(groups["floor"], groups["bare"]):
            raise SystemExit(f"sanity check (aggregate): floor and bare differ: {groups}")
        if not _same_groups(groups["governed"], groups["bare"]):
            raise SystemExit(f"sanity check (aggregate): governed differs: {groups}")
        found = {"groups": len(groups["bare"])}
    return found | {"record": record}


# --- verification of the log -------------------------------------------------------------


def compare_log(
    calls_total: int,
    by_kind: dict[str, int],
    allowed: set[int],
    max_seq: int | None,
    ok_responses: int,
    seqs: list[int],
) -> dict[str, Any]:
    """The ``calls`` stream read from a store against the 200 answers the clients counted:
    ``allowed`` holds the seqs of its ``data``/``allow`` records, ``seqs`` the answers'."""
    answered = set(seqs)
    return {
        "calls_records_total": calls_total,
        "calls_records_by_kind": by_kind,
        "data_allow_records": len(allowed),
        "ok_responses": ok_responses,
        "ok_responses_with_record_id": len(seqs),
        "distinct_record_ids": len(answered),
        "record_ids_missing_from_log": len(answered - allowed),
        "records_without_counted_answer": len(allowed - answered),
        "seq_contiguous": max_seq is not None and max_seq + 1 == calls_total,
        "every_answer_logged": (
            len(seqs) == ok_responses and len(answered) == len(seqs) and not (answered - allowed)
        ),
    }


def check_log(url: str, ok_responses: int, seqs: list[int], since: int = 0) -> dict[str, Any]:
    """The store at ``url`` against the answers; records before seq ``since`` (a pre-filled
    log) count in the totals but not as data/allow records of this run."""
    total, by_kind, allowed, max_seq = stores.read_calls(url, since)
    return compare_log(total, by_kind, allowed, max_seq, ok_responses, seqs)


# --- reporting -----------------------------------------------------------------------------


def machine_facts() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip()

    return {
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_modified_files": len(
            git("status", "--porcelain", "--untracked-files=no").splitlines()
        ),
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": list(os.getloadavg()),
        "wrk": shutil.which("wrk"),
    }


def per_call_us(run: dict[str, Any]) -> float | None:
    return run["server_cpu_s"] / run["ok"] * 1e6 if run["ok"] else None


def summarise(runs: list[dict[str, Any]], mode: str, side: str) -> dict[str, Any]:
    mine = [r for r in runs if r["side"] == side and r["mode"] == mode]
    cpu = [c for c in map(per_call_us, mine) if c is not None]
    p50 = statistics.median(r["latency_ms"]["p50"] for r in mine)
    p99 = statistics.median(r["latency_ms"]["p99"] for r in mine)
    return {
        "median_rps": statistics.median(r["rps"] for r in mine),
        "rps": [round(r["rps"], 1) for r in mine],
        "median_p50_ms": p50,
        "median_p95_ms": statistics.median(r["latency_ms"]["p95"] for r in mine),
        "median_p99_ms": p99,
        "p99_over_p50": p99 / p50 if p50 else None,
        "median_server_cpu_us_per_call": statistics.median(cpu) if cpu else None,
        "errors": sum(sum(r["errors"].values()) for r in mine),
    }


def summarise_mode(runs: list[dict[str, Any]], mode: str, sides: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {side: summarise(runs, mode, side) for side in sides}

    def ratio(a: str, b: str) -> float | None:
        if a not in out or b not in out or not out[b]["median_rps"]:
            return None
        return float(out[a]["median_rps"] / out[b]["median_rps"])

    out["ratios"] = {
        "governed/floor": ratio("governed", "floor"),
        "governed/bare": ratio("governed", "bare"),
        "bare/floor": ratio("bare", "floor"),
    }
    return out


def others(run: dict[str, Any]) -> float:
    """CPU (in cores) used by everything but this run's server and client."""
    own = float(run["server_cpu_s"]) + float(run["client_cpu_s"])
    return max(0.0, float(run["machine_busy_cpu_s"]) - own) / float(run["seconds"])


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(runs: list[dict[str, Any]], summary: dict[str, Any], modes: list[str]) -> None:
    header = (
        f"{'round':>5} {'mode':<9} {'side':<9} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'errors':>6} {'srv CPU':>7} {'µs/call':>7} {'cli CPU':>7} {'others':>6}"
    )
    print()
    print(header)
    print("-" * len(header))
    for r in runs:
        lat = r["latency_ms"]
        print(
            f"{r['round']:>5} {r['mode']:<9} {r['side']:<9} {r['rps']:>8.1f} {lat['p50']:>7.2f} "
            f"{lat['p99']:>7.2f} {sum(r['errors'].values()):>6} "
            f"{r['server_cpu_s'] / r['seconds']:>7.0%} {_fmt(per_call_us(r), '.0f'):>7} "
            f"{r['client_cpu_s'] / r['seconds']:>7.0%} {others(r):>6.2f}"
        )
    print(
        "srv CPU / cli CPU: server (process tree) / load generator CPU in the window, as a "
        "share of one core;\nµs/call: server CPU per 200 answer; others: cores used by every "
        "other process on the machine (noise)"
    )
    print()
    header = (
        f"{'mode':<9} {'floor':>8} {'bare':>8} {'governed':>8} {'gov/flr':>7} {'gov/bare':>8} "
        f"{'bare/flr':>8} {'µs/call f/b/g':>15} {'p99/p50 f/b/g':>15}"
    )
    print("medians (req/s)")
    print(header)
    print("-" * len(header))
    for mode in modes:
        s = summary[mode]
        sides = [s.get(side) for side in SIDES]
        rps = [_fmt(x["median_rps"] if x else None, ".1f") for x in sides]
        cpu = "/".join(
            _fmt(x["median_server_cpu_us_per_call"] if x else None, ".0f") for x in sides
        )
        tail = "/".join(_fmt(x["p99_over_p50"] if x else None, ".1f") for x in sides)
        ratios = s["ratios"]
        print(
            f"{mode:<9} {rps[0]:>8} {rps[1]:>8} {rps[2]:>8} "
            f"{_fmt(ratios['governed/floor'], '.3f'):>7} {_fmt(ratios['governed/bare'], '.3f'):>8} "
            f"{_fmt(ratios['bare/floor'], '.3f'):>8} {cpu:>15} {tail:>15}"
        )
    print()
    for mode in modes:
        print(f"{mode}: " + "; ".join(goals(mode, summary[mode])))
    log = summary["log"]
    print(
        f"\ncall log: {log['data_allow_records']} data/allow records committed in this run, "
        f"{log['ok_responses']} governed 200 answers counted "
        f"({log['distinct_record_ids']} distinct record ids, "
        f"{log['record_ids_missing_from_log']} missing from the log); seq contiguous "
        f"{log['seq_contiguous']}; every answer logged: {log['every_answer_logged']}"
    )


def goals(mode: str, s: dict[str, Any]) -> list[str]:
    """The issue's goals for one mode, each with its figure and met / NOT met."""
    out: list[str] = []

    def check(name: str, value: float | None, ok: bool) -> None:
        if value is not None:
            out.append(f"{name} {value:.2f} {'met' if ok else 'NOT met'}")

    ratios = s["ratios"]
    if mode in GOAL_VS_FLOOR and ratios["governed/floor"] is not None:
        goal = GOAL_VS_FLOOR[mode]
        check(
            f"governed/floor >= {goal}", ratios["governed/floor"], ratios["governed/floor"] >= goal
        )
    if ratios["governed/bare"] is not None:
        check(
            f"governed/bare >= {GOAL_VS_BARE}",
            ratios["governed/bare"],
            ratios["governed/bare"] >= GOAL_VS_BARE,
        )
    gov = s.get("governed")
    if gov:
        cpu = gov["median_server_cpu_us_per_call"]
        check(f"governed µs/call <= {GOAL_CPU_US:.0f}", cpu, cpu is not None and cpu <= GOAL_CPU_US)
        tail = gov["p99_over_p50"]
        check(f"governed p99/p50 <= {GOAL_TAIL}", tail, tail is not None and tail <= GOAL_TAIL)
    return out


# --- main ------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--modes", default=",".join(bench_modes.MODES), help="comma-separated modes to measure"
    )
    parser.add_argument("--sides", default=",".join(SIDES), help="comma-separated sides to measure")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per run")
    parser.add_argument("--concurrency", type=int, default=32, help="open connections")
    parser.add_argument("--rows", type=int, default=20_000, help="synthetic enterprises")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every mode and side")
    parser.add_argument(
        "--load-generator", choices=("wrk", "aiohttp"), default="wrk",
        help="wrk (bench/setup.sh installs it) or the aiohttp closed loop of bench/load.py",
    )  # fmt: skip
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--pg-url", default=PG_ADMIN, help="PostgreSQL admin DSN; fresh databases go beside it"
    )
    parser.add_argument(
        "--log-records", type=int, default=0, help="pre-fill the call log with N records"
    )
    parser.add_argument("--workers", type=int, default=1, help="dsgw serve --workers W")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="for W > 1")
    parser.add_argument("--out", type=Path, default=None, help="write JSON results here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    args = parser.parse_args()
    args.sides = [s for s in SIDES if s in args.sides.split(",")]
    if not args.sides:
        raise SystemExit(f"--sides: choose from {', '.join(SIDES)}")
    return args


def start(command: list[str], env: dict[str, str], out: Path) -> subprocess.Popen[bytes]:
    with out.open("wb") as sink:
        return subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)


def delete_redis_keys(redis_url: str, deployment: str) -> int:
    from redis import Redis

    client = Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"dsgw:{deployment}:*", count=1000))
        return int(client.delete(*keys)) if keys else 0
    finally:
        client.close()


def main() -> None:
    args = parse_args()
    modes = bench_modes.parse_modes(args.modes)
    wrk_load.check_generator(args.load_generator)
    load = wrk_load.Load(args.load_generator, args.seconds, args.warmup, args.concurrency)
    facts = machine_facts()
    data_dir = Path(tempfile.mkdtemp(prefix="dsgw-bench-"))
    passphrase = secrets.token_urlsafe(24)
    deployment = f"bench-qp-{secrets.token_hex(4)}"
    pg = stores.PgDatabases(args.pg_url) if args.store == "postgresql" else None
    procs: list[tuple[subprocess.Popen[bytes], str]] = []
    timings: dict[str, Any] = {}
    try:
        t0 = time.monotonic()
        print(f"data dir {data_dir}; generating {args.rows} enterprises ...", flush=True)
        generate_sources(data_dir, args.rows)
        timings["generate_s"] = round(time.monotonic() - t0, 1)
        source = data_dir / REGISTRY
        overrides: dict[str, Any] = {}
        sources = None
        floor_from, bare_from = ["--db", str(source)], ["--db", str(source)]
        if pg is not None:
            t1 = time.monotonic()
            source_dsn = pg.create("source")
            stores.copy_enterprises(source, source_dsn)
            timings["copy_to_postgresql_s"] = round(time.monotonic() - t1, 1)
            sa_url = "postgresql+psycopg://" + source_dsn.split("://", 1)[1]
            sources = {"enterprises": {"kind": "sql", "url": sa_url, "table": "enterprises"}}
            overrides["database_url"] = pg.create("store")
            overrides["source_hosts"] = [urllib.parse.urlsplit(source_dsn).netloc]
            floor_from, bare_from = ["--pg", source_dsn], ["--url", sa_url]
            plan = stores.check_plan_pg(source_dsn)
        else:
            plan = stores.check_plan_sqlite(source)
        print(f"point lookup plan: {plan}", flush=True)
        if args.workers > 1:
            overrides |= {"redis_url": args.redis_url, "deployment": deployment}
        client_id, secret = asyncio.run(
            setup_gateway(data_dir, passphrase, sources=sources, **overrides)
        )
        store = store_url(data_dir, passphrase, **overrides)
        prefill = None
        if args.log_records:
            print(f"pre-filling the call log with {args.log_records:,} records ...", flush=True)
            prefill = stores.prefill_log(store, args.log_records)
            print(f"pre-fill done: {prefill}", flush=True)
        bodies: dict[str, Path] = {}
        for mode in modes:
            bodies[mode.name] = data_dir / f"{mode.name}.jsonl"
            bench_modes.write_bodies(bodies[mode.name], mode.name, source)
        timings["setup_s"] = round(time.monotonic() - t0, 1)
        print(f"setup done in {timings['setup_s']} s", flush=True)

        env = server_env(passphrase)
        config: list[str] = []
        if overrides:
            toml = data_dir / "bench.toml"
            toml.write_text(
                "[dsgw]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in overrides.items())
            )
            config = ["--config", str(toml)]
        ports = {side: free_port() for side in SIDES}
        commands = {
            "governed": [
                str(BIN / "dsgw"), *config, "--data-dir", str(data_dir),
                "serve", "--port", str(ports["governed"]),
                *(["--workers", str(args.workers)] if args.workers > 1 else []),
            ],
            "bare": [
                sys.executable, str(BENCH / "bare_server.py"), *bare_from,
                "--port", str(ports["bare"]),
            ],
            "floor": [
                sys.executable, str(BENCH / "floor_server.py"), *floor_from,
                "--port", str(ports["floor"]),
            ],
        }  # fmt: skip
        servers = {}
        for side in SIDES:
            servers[side] = start(commands[side], env, data_dir / f"{side}.out")
            procs.append((servers[side], side))
        bases = {side: f"http://127.0.0.1:{ports[side]}" for side in SIDES}
        for side in SIDES:
            wait_healthy(bases[side], servers[side], side, timeout=120)

        token = fetch_token(bases["governed"], client_id, secret)
        sanity: dict[str, Any] = {"plan": plan}
        governed_ok, seqs = 0, []
        for mode in modes:
            first = bodies[mode.name].read_text(encoding="utf-8").splitlines()[0].encode()
            sanity[mode.name] = sanity_check(mode, bases, token, first)
            governed_ok += 1
            seqs.append(int(sanity[mode.name]["record"].split("/", 1)[1]))
            print(f"sanity check {mode.name}: {sanity[mode.name]}", flush=True)

        runs: list[dict[str, Any]] = []
        for rnd in range(1, args.rounds + 1):
            turn = (rnd - 1) % len(SIDES)
            order = [s for s in (*SIDES[turn:], *SIDES[:turn]) if s in args.sides]
            for mode in modes:
                for side in order:
                    token = (
                        fetch_token(bases["governed"], client_id, secret)
                        if (side == "governed")
                        else ""
                    )
                    result = wrk_load.run_load(
                        bases[side], mode.path, bodies[mode.name], load, servers[side].pid, token
                    )
                    record_seqs = result.pop("record_seqs")
                    if side == "governed":
                        governed_ok += result["total_ok"]
                        seqs += record_seqs
                    result |= {"round": rnd, "mode": mode.name, "side": side}
                    result["others_cores"] = round(others(result), 2)
                    runs.append(result)
                    print(
                        f"round {rnd} {mode.name:<9} {side:<8}: {result['rps']:8.1f} req/s, "
                        f"p50 {result['latency_ms']['p50']:.2f} ms, "
                        f"p99 {result['latency_ms']['p99']:.2f} ms, "
                        f"errors {sum(result['errors'].values())}",
                        flush=True,
                    )

        stop(servers["governed"], "gateway")  # commits anything queued, closes the store
        log_check = check_log(store, governed_ok, seqs, since=args.log_records)
        summary: dict[str, Any] = {
            mode.name: summarise_mode(runs, mode.name, args.sides) for mode in modes
        }
        summary["log"] = log_check
        print_table(runs, summary, [m.name for m in modes])
        results = {
            "benchmark": "query_path",
            "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "parameters": {
                "modes": [m.name for m in modes],
                "sides": args.sides,
                "seconds": args.seconds,
                "warmup": args.warmup,
                "concurrency": args.concurrency,
                "rows": args.rows,
                "rounds": args.rounds,
                "load_generator": args.load_generator,
                "store": args.store,
                "log_records": args.log_records,
                "workers": args.workers,
            },
            "machine": facts,
            "timings": timings,
            "prefill": prefill,
            "sanity": sanity,
            "runs": runs,
            "summary": summary,
            "elapsed_s": round(time.monotonic() - t0, 1),
        }
        if args.out:
            args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
            print(f"\nresults written to {args.out}")
        if not log_check["every_answer_logged"]:
            raise SystemExit("FAILED: not every 200 answer has a committed call record")
    finally:
        for proc, name in procs:
            stop(proc, name)
        if pg is not None:
            pg.drop_all()
        if args.workers > 1:
            delete_redis_keys(args.redis_url, deployment)
        if args.keep:
            print(f"data dir kept: {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
