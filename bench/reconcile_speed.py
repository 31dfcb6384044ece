"""Reconciliation at scale: ``dsgw reconcile`` of an exchange ledger of 1M trades.

    .venv/bin/python bench/reconcile_speed.py [--trades 1000000] [--deliveries 200000]
        [--data-calls 0] [--inject 5] [--rounds 1] [--json PATH] [--keep]
        [--database-url postgresql://postgres@127.0.0.1:5432/test [--no-analyze]]

**Setup** (timed, but not part of the figures): a fresh store (SQLite in a temporary
directory, or a fresh PostgreSQL database created through ``--database-url``, ANALYZEd after
loading unless ``--no-analyze``, and dropped at the end) holding

- the products stream: a few product lifecycle records, then ``--trades`` ``trade.recorded``
  records with exactly the body ``ProductService.record_trade`` writes (the exchange actor,
  ``Trade.to_dict()``, ``used: None``), appended through the group-commit ``LogWriter``,
  so they are real salted, hash-chained records. Every ``--checkpoint-every`` trades the
  stream is folded and a checkpoint signed (the real ``Checkpointer``) and a ``final``
  anchor of that checkpoint is stored, as a running gateway with a chain would leave it;
- the calls stream: ``--deliveries`` ``delivery`` call records as the delivery endpoint
  writes them (``CallRecord.to_pending``, decision ``allow``, parameters product, buyer,
  trade), never more per trade than it bought, shuffled with ``--data-calls`` ``data``
  records (the rest of a gateway's traffic, which the deliveries pass must skip);
- the exchange ledger CSV (``exchange_trade_id,product,buyer_code,quantity,unit_price,
  amount,traded_at``) with one row per trade.

The ``trades`` table rows ``record_trade`` also writes are not made: ``reconcile`` does not
read them. The ledger names products by product id (``reconcile`` also accepts listing ids;
that costs one dictionary lookup either way).

``--inject`` discrepancies of every kind are planted: trades recorded but left out of the
CSV (missing-at-exchange), CSV rows never recorded (missing-in-gateway, so the CSV still has
``--trades`` rows), CSV rows with one unit more at the same price (terms-differ), trades
recorded after the last anchor (unanchored), trades delivered once more than bought
(overuse), deliveries naming unknown trades (delivery-without-trade), and one anchored
record edited in the database afterwards (ledger-altered). The run fails unless reconcile
reports exactly these.

**Measured**, each in a fresh child process so that its peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is its own:

- baselines (project rule: the machine is shared and noisy, so figures are ratios against
  work measured in the same run): reading the CSV with ``csv.reader`` alone; parsing it
  with ``read_exchange_ledger`` alone; fetching the products stream's trade records (the
  query ``reconcile`` uses, no decoding); ``audit_stream`` of the products stream alone
  (with the same anchors ``reconcile`` passes);
- ``reconcile(engine, read_exchange_ledger(csv), algorithm="sha256", progress=...)`` as
  ``dsgw reconcile`` calls it, split into its phases by wrapping the ledger iterator and
  ``audit_stream`` (no change to the code measured): exchange ledger (parse + index),
  products-stream comparison, audit, deliveries.

``--rounds`` repeats (baselines, reconcile) pairs and reports medians.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import json
import os
import random
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from unittest import mock

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.authorization.roles import Role
from gateway.cli.demo import demo_credit_code
from gateway.clock import SystemClock
from gateway.db.engines import create_engine, migrate
from gateway.db.schema import AnchorRegistryRow, AnchorRow, LogEntryRow
from gateway.governance.service import Actor
from gateway.ledger.audit import AnchoredRoot, AuditReport, audit_stream
from gateway.ledger.checkpoints import Checkpointer, NoteSigner
from gateway.ledger.log import AppendedEntry, LogWriter, PendingRecord
from gateway.ledger.records import CallRecord
from gateway.products import reconcile as reconcile_module
from gateway.products.models import Trade
from gateway.products.reconcile import read_exchange_ledger, reconcile

COLUMNS = ("exchange_trade_id", "product", "buyer_code", "quantity", "unit_price", "amount")
CENT = Decimal("0.01")
BASE = dt.datetime(2026, 1, 5, 1, 0, tzinfo=dt.UTC)
EXCHANGE = Actor("sz-exchange", Role.EXCHANGE)
OPERATOR = Actor("operator-1", Role.OPERATOR)
MERCHANT = "m-0001"
PRODUCTS = tuple(f"credit-score-{n:02d}" for n in range(8))
PRICES = tuple(
    Decimal(p) for p in ("0.50", "1.00", "2.50", "12.80", "99.00", "0.05", "7.77", "350.00")
)
BUYERS = 5000
CHAIN_ID = 31337
CONTRACT = "0x" + "5f" * 20
KINDS = (
    "missing-in-gateway",
    "missing-at-exchange",
    "terms-differ",
    "unanchored",
    "ledger-altered",
    "overuse",
    "delivery-without-trade",
)


# -- the synthetic world --------------------------------------------------------------------


class World:
    """Deterministic trade terms by index, the same for the records and the CSV."""

    def __init__(self) -> None:
        self.buyer_codes = [demo_credit_code(f"buyer-{n}") for n in range(BUYERS)]
        self.buyer_names = [f"长沙市第{n}数据科技有限公司" for n in range(BUYERS)]

    @staticmethod
    def trade_id(i: int) -> str:
        return f"SZDE-T{i:08d}"

    @staticmethod
    def quantity(i: int) -> int:
        return 1 + (i * 37) % 20

    def trade(self, i: int) -> Trade:
        buyer = (i * 7919) % BUYERS
        quantity = self.quantity(i)
        unit_price = PRICES[(i // 3) % len(PRICES)]
        return Trade(
            exchange_trade_id=self.trade_id(i),
            product_id=PRODUCTS[i % len(PRODUCTS)],
            buyer_code=self.buyer_codes[buyer],
            buyer_name=self.buyer_names[buyer],
            quantity=quantity,
            unit_price=unit_price,
            amount=(unit_price * quantity).quantize(CENT),
            traded_at=BASE + dt.timedelta(seconds=i // 2),
        )


def trade_record(trade: Trade) -> PendingRecord:
    """What ``ProductService.record_trade`` appends (through ``GovernanceService.change``)."""
    return PendingRecord(
        stream="products",
        kind="trade.recorded",
        recorded_at=trade.traded_at + dt.timedelta(seconds=2),
        body={"actor": EXCHANGE.to_dict(), **(trade.to_dict() | {"used": None})},
    )


def csv_row(trade: Trade) -> list[str]:
    return [
        trade.exchange_trade_id,
        trade.product_id,
        trade.buyer_code,
        str(trade.quantity),
        str(trade.unit_price),
        str(trade.amount),
        trade.traded_at.isoformat(),
    ]


def delivery_record(n: int, product: str, trade_id: str) -> PendingRecord:
    """A delivery call record as ``POST /v1/products/{id}/deliveries`` leaves it."""
    started = BASE + dt.timedelta(milliseconds=300 * n)
    record = CallRecord(
        kind="delivery",
        started_at=started,
        method="POST",
        path=f"/v1/products/{product}/deliveries",
        remote="10.0.3.17",
    )
    record.merchant_id = MERCHANT
    record.client_id = "buyer-client-0001"
    record.token_id = f"dt-{n:010d}"
    record.parameters = {"product": product, "buyer": "buyer-client-0001", "trade": trade_id}
    record.fields = ["score", "band"]
    record.rows = 1
    record.decision = "allow"
    record.status = 200
    record.response_sha256 = secrets.token_hex(32)
    return record.to_pending(started + dt.timedelta(milliseconds=4))


def data_record(n: int) -> PendingRecord:
    started = BASE + dt.timedelta(milliseconds=300 * n)
    record = CallRecord(
        kind="data",
        started_at=started,
        method="POST",
        path="/v1/scenarios/enterprise-credit/datasets/enterprises/query",
        remote="10.0.3.17",
    )
    record.merchant_id = MERCHANT
    record.client_id = "client-0001"
    record.scenario_id = "enterprise-credit"
    record.dataset_id = "enterprises"
    record.mode = "query"
    record.fields = ["credit_code", "name", "status"]
    record.parameters = {"filters": {"credit_code": demo_credit_code(str(n))}}
    record.rows = 1
    record.decision = "allow"
    record.status = 200
    record.response_sha256 = secrets.token_hex(32)
    return record.to_pending(started + dt.timedelta(milliseconds=1))


@dataclass(slots=True)
class Plan:
    trades: int
    inject: int
    missing_at_exchange: set[int] = field(default_factory=set)
    terms_differ: set[int] = field(default_factory=set)
    overuse: set[int] = field(default_factory=set)
    tamper: int = -1

    @property
    def anchored(self) -> int:
        """Trades appended before the last anchor; the rest are the unanchored ones."""
        return self.trades - self.inject


def make_plan(trades: int, inject: int, rng: random.Random) -> Plan:
    plan = Plan(trades, inject)
    if trades < 20 * max(inject, 1) + 200:
        raise SystemExit(f"--trades {trades} is too small for --inject {inject}")
    picked = rng.sample(range(plan.anchored - 200), 3 * inject)
    plan.missing_at_exchange = set(picked[:inject])
    plan.terms_differ = set(picked[inject : 2 * inject])
    plan.overuse = set(picked[2 * inject :])
    plan.tamper = plan.anchored - 50  # in the last anchored stretch: few audit findings
    return plan


async def _append_all(writer: LogWriter, records: Iterable[PendingRecord]) -> list[AppendedEntry]:
    return list(await asyncio.gather(*(writer.append(r) for r in records)))


async def populate(
    engine: AsyncEngine,
    ledger: Path,
    *,
    trades: int,
    deliveries: int,
    data_calls: int,
    inject: int,
    checkpoint_every: int,
    seed: int,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Fill the store and write the CSV; returns what reconcile must find."""
    rng = random.Random(seed)
    world = World()
    plan = make_plan(trades, inject, rng)
    await migrate(engine)
    writer = LogWriter(engine, batch_max=2048)
    await writer.start()
    key = Ed25519PrivateKey.generate()
    checkpointer = Checkpointer(
        engine, NoteSigner("bench.local", key), SystemClock(), deployment="bench.local"
    )
    now = dt.datetime.now(dt.UTC)
    async with engine.begin() as conn:
        await conn.execute(
            insert(AnchorRegistryRow).values(
                chain_id=CHAIN_ID,
                address=CONTRACT,
                backend="rpc",
                deployed_block=1,
                deploy_tx_hash=os.urandom(32),
                created_at=now,
                updated_at=now,
            )
        )
    block = 1

    async def checkpoint_and_anchor() -> int:
        nonlocal block
        head = await checkpointer.checkpoint("products")
        assert head is not None
        block += 3
        stamp = dt.datetime.now(dt.UTC)
        async with engine.begin() as conn:
            await conn.execute(
                insert(AnchorRow).values(
                    chain_id=CHAIN_ID,
                    contract=CONTRACT,
                    stream="products",
                    size=head.size,
                    root=head.root,
                    status="final",
                    block_number=block,
                    block_hash=os.urandom(32),
                    tx_hash=os.urandom(32),
                    confirmations=2,
                    requeues=0,
                    last_error=None,
                    created_at=stamp,
                    updated_at=stamp,
                    final_at=stamp,
                )
            )
        return head.size

    # Products stream: each product's lifecycle, then the trades.
    lifecycle = [
        PendingRecord(
            stream="products",
            kind=kind,
            recorded_at=BASE - dt.timedelta(days=3),
            body={"actor": OPERATOR.to_dict(), "product_id": product},
        )
        for product in PRODUCTS
        for kind in ("product.registered", "product.checked", "product.filed", "product.listed")
    ]
    await _append_all(writer, lifecycle)
    tampered: AppendedEntry | None = None
    anchored_size = 0
    chunk = 8192
    started = time.perf_counter()
    with ledger.open("w", newline="", encoding="utf-8") as out:
        rows = csv.writer(out)
        rows.writerow([*COLUMNS, "traded_at"])
        for i in range(inject):  # traded at the exchange, never reported to the gateway
            t = world.trade(trades + i)
            rows.writerow(
                csv_row(
                    Trade(
                        f"SZDE-X{i:08d}",
                        t.product_id,
                        t.buyer_code,
                        t.buyer_name,
                        t.quantity,
                        t.unit_price,
                        t.amount,
                        t.traded_at,
                    )
                )
            )
        next_checkpoint = checkpoint_every
        start = 0
        while start < trades:
            # Stop at checkpoint boundaries and where the anchored trades end.
            stop = min(trades, start + chunk)
            if start < plan.anchored:
                stop = min(stop, plan.anchored, next_checkpoint)
            batch = [world.trade(i) for i in range(start, stop)]
            entries = await _append_all(writer, (trade_record(t) for t in batch))
            for i, t in enumerate(batch, start=start):
                if i == plan.tamper:
                    tampered = entries[i - start]
                if i in plan.missing_at_exchange:
                    continue
                row = csv_row(t)
                if i in plan.terms_differ:
                    # One unit more, billed consistently: the terms differ from the
                    # record while the row's own arithmetic holds (not amount-arithmetic).
                    row[3] = str(t.quantity + 1)
                    row[5] = str((t.unit_price * (t.quantity + 1)).quantize(CENT))
                rows.writerow(row)
            if start // 100_000 != stop // 100_000 or stop == trades:
                rate = stop / (time.perf_counter() - started)
                say(f"  trades {stop:>9,} / {trades:,}  ({rate:,.0f}/s)")
            start = stop
            if start == plan.anchored:
                anchored_size = await checkpoint_and_anchor()
            elif start == next_checkpoint and start < plan.anchored:
                await checkpoint_and_anchor()
            while next_checkpoint <= start:
                next_checkpoint += checkpoint_every
    assert tampered is not None

    # Calls stream: deliveries against bought units, shuffled with other calls.
    used = bytearray(trades)
    targets: list[int | str | None] = []
    excluded = plan.missing_at_exchange | plan.overuse
    while len(targets) < deliveries:
        i = rng.randrange(plan.anchored)
        if i in excluded or used[i] >= world.quantity(i):
            continue
        used[i] += 1
        targets.append(i)
    for i in plan.overuse:
        targets.extend([i] * (world.quantity(i) + 1))
    targets.extend(f"SZDE-GHOST-{n}" for n in range(inject))
    targets.extend([None] * data_calls)
    rng.shuffle(targets)
    started = time.perf_counter()
    for start in range(0, len(targets), chunk):
        records = []
        for n, target in enumerate(targets[start : start + chunk], start=start):
            if target is None:
                records.append(data_record(n))
            elif isinstance(target, int):
                product = PRODUCTS[target % len(PRODUCTS)]
                records.append(delivery_record(n, product, world.trade_id(target)))
            else:
                records.append(delivery_record(n, PRODUCTS[0], target))
        await _append_all(writer, records)
        done = min(len(targets), start + chunk)
        if start // 100_000 != done // 100_000 or done == len(targets):
            rate = done / (time.perf_counter() - started)
            say(f"  calls  {done:>9,} / {len(targets):,}  ({rate:,.0f}/s)")
    await writer.close()

    # Someone edits an anchored trade record in the database (not a term reconcile compares).
    async with engine.begin() as conn:
        payload = await conn.scalar(
            select(LogEntryRow.payload).where(
                LogEntryRow.stream == "products", LogEntryRow.seq == tampered.seq
            )
        )
        assert payload is not None
        assert '"used":null' in payload
        await conn.execute(
            update(LogEntryRow)
            .where(LogEntryRow.stream == "products", LogEntryRow.seq == tampered.seq)
            .values(payload=payload.replace('"used":null', '"used":0'))
        )
    delivery_count = len(targets) - data_calls
    unanchored = {world.trade_id(i) for i in range(plan.anchored, trades)}
    return {
        "anchored_size": anchored_size,
        "tampered_record": f"products/{tampered.seq}",
        "deliveries": delivery_count,
        "expected": {
            "missing-in-gateway": sorted(f"SZDE-X{i:08d}" for i in range(inject)),
            "missing-at-exchange": sorted(world.trade_id(i) for i in plan.missing_at_exchange),
            "terms-differ": sorted(world.trade_id(i) for i in plan.terms_differ),
            "unanchored": sorted(unanchored),
            "overuse": sorted(world.trade_id(i) for i in plan.overuse),
            "delivery-without-trade": sorted(f"SZDE-GHOST-{n}" for n in range(inject)),
        },
    }


