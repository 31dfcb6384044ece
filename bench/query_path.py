"""Load benchmark of the query path: the governed gateway against a bare aiohttp handler.

Both servers answer the same question (``enterprises`` rows for one credit code, the
``enterprise-credit`` scenario's fields, limit 50) from the same SQLite source through the
same ``SqlConnector``. The gateway additionally verifies a bearer token, checks the
scenario, agreement and quotas, masks sensitive fields and commits a hash-linked call
record (group commit, ``synchronous=FULL``) before each answer leaves; the bare server
does none of that.

Each side runs as its own process, and the load generator (``bench/load.py``) as a third.
Rounds alternate bare and governed (the order flips every round) and the medians are
compared. At the end the gateway is stopped and its store is checked: every 200 answer
must correspond to one committed ``data``/``allow`` record in the ``calls`` stream.

    .venv/bin/python bench/query_path.py [--seconds 10] [--concurrency 32] [--rows 20000]
                                         [--rounds 3] [--out results.json]
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
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from connectors import synthetic  # noqa: E402
from gateway.cli.demo_data import (  # noqa: E402
    DEMO_SCENARIO,
    REGISTRY,
    VEHICLES,
    register_demo_world,
)
from gateway.runtime import Gateway, initialise  # noqa: E402
from gateway.settings import load_settings  # noqa: E402

SEED = 7
DATASET = "enterprises"
GOVERNED_PATH = f"/v1/scenarios/{DEMO_SCENARIO}/datasets/{DATASET}/query"
BIN = Path(sys.executable).parent
CODES_IN_POOL = 5000
BENCH_QUOTAS = {"rate_per_minute": 10_000_000}


# --- setup -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def generate_sources(data_dir: Path, rows: int) -> None:
    registry = data_dir / REGISTRY
    registry.parent.mkdir(parents=True, exist_ok=True)
    synthetic.write_sqlite(registry, {"enterprises": rows, "social_insurance": rows * 3}, seed=SEED)
    synthetic.write_csv(data_dir / VEHICLES, "vehicles", rows, seed=SEED)


async def setup_gateway(data_dir: Path, passphrase: str, **overrides: Any) -> tuple[str, str]:
    """The demo world (``gateway.cli.demo_data.register_demo_world``) with the scenario's
    rate limit out of the way; returns the merchant's client credentials.

    ``overrides`` are further settings (store URL, Redis, chain) for benchmarks that serve
    from something other than the default SQLite store.
    """
    settings = load_settings(
        None, environ={}, data_dir=data_dir, keystore_passphrase=passphrase, **overrides
    )
    await initialise(settings)
    gateway = await Gateway.open(settings)
    try:
        world = await register_demo_world(gateway, quotas=BENCH_QUOTAS)
        return world.client_id, world.client_secret
    finally:
        await gateway.close()


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


def _one_unit_apart(governed: Any, bare: Any) -> bool:
    try:
        g, b = Decimal(str(governed)), Decimal(str(bare))
    except ArithmeticError:
        return False
    exponent = g.as_tuple().exponent
    return isinstance(exponent, int) and abs(g - b) <= Decimal(1).scaleb(exponent)


def sanity_check(gov_url: str, bare_url: str, token: str, code: str) -> dict[str, Any]:
    """Both servers answer the same question with the same rows (the gateway masked)."""
    body = json.dumps({"filters": {"credit_code": code}}).encode()
    json_headers = {"Content-Type": "application/json"}
    g_status, g_headers, governed = post(
        gov_url, body, json_headers | {"Authorization": f"Bearer {token}"}
    )
    b_status, _, bare = post(bare_url, body, json_headers)
    if g_status != 200 or b_status != 200:
        raise SystemExit(f"sanity check failed: governed {g_status} {governed}, bare {b_status}")
    if governed["count"] != 1 or bare["count"] != 1:
        raise SystemExit(f"sanity check: expected one row each, got {governed} / {bare}")
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
    if "Dsgw-Record-Id" not in g_headers:
        raise SystemExit("sanity check: governed answer carries no Dsgw-Record-Id")
    return {
        "fields": list(g_row),
        "masked_fields": differing,
        "record": g_headers["Dsgw-Record-Id"],
    }


def run_load(
    url: str, codes: Path, args: argparse.Namespace, server_pid: int, token: str = ""
) -> dict[str, Any]:
    command = [
        sys.executable,
        str(ROOT / "bench" / "load.py"),
        "--url", url,
        "--codes", str(codes),
        "--seconds", str(args.seconds),
        "--warmup", str(args.warmup),
        "--concurrency", str(args.concurrency),
        "--server-pid", str(server_pid),
    ]  # fmt: skip
    if token:
        command += ["--token", token]
    done = subprocess.run(command, capture_output=True, check=False, text=True)
    if done.returncode != 0:
        raise SystemExit(f"load generator failed ({done.returncode}):\n{done.stderr}")
    if done.stderr.strip():
        print(done.stderr.strip(), file=sys.stderr)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# --- verification of the log -------------------------------------------------------------


def check_log(store: Path, ok_responses: int, seqs: list[int]) -> dict[str, Any]:
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        calls_total = conn.execute(
            "SELECT count(*) FROM log_entries WHERE stream = 'calls'"
        ).fetchone()[0]
        by_kind = {
            f"{kind}/{decision}": n
            for kind, decision, n in conn.execute(
                "SELECT kind, decision, count(*) FROM log_entries WHERE stream = 'calls' "
                "GROUP BY kind, decision"
            )
        }
        allowed = {
            row[0]
            for row in conn.execute(
                "SELECT seq FROM log_entries WHERE stream = 'calls' AND kind = 'data' "
                "AND decision = 'allow'"
            )
        }
        max_seq = conn.execute(
            "SELECT max(seq) FROM log_entries WHERE stream = 'calls'"
        ).fetchone()[0]
    finally:
        conn.close()
    return compare_log(calls_total, by_kind, allowed, max_seq, ok_responses, seqs)


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
    }


def summarise(runs: list[dict[str, Any]], side: str) -> dict[str, Any]:
    mine = [r for r in runs if r["side"] == side]
    per_call = [r["server_cpu_s"] / r["ok"] * 1e6 for r in mine if r["ok"]]
    return {
        "median_rps": statistics.median(r["rps"] for r in mine),
        "rps": [round(r["rps"], 1) for r in mine],
        "median_p50_ms": statistics.median(r["latency_ms"]["p50"] for r in mine),
        "median_p95_ms": statistics.median(r["latency_ms"]["p95"] for r in mine),
        "median_p99_ms": statistics.median(r["latency_ms"]["p99"] for r in mine),
        "median_server_cpu_us_per_call": statistics.median(per_call) if per_call else None,
        "errors": sum(sum(r["errors"].values()) for r in mine),
    }


def others(run: dict[str, Any]) -> float:
    """CPU (in cores) used by everything but this run's server and client."""
    own = float(run["server_cpu_s"]) + float(run["client_cpu_s"])
    return max(0.0, float(run["machine_busy_cpu_s"]) - own) / float(run["seconds"])


