"""Leak-tracing accuracy and speed against a store of at least 100,000 deliveries.

Builds a fresh gateway store (SQLite, or a fresh PostgreSQL database with --database-url)
and fills it through the real delivery path: ``DataPlane.execute`` answers each query
(masking, marks, canaries, the ``trace_rows`` index) and ``LogWriter.append`` commits its
call record with the index entries, as the HTTP handler does minus the socket. Many
merchants, skewed: a few heavy ones, a long tail; most calls look one enterprise up by
credit code (popular enterprises are looked up by many merchants), some page through a
district 50 rows at a time.

Then, for each leak kind, ``--trials`` random leaks are built from what a merchant (the
culprit) actually received, transformed, written to a file, read back with the leaked-file
readers and traced with ``gateway.tracer``. Reported per kind: how often every culprit was
named, how many innocent merchants were named (must be 0), the culprit's false-attribution
probability, and the time of a trace as a ratio to two baselines measured on the same leak
in the same run: reading the file (``read_leaked_file``) and a plain indexed ``SELECT`` of
the leak's identity hashes from ``trace_rows`` (the least work any trace must do). Also:
how long the store took to build and how much ``trace_rows`` weighs per delivery and per
delivered row, next to the call log itself.

    .venv/bin/python bench/trace_accuracy.py                 # 100k deliveries, SQLite
    .venv/bin/python bench/trace_accuracy.py --quick         # 10k deliveries, fewer trials
    .venv/bin/python bench/trace_accuracy.py --database-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import platform
import random
import secrets
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import bindparam, func, select, text  # noqa: E402

from connectors import synthetic  # noqa: E402
from gateway.api.problems import json_bytes  # noqa: E402
from gateway.cli.demo import (  # noqa: E402
    REGISTRY,
    VEHICLES,
    demo_datasets,
    demo_scenario,
)
from gateway.db.schema import LogEntryRow, TraceRow  # noqa: E402
from gateway.governance.models import ScenarioStatus  # noqa: E402
from gateway.governance.service import LOCAL_ADMIN  # noqa: E402
from gateway.ledger.records import CallRecord  # noqa: E402
from gateway.privacy.masking import MaskRule, mask  # noqa: E402
from gateway.runtime import Gateway, derive_key, initialise  # noqa: E402
from gateway.settings import load_settings  # noqa: E402
from gateway.tracing.files import read_leaked_file  # noqa: E402
from gateway.tracing.index import identity_hash  # noqa: E402
from gateway.tracing.normalize import normalize  # noqa: E402
from keys.keystore import KeyPurpose  # noqa: E402
from tests.support.enrolment import enrol_merchant  # noqa: E402
from tests.support.leaks import (  # noqa: E402
    CHINESE_TITLES,
    Sheet,
    drop_columns,
    excel_round_trip,
    mix,
    reformat,
    rename_headers,
    reorder_columns,
    round_numbers,
    write_csv,
)

SEED = 7
DATASET = "enterprises-traced"
SCENARIO = "leak-bench"
PATH = f"/v1/scenarios/{SCENARIO}/datasets/{DATASET}/query"
FIELDS = [
    "credit_code",
    "name",
    "legal_rep_name",
    "registered_capital",
    "established",
    "district",
    "industry",
    "status",
    "address",
]
PAGE = 50
TRACKED = 8  # merchants whose answers are kept to build leaks from
PASSPHRASE = "bench passphrase " + secrets.token_hex(8)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the store ------------------------------------------------------------------------------


@dataclass
class Store:
    gateway: Gateway
    store: str
    trace_key: bytes
    # tracked merchant -> credit code -> the row as its answers carried it (canaries included)
    received: dict[str, dict[str, dict[str, Any]]]
    # credit code -> merchants that received it (every merchant, real rows only)
    recipients: dict[str, set[str]]
    source: dict[str, dict[str, Any]]
    build: dict[str, Any] = field(default_factory=dict)


def _dataset_entry() -> dict[str, Any]:
    entry = json.loads(json.dumps(next(d for d in demo_datasets() if d["id"] == "enterprises")))
    entry["id"] = DATASET
    entry["canaries"] = True
    for spec in entry["fields"]:
        if spec["name"] == "registered_capital":
            spec["mark"] = "digit:2"
        elif spec["name"] == "address":
            spec["mark"] = "mask"
    return entry


def _scenario(now: dt.datetime) -> dict[str, Any]:
    # The demo's plan and evaluation: a scenario is published only with both on record.
    return demo_scenario(now) | {
        "id": SCENARIO,
        "name": "泄露溯源基准",
        "domain": "finance",
        "purpose": "Benchmark leak tracing over many overlapping deliveries.",
        "valid_from": (now - dt.timedelta(days=1)).date().isoformat(),
        "valid_until": (now + dt.timedelta(days=365)).date().isoformat(),
        # No daily quota: its first check per merchant counts the log, which is not what is
        # measured here.
        "quotas": {"rate_per_minute": 100_000_000},
        "grants": [
            {
                "dataset": DATASET,
                "modes": ["query"],
                "fields": FIELDS,
                "filter_fields": ["credit_code", "district"],
                "required_filters": ["credit_code", "district"],
                "row_cap": PAGE,
            }
        ],
    }


def _plan(args: argparse.Namespace, codes: list[str], districts: Counter[str]) -> list[Any]:
    """Who asks what: merchant ``i`` has weight ``1/(i+1)^0.8``; a lookup picks enterprise
    ``int(n * u^3)`` (a few popular enterprises, a long tail); a page picks a district and
    an offset within it."""
    rng = random.Random(args.seed)
    weights = [1 / (i + 1) ** 0.8 for i in range(args.merchants)]
    merchants = rng.choices(range(args.merchants), weights, k=args.deliveries)
    names = sorted(districts)
    plan = []
    for m in merchants:
        if rng.random() < args.page_share:
            district = rng.choice(names)
            pages = max(1, (districts[district] + PAGE - 1) // PAGE)
            body = {
                "filters": {"district": district},
                "limit": PAGE,
                "offset": rng.randrange(pages) * PAGE,
            }
        else:
            body = {"filters": {"credit_code": codes[int(len(codes) * rng.random() ** 3)]}}
        plan.append((m, body))
    return plan


async def build_store(args: argparse.Namespace, tmp: Path, database_url: str, store: str) -> Store:
    data_dir = tmp / "data"
    (data_dir / "sources").mkdir(parents=True)
    started = time.perf_counter()
    synthetic.write_sqlite(
        data_dir / REGISTRY, {"enterprises": args.rows, "social_insurance": 30}, seed=SEED
    )
    synthetic.write_csv(data_dir / VEHICLES, "vehicles", 10, seed=SEED)
    source = {r["credit_code"]: r for r in synthetic.generate("enterprises", args.rows, seed=SEED)}
    settings = load_settings(
        None,
        environ={},
        data_dir=data_dir,
        database_url=database_url,
        keystore_passphrase=PASSPHRASE,
        secret_hash_time_cost=1,
        secret_hash_memory_kib=8192,
        chain="none",
    )
    await initialise(settings)
    gateway = await Gateway.open(settings)
    gov = gateway.governance
    now = gateway.clock.now()
    await gov.catalog.register_dataset(LOCAL_ADMIN, _dataset_entry())
    await gov.scenarios.create_scenario(LOCAL_ADMIN, _scenario(now))
    await gov.scenarios.set_scenario_status(LOCAL_ADMIN, SCENARIO, ScenarioStatus.PUBLISHED)
    claims = []
    for i in range(args.merchants):
        merchant = f"m{i:03d}"
        issued = await enrol_merchant(gov, merchant, f"基准商户{i}", SCENARIO, now, days=300)
        claims.append((await gateway.tokens.issue(issued.client, f"scenario:{SCENARIO}")).claims)
    setup_seconds = time.perf_counter() - started

    districts = Counter(r["district"] for r in source.values())
    plan = _plan(args, list(source), districts)
    # Tracked: heavy, middle and light merchants.
    step = max(1, args.merchants // TRACKED)
    tracked = {f"m{i:03d}" for i in range(0, args.merchants, step)[:TRACKED]}
    received: dict[str, dict[str, dict[str, Any]]] = {m: {} for m in tracked}
    recipients: dict[str, set[str]] = defaultdict(set)
    queue: asyncio.Queue[tuple[int, dict[str, Any]]] = asyncio.Queue()
    for item in plan:
        queue.put_nowait(item)
    counts = {"rows": 0, "calls": 0}

    async def worker() -> None:
        while not queue.empty():
            m, body = queue.get_nowait()
            c = claims[m]
            record = CallRecord(
                kind="data", started_at=gateway.clock.now(), method="POST", path=PATH
            )
            record.scenario_id, record.dataset_id, record.mode = SCENARIO, DATASET, "query"
            record.merchant_id, record.client_id = c.merchant_id, c.client_id
            record.token_id, record.agreement_id = c.jti, c.agreement_id
            snapshot = await gateway.policy.current()
            result = await gateway.dataplane.execute(
                snapshot, c, SCENARIO, DATASET, "query", body, record
            )
            record.decision, record.status = "allow", 200
            record.response_sha256 = hashlib.sha256(json_bytes(result)).hexdigest()
            await gateway.log.append(record.to_pending(gateway.clock.now()))
            merchant = c.merchant_id or ""
            counts["calls"] += 1
            counts["rows"] += len(result["rows"])
            for row in result["rows"]:
                code = row["credit_code"]
                if code in source:
                    recipients[code].add(merchant)
                if merchant in received:
                    received[merchant].setdefault(code, row)
            if counts["calls"] % 10_000 == 0:
                say(f"  {counts['calls']:,} deliveries")

    say(f"delivering {args.deliveries:,} query answers to {args.merchants} merchants ...")
    delivering = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    deliver_seconds = time.perf_counter() - delivering
    mark_secret = gateway.keystore.secret(gateway.keystore.active(KeyPurpose.MARK).kid)
    result = Store(
        gateway=gateway,
        store=store,
        trace_key=derive_key(mark_secret, "dsgw trace row hashes v1"),
        received=received,
        recipients=recipients,
        source=source,
    )
    result.build = {
        "setup_seconds": round(setup_seconds, 2),
        "deliver_seconds": round(deliver_seconds, 2),
        "deliveries": counts["calls"],
        "delivered_rows": counts["rows"],
        "deliveries_per_second": round(counts["calls"] / deliver_seconds, 1),
        **await _sizes(gateway, store, counts),
    }
    return result


async def _sizes(gateway: Gateway, store: str, counts: dict[str, int]) -> dict[str, Any]:
    async with gateway.engine.connect() as conn:
        entries = int(await conn.scalar(select(func.count()).select_from(TraceRow)) or 0)
        calls = int(
            await conn.scalar(
                select(func.count()).select_from(LogEntryRow).where(LogEntryRow.stream == "calls")
            )
            or 0
        )
        if store == "postgresql":
            trace_bytes = int(
                await conn.scalar(text("SELECT pg_total_relation_size('trace_rows')"))
            )
            log_bytes = int(await conn.scalar(text("SELECT pg_total_relation_size('log_entries')")))
        else:
            trace_bytes = log_bytes = -1
    if store == "sqlite":
        path = Path(str(gateway.settings.resolved_database_url).split("///", 1)[1])
        sizes = _sqlite_table_bytes(path, ("trace_rows", "log_entries"))
        trace_bytes, log_bytes = sizes["trace_rows"], sizes["log_entries"]
    return {
        "trace_entries": entries,
        "call_records": calls,
        "trace_entries_per_delivered_row": round(entries / max(1, counts["rows"]), 3),
        "trace_bytes": trace_bytes,
        "trace_bytes_per_delivery": round(trace_bytes / max(1, counts["calls"]), 1),
        "trace_bytes_per_delivered_row": round(trace_bytes / max(1, counts["rows"]), 1),
        "log_bytes": log_bytes,
        "trace_bytes_vs_log": round(trace_bytes / log_bytes, 3) if log_bytes > 0 else None,
    }


def _sqlite_table_bytes(path: Path, tables: tuple[str, ...]) -> dict[str, int]:
    """Bytes each table (with its indexes) takes in a compacted copy of the store: the
    copy's size minus the size of the same copy without the table. Works on SQLite builds
    without the ``dbstat`` table."""
    scratch = path.parent / "size-check"
    scratch.mkdir(exist_ok=True)
    full = scratch / "full.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("VACUUM INTO ?", (str(full),))
    out = {}
    for table in tables:
        without = scratch / f"without-{table}.sqlite3"
        shutil.copyfile(full, without)
        db = sqlite3.connect(without, isolation_level=None)
        try:
            db.execute(f'DROP TABLE "{table}"')
            db.execute("VACUUM")
        finally:
            db.close()
        out[table] = full.stat().st_size - without.stat().st_size
        without.unlink()
    full.unlink()
    return out


# --- leaks ----------------------------------------------------------------------------------


@dataclass
class Leak:
    kind: str
    culprits: set[str]
    sheet: Sheet
    excel: bool = False


def _rows(store: Store, merchant: str, codes: list[str]) -> Sheet:
    got = store.received[merchant]
    return Sheet.from_answers([got[c] for c in codes], FIELDS)


def _pick(store: Store, merchant: str, count: int, rng: random.Random) -> list[str]:
    codes = list(store.received[merchant])
    return rng.sample(codes, min(count, len(codes)))


def _unmarked(store: Store, codes: list[str]) -> Sheet:
    """The same rows from the source, masked by the catalog's rules but with no mark."""
    rows = []
    for code in codes:
        r = store.source[code]
        rows.append(
            {
                **{f: r[f] for f in FIELDS},
                "legal_rep_name": mask(MaskRule.NAME, r["legal_rep_name"]),
                "address": mask(MaskRule.ADDRESS, r["address"]),
                "registered_capital": format(Decimal(r["registered_capital"]), ".2f"),
                "established": str(r["established"]),
            }
        )
    return Sheet.from_answers(rows, FIELDS)