# -- measurement (child processes) ----------------------------------------------------------


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _maxrss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


async def _anchors(engine: AsyncEngine) -> list[AnchoredRoot]:
    async with engine.connect() as conn:
        return [
            AnchoredRoot(int(size), bytes(root), f"recorded anchor of size {size}")
            for size, root in await conn.execute(
                select(AnchorRow.size, AnchorRow.root).where(
                    AnchorRow.stream == "products", AnchorRow.status == "final"
                )
            )
        ]


async def measure_baselines(url: str, ledger: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"rss_start_kib": _rss_kib()}
    started = time.perf_counter()
    with ledger.open(newline="", encoding="utf-8") as source:
        rows = sum(1 for _ in csv.reader(source)) - 1
    out["csv_reader_s"] = time.perf_counter() - started
    out["csv_rows"] = rows

    started = time.perf_counter()
    parsed = sum(1 for _ in read_exchange_ledger(ledger))
    out["parse_s"] = time.perf_counter() - started
    assert parsed == rows

    engine = create_engine(url)
    try:
        # The products stream's trade records, fetched as reconcile fetches them (no JSON).
        started = time.perf_counter()
        fetched, last = 0, -1
        while True:
            async with engine.connect() as conn:
                batch = (
                    await conn.execute(
                        select(LogEntryRow.seq, LogEntryRow.payload)
                        .where(
                            LogEntryRow.stream == "products",
                            LogEntryRow.kind == "trade.recorded",
                            LogEntryRow.seq > last,
                        )
                        .order_by(LogEntryRow.seq)
                        .limit(20_000)
                    )
                ).all()
            if not batch:
                break
            fetched += len(batch)
            last = batch[-1][0]
        out["fetch_products_s"] = time.perf_counter() - started
        out["fetched"] = fetched

        anchors = await _anchors(engine)
        started = time.perf_counter()
        audit = await audit_stream(
            engine, "products", algorithm="sha256", checkpoint_key=None, anchored=anchors
        )
        out["audit_s"] = time.perf_counter() - started
        out["audit_records"] = audit.records
        out["audit_findings"] = len(audit.findings)
    finally:
        await engine.dispose()
    out["maxrss_kib"] = _maxrss_kib()
    return out