def print_table(runs: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    header = (
        f"{'round':>5} {'side':<9} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'errors':>6} {'srv CPU':>8} {'µs/call':>8} {'cli CPU':>8} {'others':>7}"
    )
    print()
    print(header)
    print("-" * len(header))
    for r in runs:
        lat = r["latency_ms"]
        per_call = r["server_cpu_s"] / r["ok"] * 1e6 if r["ok"] else float("nan")
        print(
            f"{r['round']:>5} {r['side']:<9} {r['rps']:>8.1f} {lat['p50']:>8.2f} "
            f"{lat['p95']:>8.2f} {lat['p99']:>8.2f} {sum(r['errors'].values()):>6} "
            f"{r['server_cpu_s'] / r['seconds']:>7.0%} {per_call:>8.0f} "
            f"{r['client_cpu_s'] / r['seconds']:>7.0%} {others(r):>6.0%}"
        )
    print(
        "srv CPU / cli CPU: server / load generator CPU in the window, as a share of one core; "
        "µs/call: server CPU per 200 answer;\nothers: CPU used by every other process on "
        "the machine during the window, in cores (noise indicator)"
    )
    print()
    bare, gov = summary["bare"], summary["governed"]
    for name, s in (("bare", bare), ("governed", gov)):
        print(
            f"{name:<9} median {s['median_rps']:8.1f} req/s   p50 {s['median_p50_ms']:.2f} ms   "
            f"p95 {s['median_p95_ms']:.2f} ms   p99 {s['median_p99_ms']:.2f} ms   "
            f"server CPU {s['median_server_cpu_us_per_call']:.0f} µs/call"
        )
    print(
        f"\nthroughput ratio governed/bare (medians): {summary['ratio']:.3f}   "
        f"(goal >= 0.70: {'met' if summary['ratio'] >= 0.70 else 'NOT met'})"
    )
    print(
        f"server CPU per call, bare/governed: {summary['cpu_ratio']:.3f}   "
        "(the ratio if the server had a core of its own)"
    )
    log = summary["log"]
    print(
        f"\ncall log: {log['data_allow_records']} data/allow records committed, "
        f"{log['ok_responses']} 200 answers counted by the clients "
        f"({log['distinct_record_ids']} distinct record ids, "
        f"{log['record_ids_missing_from_log']} missing from the log); "
        f"every answer logged: {log['every_answer_logged']}"
    )


# --- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per run")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent client workers")
    parser.add_argument("--rows", type=int, default=20_000, help="synthetic enterprises")
    parser.add_argument("--rounds", type=int, default=3, help="bare+governed pairs")
    parser.add_argument("--out", type=Path, default=None, help="write JSON results here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    args = parser.parse_args()

    facts = machine_facts()
    data_dir = Path(tempfile.mkdtemp(prefix="dsgw-bench-"))
    passphrase = secrets.token_urlsafe(24)
    procs: list[tuple[subprocess.Popen[bytes], str]] = []
    try:
        t0 = time.monotonic()
        print(f"data dir {data_dir}; generating {args.rows} enterprises ...", flush=True)
        generate_sources(data_dir, args.rows)
        client_id, secret = asyncio.run(setup_gateway(data_dir, passphrase))
        codes = data_dir / "codes.txt"
        write_codes(codes, args.rows)
        print(f"setup done in {time.monotonic() - t0:.1f} s", flush=True)

        gov_port, bare_port = free_port(), free_port()
        env = server_env(passphrase)
        gov_log = (data_dir / "gateway.out").open("wb")
        bare_log = (data_dir / "bare.out").open("wb")
        governed = subprocess.Popen(
            [str(BIN / "dsgw"), "--data-dir", str(data_dir), "serve", "--port", str(gov_port)],
            env=env, stdout=gov_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        procs.append((governed, "gateway"))
        bare = subprocess.Popen(
            [
                sys.executable, str(ROOT / "bench" / "bare_server.py"),
                "--db", str(data_dir / REGISTRY), "--port", str(bare_port),
            ],
            env=env, stdout=bare_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        procs.append((bare, "bare"))
        gov_base, bare_base = f"http://127.0.0.1:{gov_port}", f"http://127.0.0.1:{bare_port}"
        wait_healthy(gov_base, governed, "gateway")
        wait_healthy(bare_base, bare, "bare server")
        gov_url, bare_url = gov_base + GOVERNED_PATH, bare_base + "/query"

        token = fetch_token(gov_base, client_id, secret)
        first_code = codes.read_text().split()[0]
        sanity = sanity_check(gov_url, bare_url, token, first_code)
        print(f"sanity check passed: same rows, masked {sanity['masked_fields']}", flush=True)

        runs: list[dict[str, Any]] = []
        governed_ok = 1  # the sanity-check call
        seqs = [int(sanity["record"].split("/", 1)[1])]
        for rnd in range(1, args.rounds + 1):
            order = ("bare", "governed") if rnd % 2 else ("governed", "bare")
            for side in order:
                if side == "bare":
                    result = run_load(bare_url, codes, args, bare.pid)
                else:
                    token = fetch_token(gov_base, client_id, secret)  # fresh 15-minute token
                    result = run_load(gov_url, codes, args, governed.pid, token)
                    governed_ok += result["total_ok"]
                    seqs += result.pop("record_seqs")
                result |= {"round": rnd, "side": side, "others_cores": round(others(result), 2)}
                runs.append(result)
                print(
                    f"round {rnd} {side:<8}: {result['rps']:8.1f} req/s, "
                    f"p50 {result['latency_ms']['p50']:.2f} ms, "
                    f"errors {sum(result['errors'].values())}",
                    flush=True,
                )

        stop(governed, "gateway")  # commits anything queued, closes the store
        stop(bare, "bare server")
        log_check = check_log(data_dir / "dsgw.sqlite3", governed_ok, seqs)

        summary: dict[str, Any] = {
            "bare": summarise(runs, "bare"),
            "governed": summarise(runs, "governed"),
            "log": log_check,
        }
        summary["ratio"] = summary["governed"]["median_rps"] / summary["bare"]["median_rps"]
        summary["cpu_ratio"] = (
            summary["bare"]["median_server_cpu_us_per_call"]
            / summary["governed"]["median_server_cpu_us_per_call"]
        )
        print_table(runs, summary)
        results = {
            "benchmark": "query_path",
            "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "parameters": {
                "seconds": args.seconds,
                "warmup": args.warmup,
                "concurrency": args.concurrency,
                "rows": args.rows,
                "rounds": args.rounds,
            },
            "machine": facts,
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
        if args.keep:
            print(f"data dir kept: {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