def make_leak(store: Store, kind: str, culprit: str, other: str, rng: random.Random) -> Leak:
    if kind == "delivered-20":
        return Leak(kind, {culprit}, _rows(store, culprit, _pick(store, culprit, 20, rng)))
    if kind == "delivered-200":
        return Leak(kind, {culprit}, _rows(store, culprit, _pick(store, culprit, 200, rng)))
    if kind == "subset-10pct":
        count = max(10, len(store.received[culprit]) // 10)
        return Leak(kind, {culprit}, _rows(store, culprit, _pick(store, culprit, count, rng)))
    if kind == "excel-200":
        sheet = _rows(store, culprit, _pick(store, culprit, 200, rng))
        return Leak(kind, {culprit}, rename_headers(sheet, CHINESE_TITLES), excel=True)
    if kind == "reformatted-200":
        sheet = _rows(store, culprit, _pick(store, culprit, 200, rng))
        sheet = drop_columns(reformat(sheet, rng), {"name", "industry"})
        return Leak(kind, {culprit}, rename_headers(reorder_columns(sheet, rng)))
    if kind == "mix-2x100":
        a = _rows(store, culprit, _pick(store, culprit, 100, rng))
        b = _rows(store, other, _pick(store, other, 100, rng))
        return Leak(kind, {culprit, other}, mix(a, b, rng=rng))
    if kind == "mix-30-in-479":
        # A small share of another recipient's rows (rows the culprit never received) in a
        # large leak of the culprit's: both must be named.
        mine = store.received[culprit]
        own = {
            m: [c for c in got if c not in mine]
            for m, got in store.received.items()
            if m != culprit
        }
        small = rng.choice(sorted(m for m, codes in own.items() if len(codes) >= 30))
        a = _rows(store, culprit, _pick(store, culprit, 479, rng))
        b = _rows(store, small, rng.sample(own[small], 30))
        return Leak(kind, {culprit, small}, mix(a, b, rng=rng))
    if kind == "rounded-200":
        # Excel showing the marked capital with one decimal fewer, ties either way.
        sheet = _rows(store, culprit, _pick(store, culprit, 200, rng))
        sheet = round_numbers(sheet, "registered_capital", 1, rng)
        return Leak(kind, {culprit}, sheet, excel=True)
    popular = [c for c in store.received[culprit] if len(store.recipients.get(c, ())) >= 4]
    codes = rng.sample(popular, min(100, len(popular)))
    if kind == "popular-100":
        return Leak(kind, {culprit}, _rows(store, culprit, codes))
    if kind == "unmarked-popular-100":
        return Leak(kind, set(), _unmarked(store, codes))
    raise ValueError(kind)


KINDS = [
    "delivered-20",
    "delivered-200",
    "subset-10pct",
    "excel-200",
    "reformatted-200",
    "mix-2x100",
    "mix-30-in-479",
    "rounded-200",
    "popular-100",
    "unmarked-popular-100",
]


async def _select_baseline(store: Store, cells: list[str]) -> float:
    """A plain indexed lookup of the leak's identity hashes: the floor of any trace."""
    hashes = sorted(
        {identity_hash(store.trace_key, DATASET, "credit_code", normalize(c)) for c in cells}
    )
    query = select(TraceRow.hash, TraceRow.seq).where(
        TraceRow.hash.in_(bindparam("hashes", expanding=True))
    )
    started = time.perf_counter()
    async with store.gateway.engine.connect() as conn:
        for i in range(0, len(hashes), 500):
            (await conn.execute(query, {"hashes": hashes[i : i + 500]})).all()
    return time.perf_counter() - started


async def run_trials(store: Store, args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    rng = random.Random(args.seed + 1)
    tracked = sorted(m for m, rows in store.received.items() if len(rows) >= 40)
    if len(tracked) < 2:
        raise SystemExit("too few deliveries per tracked merchant; raise --deliveries")
    results = []
    leaks_dir = tmp / "leaks"
    leaks_dir.mkdir()
    known = {normalize(code) for code in store.source}
    for kind in KINDS:
        say(f"tracing {args.trials} leaks of kind {kind} ...")
        for trial in range(args.trials):
            culprit = tracked[trial % len(tracked)]
            other = rng.choice([m for m in tracked if m != culprit])
            leak = make_leak(store, kind, culprit, other, rng)
            if len(leak.sheet.rows) < 10:
                raise SystemExit(
                    f"{kind}: only {len(leak.sheet.rows)} rows to leak for {culprit}; "
                    "raise --deliveries"
                )
            stem = f"{kind}-{trial}"
            if leak.excel:
                _, path = excel_round_trip(leak.sheet, leaks_dir, stem)
            else:
                path = write_csv(leak.sheet, leaks_dir / f"{stem}.csv", encoding="gb18030")
            started = time.perf_counter()
            table = read_leaked_file(path)
            read_seconds = time.perf_counter() - started
            # The identifier column, found the way an analyst would: its values are codes.
            id_column = max(
                range(len(table.headers)),
                key=lambda i: sum(normalize(r[i]) in known for r in table.rows),
            )
            select_seconds = await _select_baseline(store, [r[id_column] for r in table.rows])
            started = time.perf_counter()
            report = await store.gateway.tracer.trace(LOCAL_ADMIN, table)
            trace_seconds = time.perf_counter() - started
            named = {c.merchant_id for c in report.candidates if c.verdict == "named"}
            if named != leak.culprits:
                for c in report.candidates:
                    if c.merchant_id in leak.culprits | named:
                        say(
                            f"  {kind} trial {trial}: {c.merchant_id} {c.verdict} "
                            f"FAP {c.false_attribution_probability:.2g} marks {c.marks} "
                            f"rows {c.rows_received} exclusive {c.rows_exclusive}"
                        )
                missing = leak.culprits - {c.merchant_id for c in report.candidates}
                if missing:
                    say(f"  {kind} trial {trial}: not candidates: {sorted(missing)}")
            fap = {c.merchant_id: c.false_attribution_probability for c in report.candidates}
            results.append(
                {
                    "kind": kind,
                    "rows": len(table.rows),
                    "culprits": sorted(leak.culprits),
                    "named": sorted(named),
                    "correct": named == leak.culprits,
                    "innocents_named": sorted(named - leak.culprits),
                    "candidates": len(report.candidates),
                    "culprit_fap": max((fap.get(c, 1.0) for c in leak.culprits), default=None),
                    "min_innocent_fap": min(
                        (p for m, p in fap.items() if m not in leak.culprits), default=None
                    ),
                    "trace_seconds": trace_seconds,
                    "read_seconds": read_seconds,
                    "select_seconds": select_seconds,
                }
            )
    return results


def summarise(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for kind in KINDS:
        runs = [r for r in results if r["kind"] == kind]
        if not runs:
            continue
        faps = [r["culprit_fap"] for r in runs if r["culprit_fap"] is not None]
        innocent = [r["min_innocent_fap"] for r in runs if r["min_innocent_fap"] is not None]
        trace = [r["trace_seconds"] for r in runs]
        out.append(
            {
                "kind": kind,
                "trials": len(runs),
                "rows_median": statistics.median(r["rows"] for r in runs),
                "correct": sum(r["named"] == r["culprits"] for r in runs),
                "culprits_missed": sum(len(set(r["culprits"]) - set(r["named"])) for r in runs),
                "innocents_named": sum(len(r["innocents_named"]) for r in runs),
                "candidates_median": statistics.median(r["candidates"] for r in runs),
                "culprit_fap_median": statistics.median(faps) if faps else None,
                "min_innocent_fap": min(innocent) if innocent else None,
                "trace_ms_median": round(statistics.median(trace) * 1000, 1),
                "trace_ms_p95": round(sorted(trace)[int(0.95 * (len(trace) - 1))] * 1000, 1),
                "trace_over_select": round(
                    statistics.median(r["trace_seconds"] / r["select_seconds"] for r in runs), 1
                ),
                "trace_over_read": round(
                    statistics.median(r["trace_seconds"] / r["read_seconds"] for r in runs), 1
                ),
            }
        )
    return out


def _print(build: dict[str, Any], summary: list[dict[str, Any]], store: str) -> None:
    print(f"store: {store}")
    for key, value in build.items():
        print(f"  {key}: {value}")
    header = (
        f"{'kind':<22}{'trials':>7}{'rows':>7}{'correct':>8}{'innocent':>9}{'cands':>7}"
        f"{'culprit FAP':>13}{'min innoc FAP':>15}{'ms p50':>8}{'ms p95':>8}"
        f"{'x select':>10}{'x read':>8}"
    )
    print(header)
    for s in summary:
        fap = s["culprit_fap_median"]
        inn = s["min_innocent_fap"]
        print(
            f"{s['kind']:<22}{s['trials']:>7}{s['rows_median']:>7}"
            f"{s['correct']:>5}/{s['trials']:<2}{s['innocents_named']:>9}"
            f"{s['candidates_median']:>7}"
            f"{'-' if fap is None else f'{fap:.1e}':>13}{'-' if inn is None else f'{inn:.1e}':>15}"
            f"{s['trace_ms_median']:>8}{s['trace_ms_p95']:>8}"
            f"{s['trace_over_select']:>10}{s['trace_over_read']:>8}"
        )


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


async def _pg(dsn: str, statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def amain(args: argparse.Namespace, tmp: Path) -> int:
    pg_name = None
    admin_dsn = ""
    if args.database_url:
        admin_dsn = args.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        pg_name = f"dsgw_bench_{secrets.token_hex(4)}"
        await _pg(admin_dsn, f'CREATE DATABASE "{pg_name}"')
        url, store_kind = admin_dsn.rsplit("/", 1)[0] + "/" + pg_name, "postgresql"
    else:
        url, store_kind = "", "sqlite"
    store = None
    try:
        store = await build_store(args, tmp, url, store_kind)
        if store_kind == "postgresql":
            async with store.gateway.engine.begin() as conn:
                await conn.execute(text("ANALYZE"))
        results = await run_trials(store, args, tmp)
    finally:
        if store is not None:
            await store.gateway.close()
        if pg_name is not None:
            await _pg(admin_dsn, f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
    summary = summarise(results)
    _print(store.build, summary, store_kind)
    failures = sum(s["innocents_named"] for s in summary)
    missed = sum(s["culprits_missed"] for s in summary)
    print(f"innocent merchants named: {failures} (must be 0); culprits missed: {missed}")
    if args.json:
        document = {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "commit": _git_commit(),
            "machine": {"python": platform.python_version(), "platform": platform.platform()},
            "arguments": vars(args),
            "store": store_kind,
            "build": store.build,
            "summary": summary,
            "trials": results,
        }
        Path(args.json).write_text(json.dumps(document, indent=2, default=str) + "\n")
    return 1 if failures else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--deliveries", type=int, default=100_000)
    parser.add_argument("--merchants", type=int, default=40)
    parser.add_argument("--rows", type=int, default=20_000, help="enterprises in the source")
    parser.add_argument("--page-share", type=float, default=0.08, help="share of page queries")
    parser.add_argument("--trials", type=int, default=10, help="leaks traced per kind")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--quick", action="store_true", help="10k deliveries, 5 trials per kind")
    parser.add_argument("--database-url", default="", help="PostgreSQL admin DSN")
    parser.add_argument("--json", default="", help="write every figure here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if args.quick:
        args.deliveries, args.trials, args.rows = 10_000, 5, 5_000
    tmp = Path(tempfile.mkdtemp(prefix="dsgw-trace-bench-"))
    try:
        code = asyncio.run(amain(args, tmp))
    finally:
        if args.keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    raise SystemExit(code)


if __name__ == "__main__":
    main()