async def measure_reconcile(url: str, ledger: Path) -> dict[str, Any]:
    engine = create_engine(url)
    marks: dict[str, float] = {}
    last_progress: dict[str, float] = {}

    async def timed_audit(
        engine: AsyncEngine,
        stream: str,
        *,
        algorithm: Any,
        checkpoint_key: Any,
        anchored: Any = (),
        progress: Any = None,
        batch: int = 20_000,
    ) -> AuditReport:
        marks["audit_start"] = time.perf_counter()
        report = await audit_stream(
            engine,
            stream,
            algorithm=algorithm,
            checkpoint_key=checkpoint_key,
            anchored=anchored,
            progress=progress,
            batch=batch,
        )
        marks["audit_end"] = time.perf_counter()
        return report

    def timed_ledger(trades: Iterable[Any]) -> Iterator[Any]:
        marks["ledger_start"] = time.perf_counter()
        yield from trades
        marks["ledger_end"] = time.perf_counter()

    def progress(what: str, _count: int) -> None:
        last_progress[what] = time.perf_counter()

    # reconcile calls audit_stream through its module's namespace; wrap it there.
    with mock.patch.object(reconcile_module, "audit_stream", timed_audit):
        rss_before = _rss_kib()
        started = time.perf_counter()
        report = await reconcile(
            engine,
            timed_ledger(read_exchange_ledger(ledger)),
            algorithm="sha256",
            progress=progress,
        )
        ended = time.perf_counter()
    await engine.dispose()
    found: dict[str, list[str]] = {}
    for d in report.discrepancies:
        found.setdefault(d.kind, []).append(
            (d.record_id or "") if d.kind == "ledger-altered" else d.trade_id
        )
    return {
        "rss_before_kib": rss_before,
        "maxrss_kib": _maxrss_kib(),
        "total_s": ended - started,
        "ledger_s": marks["ledger_end"] - started,
        "products_s": marks["audit_start"] - marks["ledger_end"],
        "products_scan_s": last_progress.get("products stream", marks["ledger_end"])
        - marks["ledger_end"],
        "audit_s": marks["audit_end"] - marks["audit_start"],
        "deliveries_s": ended - marks["audit_end"],
        "exchange_trades": report.exchange_trades,
        "gateway_trades": report.gateway_trades,
        "deliveries": report.deliveries,
        "counts": report.counts(),
        "found": {kind: sorted(ids) for kind, ids in found.items()},
        "ledger_altered": [d.detail for d in report.discrepancies if d.kind == "ledger-altered"][
            :10
        ],
    }


