"""Cost of a differentially private aggregate against the exact one, in the same run.

One process: a real gateway (``initialise`` + ``Gateway.open`` on a fresh temporary data
directory, SQLite store, no chain) served over loopback HTTP by aiohttp's test server, and a
client in the same event loop sending one call at a time. Two scenarios grant the same
dataset (``social-insurance``) and the same grouping: ``bench-exact`` the exact
``aggregate`` mode, ``bench-dp`` ``aggregate-dp`` with a budget large enough for every call
of the run. Both ask ``group_by`` the chosen fields with ``count``, ``sum amount`` and
``avg amount``. A third side asks the exact aggregate of a second gateway on the same store with the
overlap audit switched off (``aggregate_overlap_min = 0``), so the audit's own cost shows.
Rounds run the three sides in turn (the order flips every round); the report is the median
per side and the ratios of process CPU and wall time per call.

What the DP call adds: a subject-level read (one row per group and person instead of one
per group), truncation to L groups per person, the OpenDP threshold and Laplace
measurements, and the budget spend (one committed transaction) before the answer.

    .venv/bin/python bench/dp_aggregate.py [--rows 60000] [--calls 100] [--rounds 3]
                                           [--group-by district] [--out results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiohttp import encode_basic_auth  # noqa: E402
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402
from sqlalchemy import delete  # noqa: E402

from connectors import synthetic  # noqa: E402
from gateway.api.app import create_app  # noqa: E402
from gateway.cli.demo_data import (  # noqa: E402
    DEMO_MERCHANT,
    REGISTRY,
    VEHICLES,
    demo_scenario,
    register_demo_world,
)
from gateway.db.schema import PrivacySpendRow  # noqa: E402
from gateway.governance.models import ScenarioStatus  # noqa: E402
from gateway.governance.service import LOCAL_ADMIN  # noqa: E402
from gateway.runtime import Gateway, initialise  # noqa: E402
from gateway.settings import Settings, load_settings  # noqa: E402

UNAUDITED = "aggregate (no audit)"


def _scenario(
    now: dt.datetime, scenario_id: str, mode: str, group_by: list[str], groups_per_subject: int
) -> dict[str, Any]:
    grant: dict[str, Any] = {
        "dataset": "social-insurance",
        "modes": [mode],
        "filter_fields": ["month", "insurance_type"],
        "group_by": group_by,
        "measure_fields": ["amount"],
    }
    if mode == "aggregate-dp":
        # 40 calls of ε 0.5 a day; the benchmark clears the spend before each DP run
        # (_clear_spend), so every measured call is answered, not refused.
        grant["privacy"] = {
            "epsilon": 20,
            "delta": 1e-4,
            "period": "day",
            "call_epsilon": 0.5,
            "max_groups_per_subject": groups_per_subject,
        }
    return demo_scenario(now) | {
        "id": scenario_id,
        "quotas": {"rate_per_minute": 1_000_000},
        "grants": [grant],
    }


async def _setup(
    base: Path, rows: int, group_by: list[str], groups_per_subject: int
) -> tuple[Gateway, Settings, dict[str, str]]:
    data_dir = base / "data"
    (data_dir / "sources").mkdir(parents=True)
    synthetic.write_sqlite(
        data_dir / REGISTRY, {"enterprises": max(1, rows // 3), "social_insurance": rows}, seed=7
    )
    synthetic.write_csv(data_dir / VEHICLES, "vehicles", 100, seed=7)
    settings = load_settings(
        None,
        environ={},
        data_dir=data_dir,
        keystore_passphrase=secrets.token_hex(16),
        secret_hash_time_cost=1,
        secret_hash_memory_kib=8192,
        port=0,
        chain="none",
    )
    await initialise(settings)
    gateway = await Gateway.open(settings)
    gov = gateway.governance
    now = gateway.clock.now()
    # The demo world (catalog, merchant, its client), then this benchmark's own scenarios.
    world = await register_demo_world(gateway)
    for scenario_id, mode in (("bench-exact", "aggregate"), ("bench-dp", "aggregate-dp")):
        await gov.scenarios.create_scenario(
            LOCAL_ADMIN, _scenario(now, scenario_id, mode, group_by, groups_per_subject)
        )
        await gov.scenarios.set_scenario_status(LOCAL_ADMIN, scenario_id, ScenarioStatus.PUBLISHED)
        await gov.agreements.grant_agreement(
            LOCAL_ADMIN,
            merchant_id=DEMO_MERCHANT,
            scenario_id=scenario_id,
            starts_at=now - dt.timedelta(hours=1),
            ends_at=now + dt.timedelta(days=365),
            shares=("40", "35", "25"),
        )
    return gateway, settings, {"client_id": world.client_id, "secret": world.client_secret}


async def _token(client: TestClient, creds: dict[str, str], scenario: str) -> str:  # type: ignore[type-arg]
    resp = await client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": f"scenario:{scenario}"},
        headers={"Authorization": encode_basic_auth(creds["client_id"], creds["secret"])},
    )
    body = await resp.json()
    assert resp.status == 200, body
    return str(body["access_token"])


async def _call(
    client: TestClient,  # type: ignore[type-arg]
    token: str,
    scenario: str,
    mode: str,
    body: dict[str, Any],
) -> dict[str, Any]:
    resp = await client.post(
        f"/v1/scenarios/{scenario}/datasets/social-insurance/{mode}",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
    )
    answer = await resp.json()
    if resp.status != 200:
        raise SystemExit(f"{mode}: HTTP {resp.status}: {answer}")
    return dict(answer)


async def _run(
    client: TestClient,  # type: ignore[type-arg]
    token: str,
    scenario: str,
    mode: str,
    body: dict[str, Any],
    calls: int,
) -> dict[str, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        await _call(client, token, scenario, mode, body)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"wall_us_per_call": wall / calls * 1e6, "cpu_us_per_call": cpu / calls * 1e6}


async def _clear_spend(gateway: Gateway) -> None:
    """Forget the DP spend, so a run of more calls than the day's budget allows is answered:
    a benchmark's shortcut on its own scratch store, never something the gateway offers."""
    async with gateway.engine.begin() as conn:
        await conn.execute(delete(PrivacySpendRow))


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="dsgw-bench-dp-"))
    group_by = args.group_by.split(",")
    body = {
        "group_by": group_by,
        "measures": [
            {"fn": "count"},
            {"fn": "sum", "field": "amount"},
            {"fn": "avg", "field": "amount"},
        ],
    }
    try:
        gateway, settings, creds = await _setup(base, args.rows, group_by, args.groups_per_subject)
        # The third side: the same exact aggregate without the overlap audit (a second
        # gateway on the same store with the audit switched off), so the audit's own cost
        # shows in the same run.
        unaudited = await Gateway.open(settings.replace(aggregate_overlap_min=0))
        server = TestServer(create_app(gateway), host="127.0.0.1")
        client = TestClient(server)
        await client.start_server()
        plain_client = TestClient(TestServer(create_app(unaudited), host="127.0.0.1"))
        await plain_client.start_server()
        try:
            tokens = {
                UNAUDITED: await _token(plain_client, creds, "bench-exact"),
                "aggregate": await _token(client, creds, "bench-exact"),
                "aggregate-dp": await _token(client, creds, "bench-dp"),
            }
            scenarios = {UNAUDITED: "bench-exact", "aggregate": "bench-exact"}
            scenarios["aggregate-dp"] = "bench-dp"
            clients = {UNAUDITED: plain_client, "aggregate": client, "aggregate-dp": client}
            # Sanity: the DP answer releases only groups the exact answer has, none exactly.
            exact = await _call(client, tokens["aggregate"], "bench-exact", "aggregate", body)
            noisy = await _call(client, tokens["aggregate-dp"], "bench-dp", "aggregate-dp", body)
            exact_groups = {tuple(g[f] for f in group_by): g for g in exact["groups"]}
            for group in noisy["groups"]:
                key = tuple(group[f] for f in group_by)
                assert key in exact_groups, key
                assert group["sum_amount"] != float(exact_groups[key]["sum_amount"]), key
            print(
                f"groups: exact {len(exact['groups'])}, released by DP {len(noisy['groups'])}; "
                f"DP noise scale: count {noisy['noise']['count']['scale']:.0f}, "
                f"sum_amount {noisy['noise']['sum_amount']['scale']:.0f} "
                f"(threshold {noisy['noise']['count']['threshold']})"
            )
            runs: list[dict[str, Any]] = []
            for round_no in range(args.rounds):
                order = [UNAUDITED, "aggregate", "aggregate-dp"]
                if round_no % 2:
                    order.reverse()
                for side in order:
                    if side == "aggregate-dp":
                        await _clear_spend(gateway)
                    mode = "aggregate" if side == UNAUDITED else side
                    result = await _run(
                        clients[side], tokens[side], scenarios[side], mode, body, args.calls
                    )
                    runs.append({"round": round_no, "mode": side, **result})
                    print(
                        f"round {round_no} {side:>20}: {result['wall_us_per_call']:>10,.0f} µs "
                        f"wall/call, {result['cpu_us_per_call']:>10,.0f} µs CPU/call"
                    )
        finally:
            await client.close()
            await plain_client.close()
            await unaudited.close()
            await gateway.close()
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)

    def median(mode: str, key: str) -> float:
        return float(statistics.median(r[key] for r in runs if r["mode"] == mode))

    summary: dict[str, Any] = {
        mode: {
            "wall_us_per_call": median(mode, "wall_us_per_call"),
            "cpu_us_per_call": median(mode, "cpu_us_per_call"),
        }
        for mode in (UNAUDITED, "aggregate", "aggregate-dp")
    }
    summary["ratio_wall"] = (
        summary["aggregate-dp"]["wall_us_per_call"] / summary["aggregate"]["wall_us_per_call"]
    )
    summary["ratio_cpu"] = (
        summary["aggregate-dp"]["cpu_us_per_call"] / summary["aggregate"]["cpu_us_per_call"]
    )
    summary["ratio_cpu_audit"] = (
        summary["aggregate"]["cpu_us_per_call"] / summary[UNAUDITED]["cpu_us_per_call"]
    )
    summary["ratio_cpu_dp_unaudited"] = (
        summary["aggregate-dp"]["cpu_us_per_call"] / summary[UNAUDITED]["cpu_us_per_call"]
    )
    print(
        f"median CPU per call: exact without the audit "
        f"{summary[UNAUDITED]['cpu_us_per_call']:,.0f} µs; audited/unaudited "
        f"{summary['ratio_cpu_audit']:.2f}, DP/unaudited {summary['ratio_cpu_dp_unaudited']:.2f}"
    )
    print(
        f"median per call: exact {summary['aggregate']['wall_us_per_call']:,.0f} µs, "
        f"DP {summary['aggregate-dp']['wall_us_per_call']:,.0f} µs; ratio DP/exact "
        f"wall {summary['ratio_wall']:.2f}, CPU {summary['ratio_cpu']:.2f}"
    )
    return {
        "benchmark": "dp_aggregate",
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": _commit(),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "args": vars(args),
        "groups": {"exact": len(exact["groups"]), "dp_released": len(noisy["groups"])},
        "runs": runs,
        "summary": summary,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=60_000, help="social-insurance rows")
    parser.add_argument("--calls", type=int, default=30, help="calls per run (at most 40)")
    parser.add_argument("--rounds", type=int, default=3, help="exact + DP pairs")
    parser.add_argument(
        "--group-by", default="district", help="comma-separated fields (granted: both)"
    )
    parser.add_argument(
        "--groups-per-subject", type=int, default=1, help="L of the DP grant (1..100)"
    )
    parser.add_argument("--out", type=Path, help="write the JSON results here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    if not 1 <= arguments.calls <= 40:
        raise SystemExit("--calls must be 1-40 (the DP grant's budget per day)")
    results = asyncio.run(main(arguments))
    if arguments.out is not None:
        arguments.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