def child(spec: str) -> None:
    task = json.loads(spec)
    url, ledger = task["url"], Path(task["ledger"])
    measure: Callable[[str, Path], Coroutine[Any, Any, dict[str, Any]]] = (
        measure_reconcile if task["what"] == "reconcile" else measure_baselines
    )
    print(json.dumps(asyncio.run(measure(url, ledger))))


def run_child(what: str, url: str, ledger: Path) -> dict[str, Any]:
    spec = json.dumps({"what": what, "url": url, "ledger": str(ledger)})
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", spec],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- the run --------------------------------------------------------------------------------


def _pg_urls(admin: str) -> tuple[str, str, str]:
    """(asyncpg DSN of the admin database, SQLAlchemy URL of a fresh database, its name)."""
    dsn = admin.replace("postgresql+asyncpg://", "postgresql://", 1)
    name = f"dsgw_bench_{secrets.token_hex(4)}"
    url = dsn.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1) + "/" + name
    return dsn, url, name


async def _pg(dsn: str, statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            check=True,
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _check(found: dict[str, list[str]], setup: dict[str, Any]) -> list[str]:
    problems = []
    for kind, ids in setup["expected"].items():
        if found.get(kind, []) != ids:
            problems.append(f"{kind}: expected {ids[:6]}, found {found.get(kind, [])[:6]}")
    altered = found.get("ledger-altered", [])
    if setup["tampered_record"] not in altered:
        problems.append(f"ledger-altered: {setup['tampered_record']} not among {altered[:6]}")
    unexpected = set(found) - set(KINDS)
    if unexpected:
        problems.append(f"unexpected kinds {sorted(unexpected)}")
    return problems


def _median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--deliveries", type=int, default=200_000)
    parser.add_argument("--data-calls", type=int, default=0, help="other call records")
    parser.add_argument("--inject", type=int, default=5, help="discrepancies of each kind")
    parser.add_argument("--checkpoint-every", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--database-url",
        default="",
        help="PostgreSQL admin DSN (e.g. postgresql://postgres@127.0.0.1:5432/test): a fresh "
        "database is created there for the run and dropped after; SQLite when omitted",
    )
    parser.add_argument(
        "--no-analyze",
        action="store_true",
        help="PostgreSQL: measure right after the load, before the planner has statistics",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    started_at = dt.datetime.now(dt.UTC)
    commit = _git_commit()
    tmp = Path(tempfile.mkdtemp(prefix="dsgw-reconcile-bench-"))
    ledger = tmp / "exchange-ledger.csv"
    pg_name: str | None = None
    admin_dsn = ""
    if args.database_url:
        admin_dsn, url, pg_name = _pg_urls(args.database_url)
        asyncio.run(_pg(admin_dsn, f'CREATE DATABASE "{pg_name}"'))
        store = "postgresql"
    else:
        url = f"sqlite+aiosqlite:///{tmp / 'bench.sqlite3'}"
        store = "sqlite"
    try:
        say(f"setup: {args.trades:,} trades, {args.deliveries:,} deliveries, {store} in {tmp}")

        async def setup() -> dict[str, Any]:
            engine = create_engine(url)
            try:
                prepared = await populate(
                    engine,
                    ledger,
                    trades=args.trades,
                    deliveries=args.deliveries,
                    data_calls=args.data_calls,
                    inject=args.inject,
                    checkpoint_every=args.checkpoint_every,
                    seed=args.seed,
                    say=say,
                )
                if store == "postgresql" and not args.no_analyze:
                    # What autovacuum has long done in a deployment that has run for a while;
                    # a freshly loaded database has no statistics yet (see --no-analyze).
                    async with engine.begin() as conn:
                        await conn.execute(text("ANALYZE"))
                return prepared
            finally:
                await engine.dispose()

        clock = time.perf_counter()
        prepared = asyncio.run(setup())
        setup_s = time.perf_counter() - clock
        say(f"setup done in {setup_s:.1f} s")
        rounds: list[dict[str, Any]] = []
        for n in range(args.rounds):
            say(f"round {n + 1}/{args.rounds}: baselines")
            base = run_child("baselines", url, ledger)
            say(f"round {n + 1}/{args.rounds}: reconcile")
            rec = run_child("reconcile", url, ledger)
            rounds.append({"baselines": base, "reconcile": rec})
    finally:
        if pg_name is not None:
            asyncio.run(_pg(admin_dsn, f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)'))
        if args.keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    problems = []
    for r in rounds:
        problems += _check(r["reconcile"]["found"], prepared)
    counts: Counter[str] = Counter(rounds[-1]["reconcile"]["counts"])

    def med(side: str, key: str) -> float:
        return _median([float(r[side][key]) for r in rounds])

    def ratio(measured: str, baseline: str) -> float:
        return _median(
            [float(r["reconcile"][measured]) / float(r["baselines"][baseline]) for r in rounds]
        )

    b_csv, b_parse = med("baselines", "csv_reader_s"), med("baselines", "parse_s")
    b_fetch, b_audit = med("baselines", "fetch_products_s"), med("baselines", "audit_s")
    total = med("reconcile", "total_s")
    phases = {
        "exchange ledger (parse + index)": med("reconcile", "ledger_s"),
        "products stream comparison": med("reconcile", "products_s"),
        "  of which the scan": med("reconcile", "products_scan_s"),
        "audit of the products stream": med("reconcile", "audit_s"),
        "deliveries": med("reconcile", "deliveries_s"),
    }
    rec = rounds[-1]["reconcile"]
    peak = med("reconcile", "maxrss_kib") / 1024
    before = med("reconcile", "rss_before_kib") / 1024
    base_peak = med("baselines", "maxrss_kib") / 1024
    trades = int(rec["exchange_trades"])
    stream_records = int(rounds[-1]["baselines"]["audit_records"])
    summary: dict[str, Any] = {
        "date_utc": started_at.strftime("%Y-%m-%d %H:%M"),
        "commit": commit,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "store": store,
        "analyzed": store == "postgresql" and not args.no_analyze,
        "trades": args.trades,
        "deliveries": prepared["deliveries"],
        "data_calls": args.data_calls,
        "products_stream_records": stream_records,
        "rounds": args.rounds,
        "setup_s": setup_s,
        "baselines_s": {
            "csv_reader": b_csv,
            "read_exchange_ledger": b_parse,
            "fetch_products": b_fetch,
            "audit_stream": b_audit,
        },
        "reconcile_s": {"total": total, **{k.strip(): v for k, v in phases.items()}},
        # Each reconcile against the baselines measured just before it, then the median.
        "ratios": {
            "total / csv_reader": ratio("total_s", "csv_reader_s"),
            "total / audit_stream": ratio("total_s", "audit_s"),
            "parse / csv_reader": _median(
                [r["baselines"]["parse_s"] / r["baselines"]["csv_reader_s"] for r in rounds]
            ),
            "ledger phase / csv_reader": ratio("ledger_s", "csv_reader_s"),
            "products comparison / fetch_products": ratio("products_s", "fetch_products_s"),
            "audit in reconcile / audit_stream": ratio("audit_s", "audit_s"),
        },
        "trades_per_s": trades / total,
        "memory_mib": {
            "reconcile_peak": peak,
            "before_reconcile": before,
            "baselines_peak": base_peak,
            "per_trade_bytes": (peak - before) * 1024 * 1024 / max(trades, 1),
        },
        "counts": dict(counts),
        "checks": problems or "every planted discrepancy found, nothing else",
        "rounds_raw": rounds,
    }

    analyzed = " (ANALYZEd after the load)" if summary["analyzed"] else ""
    print(f"store: {store}{analyzed}, commit {commit}, {summary['date_utc']} UTC")
    print(
        f"exchange ledger: {rec['exchange_trades']:,} trades; products stream: "
        f"{stream_records:,} records ({rec['gateway_trades']:,} trades); "
        f"deliveries: {rec['deliveries']:,}; other calls: {args.data_calls:,}"
    )
    print(f"setup (not measured): {setup_s:.1f} s")
    print(f"baselines (median of {args.rounds}):")
    print(f"  csv.reader over the CSV           {b_csv:8.2f} s")
    ratios = summary["ratios"]
    print(
        f"  read_exchange_ledger alone        {b_parse:8.2f} s  "
        f"{ratios['parse / csv_reader']:5.2f}x csv.reader"
    )
    print(f"  fetch the products trade records  {b_fetch:8.2f} s")
    print(f"  audit_stream(products) alone      {b_audit:8.2f} s")
    print(f"reconcile (median of {args.rounds}):")
    for name, seconds in phases.items():
        print(f"  {name:<33} {seconds:8.2f} s  {seconds / total:6.1%}")
    print(f"  {'total':<33} {total:8.2f} s  {trades / total:,.0f} trades/s")
    print("ratios (each round against its own baselines, median):")
    for name, value in ratios.items():
        print(f"  {name:<38} {value:6.2f}")
    print(
        f"memory: peak RSS {peak:,.0f} MiB ({before:,.0f} MiB before reconcile started; "
        f"{summary['memory_mib']['per_trade_bytes']:,.0f} bytes per trade); baselines "
        f"process peak {base_peak:,.0f} MiB"
    )
    print("discrepancies: " + ", ".join(f"{k} {counts.get(k, 0)}" for k in KINDS))
    print(f"check: {summary['checks']}")
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    if problems:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
