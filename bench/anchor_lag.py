"""Anchoring lag: how long after a call record is durable its checkpoint's anchor is mined
and final on the chain (the "evidence lag"), and how fast anchoring catches up after the
chain was down.

A real gateway (:meth:`gateway.runtime.Gateway.open`, SQLite store in a temporary data
directory, the checkpointer started as ``dsgw serve`` starts it, anchoring on a real anvil
node, see below) receives call records through its log writer at a steady offered rate (open
loop). For every ``--sample-every``-th record the time its ``append`` returned (durable) is
kept with its sequence number; a poller reads the ``checkpoints`` and ``anchors`` tables
every ``--observe-interval`` seconds and keeps the first time each checkpoint size and each anchor
status was seen. A record of sequence ``s`` is covered by the first checkpoint/anchor of size
``> s``; its lag to that point is reported as median / p95 / max, in seconds and as multiples
of two baselines measured in the same run: the checkpoint interval ``T`` and the bare chain
round trip (send one trivial transaction to the same node and read its receipt).

Phases: warm-up, steady (``--duration``), settle (until every steady record is anchored
final), outage (the anvil node is stopped for ``--outage`` seconds while records keep coming,
then started again with its state), recovery (node back; until every record appended before
it came back is anchored final). Then the on-chain ``Anchored`` events and the ``anchors``
table are checked: each (stream, size) anchored at most once.

    .venv/bin/python bench/anchor_lag.py [--duration 60] [--rate 300] [--outage 10] \
        [--checkpoint-seconds 5] [--confirmations 1] [--block-time SECONDS] [--json FILE]

The chain. The gateway restarts an anvil it runs itself within about 2 s of its exit, so
stopping that node measures no outage. Whenever the run has an outage (``--outage`` > 0) or a
``--block-time``, the benchmark therefore starts anvil itself, deploys the registry, and points
the gateway at it as ``chain = "rpc"``: a node the gateway does not own. That node mines a
block per transaction, or every ``--block-time`` seconds; without ``--block-time`` and with
``--confirmations`` above 1 it mines every second, as the gateway runs its own anvil then.
Otherwise (``--outage 0``, no ``--block-time``) the gateway runs its own anvil
(``chain = "anvil"``), exactly as shipped. The mining mode in the output is read from the node.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import json
import logging
import math
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eth_account import Account  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncEngine  # noqa: E402
from web3 import AsyncHTTPProvider, AsyncWeb3  # noqa: E402
from web3.exceptions import TransactionNotFound  # noqa: E402
from web3.types import Wei  # noqa: E402

from gateway.chain.backends import AnvilBackend  # noqa: E402
from gateway.chain.contract import stream_id  # noqa: E402
from gateway.chain.deployment import ensure_registry  # noqa: E402
from gateway.chain.service import dev_block_time  # noqa: E402
from gateway.db.engines import create_engine  # noqa: E402
from gateway.db.schema import AnchorRow, AnchorTransactionRow, CheckpointRow  # noqa: E402
from gateway.ledger.log import LogWriter, PendingRecord  # noqa: E402
from gateway.runtime import Gateway, initialise, keystore_passphrase  # noqa: E402
from gateway.settings import Settings, load_settings  # noqa: E402
from keys.keystore import KeyPurpose, Keystore  # noqa: E402

STREAM = "calls"
STAGES = ("checkpoint", "sent", "mined", "final")
REPORTED_PHASES = ("steady", "outage", "recovery")


# -- observation ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    phase: str
    seq: int
    issued: float
    durable: float


@dataclass(slots=True)
class Observer:
    """First time (``time.monotonic()``) each checkpoint size and each anchor status of
    ``STREAM`` was seen in the store, polled every ``interval`` seconds."""

    engine: AsyncEngine
    interval: float
    checkpoints: dict[int, float] = field(default_factory=dict)
    anchors: dict[tuple[int, str], float] = field(default_factory=dict)
    polls: int = 0
    poll_seconds: float = 0.0
    _top_checkpoint: int = 0

    async def poll(self) -> None:
        started = time.monotonic()
        async with self.engine.connect() as conn:
            sizes = await conn.scalars(
                select(CheckpointRow.size).where(
                    CheckpointRow.stream == STREAM, CheckpointRow.size > self._top_checkpoint
                )
            )
            rows = (
                await conn.execute(
                    select(AnchorRow.size, AnchorRow.status).where(AnchorRow.stream == STREAM)
                )
            ).all()
        now = time.monotonic()
        for size in sizes:
            self.checkpoints.setdefault(int(size), now)
            self._top_checkpoint = max(self._top_checkpoint, int(size))
        for size, status in rows:
            self.anchors.setdefault((int(size), str(status)), now)
        self.polls += 1
        self.poll_seconds += now - started

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.poll()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
        await self.poll()

    def stage_times(self, stage: str) -> dict[int, float]:
        """size -> first time an anchor of that size was at ``stage`` or beyond (an anchor
        can pass a stage between two polls: mined and final in one worker pass)."""
        if stage == "checkpoint":
            return dict(self.checkpoints)
        later = STAGES[STAGES.index(stage) :]
        statuses = {"sent": "pending"} | {s: s for s in ("mined", "final")}
        wanted = {statuses[s] for s in later}
        out: dict[int, float] = {}
        for (size, status), seen in self.anchors.items():
            if status in wanted:
                out[size] = min(out.get(size, math.inf), seen)
        return out


class Coverage:
    """For a sequence number, the first time any point of size > seq was reached."""

    def __init__(self, times: Mapping[int, float]) -> None:
        self._sizes = sorted(times)
        suffix: list[float] = []
        best = math.inf
        for size in reversed(self._sizes):
            best = min(best, times[size])
            suffix.append(best)
        self._first = list(reversed(suffix))

    def at(self, seq: int) -> float | None:
        i = bisect_left(self._sizes, seq + 1)
        return self._first[i] if i < len(self._sizes) else None


# -- load -----------------------------------------------------------------------------------


def call_record(i: int) -> PendingRecord:
    return PendingRecord(
        stream=STREAM,
        kind="data",
        recorded_at=dt.datetime.now(dt.UTC),
        merchant_id="m-001",
        scenario_id="enterprise-credit",
        dataset_id="enterprises",
        decision="allow",
        body={
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
        },
    )


@dataclass(slots=True)
class Load:
    """Open-loop load: ``rate`` appends per second whatever the commit latency."""

    writer: LogWriter
    rate: float
    sample_every: int
    phase: str = "warmup"
    samples: list[Sample] = field(default_factory=list)
    issued: Counter[str] = field(default_factory=Counter)
    durable: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    size: int = 0
    """Stream size (highest durable sequence + 1) seen by this load."""
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def _append(self, i: int, phase: str) -> None:
        issued = time.monotonic()
        try:
            entry = await self.writer.append(call_record(i))
        except Exception as exc:  # counted, the load goes on
            self.errors[type(exc).__name__] += 1
            return
        durable = time.monotonic()
        self.durable[phase] += 1
        self.size = max(self.size, entry.seq + 1)
        if i % self.sample_every == 0:
            self.samples.append(Sample(phase, entry.seq, issued, durable))

    async def run(self, stop: asyncio.Event) -> None:
        start = time.monotonic()
        sent = 0
        while not stop.is_set():
            due = int((time.monotonic() - start) * self.rate)
            while sent < due:
                self.issued[self.phase] += 1
                task = asyncio.create_task(self._append(sent, self.phase))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                sent += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.01)
        if self._tasks:
            await asyncio.gather(*self._tasks)


# -- chain ------------------------------------------------------------------------------------


async def chain_round_trips(url: str, count: int) -> list[float]:
    """Seconds to send one value transfer (dev account to itself, gas and fees given, so a
    single ``eth_sendTransaction``) and read its receipt, ``count`` times in a row."""
    w3: AsyncWeb3[Any] = AsyncWeb3(AsyncHTTPProvider(url, exception_retry_configuration=None))
    try:
        dev = (await w3.eth.accounts)[0]
        base = int((await w3.eth.get_block("latest")).get("baseFeePerGas", 0) or 0)
        tip = 10**9
        out = []
        for _ in range(count):
            started = time.monotonic()
            tx_hash = await w3.eth.send_transaction(
                {
                    "from": dev,
                    "to": dev,
                    "value": Wei(0),
                    "gas": 21_000,
                    "maxFeePerGas": Wei(2 * base + tip),
                    "maxPriorityFeePerGas": Wei(tip),
                }
            )
            while True:
                try:
                    await w3.eth.get_transaction_receipt(tx_hash)
                    break
                except TransactionNotFound:
                    await asyncio.sleep(0.002)
            out.append(time.monotonic() - started)
        return out
    finally:
        await w3.provider.disconnect()


async def mining_mode(url: str, blocks: int = 10) -> dict[str, Any]:
    """How the node mines, asked of the node: ``automine`` (a block per transaction) or, if
    not, the mean block interval over the last ``blocks`` blocks (timestamps in seconds)."""
    w3: AsyncWeb3[Any] = AsyncWeb3(AsyncHTTPProvider(url, exception_retry_configuration=None))
    try:
        automine = bool((await w3.provider.make_request("anvil_getAutomine", []))["result"])
        interval: float | None = None
        head = int(await w3.eth.block_number)
        if not automine and head > blocks:
            newest = (await w3.eth.get_block(head))["timestamp"]
            oldest = (await w3.eth.get_block(head - blocks))["timestamp"]
            interval = (newest - oldest) / blocks
        return {"automine": automine, "block_interval_s": interval}
    finally:
        await w3.provider.disconnect()


def describe_chain(own: bool, mining: Mapping[str, Any]) -> str:
    if mining["automine"]:
        blocks = "a block per transaction"
    elif mining["block_interval_s"] is None:
        blocks = "interval mining"
    else:
        blocks = f"a block every {mining['block_interval_s']:.2f} s"
    who = "run by the bench, gateway chain 'rpc'" if own else "run by the gateway, chain 'anvil'"
    return f"anvil {who} ({blocks}, read from the node)"


async def integrity(gateway: Gateway) -> dict[str, Any]:
    """Each (stream, size) anchored at most once, on chain and in the ``anchors`` table."""
    assert gateway.anchoring is not None
    assert gateway.anchoring.worker is not None
    worker = gateway.anchoring.worker
    registry = worker.registry
    events = await registry.anchored_events()
    on_chain = Counter((e.stream_id, e.size) for e in events)
    duplicates = sorted(f"{sid.hex()[:8]}@{size}" for (sid, size), n in on_chain.items() if n > 1)
    increasing = True
    last: dict[bytes, int] = {}
    for event in events:
        if event.size <= last.get(event.stream_id, 0):
            increasing = False
        last[event.stream_id] = event.size
    here = (AnchorRow.chain_id == worker.chain_id, AnchorRow.contract == registry.address)
    async with gateway.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(AnchorRow.id, AnchorRow.stream, AnchorRow.size, AnchorRow.status)
                .add_columns(AnchorRow.root, AnchorRow.tx_hash, AnchorRow.requeues)
                .where(*here)
            )
        ).all()
        txs = (
            await conn.execute(
                select(
                    AnchorTransactionRow.anchor_id, AnchorTransactionRow.status, func.count()
                ).group_by(AnchorTransactionRow.anchor_id, AnchorTransactionRow.status)
            )
        ).all()
    db_keys = Counter((str(r.stream), int(r.size)) for r in rows)
    db_duplicates = sorted(f"{s}@{n}" for (s, n), c in db_keys.items() if c > 1)
    statuses = Counter(str(r.status) for r in rows)
    tx_statuses: Counter[str] = Counter()
    mined_per_anchor: Counter[int] = Counter()
    for anchor_id, status, n in txs:
        tx_statuses[str(status)] += int(n)
        if status == "mined":
            mined_per_anchor[int(anchor_id)] += int(n)
    chain_set = {(e.stream_id, e.size, e.root, e.tx_hash) for e in events}
    final_rows = {
        (stream_id(str(r.stream)), int(r.size), bytes(r.root), bytes(r.tx_hash))
        for r in rows
        if r.status == "final"
    }
    recorded = {
        (stream_id(str(r.stream)), int(r.size)) for r in rows if r.status in ("mined", "final")
    }
    result = {
        "chain_events": len(events),
        "chain_distinct": len(on_chain),
        "chain_duplicates": duplicates,
        "chain_sizes_increasing": increasing,
        "db_anchors": dict(statuses),
        "db_duplicates": db_duplicates,
        "db_transactions": dict(tx_statuses),
        "anchors_with_two_mined_tx": sum(1 for n in mined_per_anchor.values() if n > 1),
        "requeues": sum(int(r.requeues) for r in rows),
        "final_anchors_on_chain": final_rows <= chain_set,
        "chain_events_recorded": all((e.stream_id, e.size) in recorded for e in events),
    }
    result["ok"] = (
        not duplicates
        and not db_duplicates
        and increasing
        and result["anchors_with_two_mined_tx"] == 0
        and result["final_anchors_on_chain"]
        and result["chain_events_recorded"]
    )
    return result


# -- statistics -------------------------------------------------------------------------------


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "median": quantile(values, 0.5),
        "p95": quantile(values, 0.95),
        "max": max(values),
        "mean": sum(values) / len(values),
    }


# -- the run ----------------------------------------------------------------------------------


async def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(step)
    return True


def git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (uncommitted changes in the tree)" if dirty else "")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.name}: {record.getMessage()}")


async def prepare_own_chain(
    settings: Settings, block_time: float | None
) -> tuple[Settings, AnvilBackend]:
    """Start anvil (a block every ``block_time`` seconds; None: a block per transaction),
    deploy the registry for the gateway's anchoring account, and return settings that point
    the gateway at it as an ``rpc`` chain."""
    backend = AnvilBackend(settings.data_dir / "bench-chain", block_time=block_time)
    await backend.start()
    keystore = Keystore.open(settings.keystore_path, keystore_passphrase(settings))
    info = keystore.generate(KeyPurpose.CHAIN_ACCOUNT, now=dt.datetime.now(dt.UTC))
    account = Account.from_key(keystore.chain_account_private_key(info.kid)).address
    engine = create_engine(settings.resolved_database_url)
    try:
        registry = await ensure_registry(engine, backend, anchoring_account=account)
    finally:
        await engine.dispose()
    assert backend.url is not None
    chained = settings.replace(
        chain="rpc", chain_rpc_url=backend.url, chain_contract=registry.address
    )
    return chained, backend


async def run(args: argparse.Namespace) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="dsgw-anchor-lag-"))
    collected = _Collect()
    gateway_log = logging.getLogger("gateway")
    gateway_log.setLevel(logging.INFO)
    file_handler = logging.FileHandler(data_dir / "gateway.log")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    gateway_log.addHandler(file_handler)
    gateway_log.addHandler(collected)
    settings = load_settings(
        None,
        environ={},
        data_dir=data_dir / "data",
        keystore_passphrase=secrets.token_urlsafe(24),
        chain="anvil",
        chain_confirmations=args.confirmations,
        checkpoint_every_seconds=args.checkpoint_seconds,
        checkpoint_every_records=args.checkpoint_records,
    )
    await initialise(settings)
    own: AnvilBackend | None = None
    gateway: Gateway | None = None
    load_avg = [os.getloadavg()]
    try:
        # The gateway restarts its own anvil within ~2 s of its exit: an outage needs a node
        # it does not own.
        if args.outage > 0 or args.block_time is not None:
            block_time = args.block_time
            if block_time is None:
                block_time = dev_block_time(args.confirmations)
            settings, own = await prepare_own_chain(settings, block_time)
        opened = time.monotonic()
        gateway = await Gateway.open(settings)
        gateway.checkpointer.start()
        anchoring = gateway.anchoring
        assert anchoring is not None
        await asyncio.wait_for(anchoring.ready.wait(), 120)
        ready_s = time.monotonic() - opened
        chain = own if own is not None else anchoring.backend
        assert isinstance(chain, AnvilBackend)
        assert chain.url is not None
        worker = anchoring.worker
        assert worker is not None

        rt_before = await chain_round_trips(chain.url, args.probes)

        observer = Observer(gateway.engine, args.observe_interval)
        load = Load(gateway.log, args.rate, args.sample_every)
        stop_load, stop_observer = asyncio.Event(), asyncio.Event()
        observer_task = asyncio.create_task(observer.run(stop_observer))
        load_task = asyncio.create_task(load.run(stop_load))
        marks: dict[str, float] = {}

        def final_covers(size: int) -> bool:
            return any(s >= size for s, status in observer.anchors if status == "final")

        await asyncio.sleep(args.warmup)
        load.phase = "steady"
        marks["steady_start"] = time.monotonic()
        await asyncio.sleep(args.duration)
        load.phase = "settle"
        marks["steady_end"] = time.monotonic()
        steady_size = load.size
        settled = await wait_until(lambda: final_covers(steady_size), args.timeout)
        marks["settled"] = time.monotonic()

        outage: dict[str, Any] | None = None
        if args.outage > 0:
            assert own is not None  # never stop the gateway's own node: it restarts it
            load.phase = "outage"
            marks["stop_called"] = time.monotonic()
            await chain.stop()
            marks["down"] = time.monotonic()
            size_down = load.size
            await asyncio.sleep(args.outage)
            failures = worker.health.consecutive_failures
            marks["start_called"] = time.monotonic()
            await chain.start()
            marks["up"] = time.monotonic()
            load.phase = "recovery"
            size_up = load.size
            await observer.poll()
            checkpoint_up = max(observer.checkpoints, default=0)
            caught = await wait_until(lambda: final_covers(size_up), args.timeout)
            marks["caught_up"] = time.monotonic()
            up = marks["up"]
            after_up = [t for (_, status), t in observer.anchors.items() if t >= up]
            final_times = observer.stage_times("final")

            def final_at(size: int) -> float | None:
                hits = [t for s, t in final_times.items() if s >= size]
                return min(hits) - up if hits else None

            outage = {
                "down_s": up - marks["down"],
                "stop_s": marks["down"] - marks["stop_called"],
                "start_s": marks["up"] - marks["start_called"],
                "records_while_down": size_up - size_down,
                "checkpoints_while_down": sum(
                    1 for t in observer.checkpoints.values() if marks["down"] <= t < up
                ),
                "failed_passes": failures,
                "checkpoint_at_up": checkpoint_up,
                "size_at_up": size_up,
                "first_anchor_activity_s": min(after_up) - up if after_up else None,
                "checkpoint_backlog_final_s": final_at(checkpoint_up),
                "records_backlog_final_s": final_at(size_up),
                "caught_up": caught,
            }

        stop_load.set()
        await load_task
        marks["load_end"] = time.monotonic()
        last_size = load.size
        drained = await wait_until(lambda: final_covers(last_size), args.timeout)
        # Before the probes below: their blocks add confirmations.
        async with gateway.engine.connect() as conn:
            at_drain = {
                f"{size}": str(status)
                for size, status in await conn.execute(
                    select(AnchorRow.size, AnchorRow.status)
                    .where(AnchorRow.stream == STREAM, AnchorRow.status != "superseded")
                    .order_by(AnchorRow.size.desc())
                    .limit(3)
                )
            }
        stop_observer.set()
        await observer_task
        rt_after = await chain_round_trips(chain.url, args.probes)
        mining = await mining_mode(chain.url)
        checks = await integrity(gateway)
        load_avg.append(os.getloadavg())
    finally:
        if gateway is not None:
            await gateway.close()
        if own is not None:
            await own.close()
        gateway_log.removeHandler(file_handler)
        gateway_log.removeHandler(collected)
        file_handler.close()
        if args.keep:
            print(f"kept {data_dir}", file=sys.stderr)
        else:
            shutil.rmtree(data_dir, ignore_errors=True)

    interval = float(args.checkpoint_seconds)
    round_trip = quantile(rt_before + rt_after, 0.5)
    coverage = {stage: Coverage(observer.stage_times(stage)) for stage in STAGES}
    lags: dict[str, dict[str, Any]] = {}
    for phase in REPORTED_PHASES:
        samples = [s for s in load.samples if s.phase == phase]
        if not samples:
            continue
        entry: dict[str, Any] = {"samples": len(samples)}
        for stage in STAGES:
            values = []
            uncovered = 0
            for sample in samples:
                at = coverage[stage].at(sample.seq)
                if at is None:
                    uncovered += 1
                else:
                    values.append(at - sample.durable)
            stats = summary(values)
            entry[stage] = {
                "seconds": stats,
                "per_interval": (
                    None if stats is None else {k: v / interval for k, v in stats.items()}
                ),
                "per_round_trip": (
                    None if stats is None else {k: v / round_trip for k, v in stats.items()}
                ),
                "uncovered": uncovered,
            }
        entry["append_latency"] = summary([s.durable - s.issued for s in samples])
        lags[phase] = entry

    # Per anchor, between the steady marks: where the time goes after the checkpoint.
    times = {stage: observer.stage_times(stage) for stage in STAGES}
    window = (marks["steady_start"], marks["steady_end"])
    steady_ckpts = sorted(
        (t, s) for s, t in observer.checkpoints.items() if window[0] <= t <= window[1]
    )
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(steady_ckpts)]
    steps: dict[str, list[float]] = {
        "checkpoint_to_sent": [],
        "sent_to_mined": [],
        "mined_to_final": [],
    }
    for t_ckpt, size in steady_ckpts:
        sent, mined, final = (times[s].get(size) for s in ("sent", "mined", "final"))
        if sent is not None:
            steps["checkpoint_to_sent"].append(sent - t_ckpt)
        if sent is not None and mined is not None:
            steps["sent_to_mined"].append(mined - sent)
        if mined is not None and final is not None:
            steps["mined_to_final"].append(final - mined)
    anchored_steady = sum(1 for _, s in steady_ckpts if s in times["final"])

    return {
        "config": {
            "chain": describe_chain(own is not None, mining),
            "chain_run_by": "bench" if own is not None else "gateway",
            "gateway_chain": settings.chain.kind,
            "block_time_requested": args.block_time,
            "mining": mining,
            "confirmations": args.confirmations,
            "checkpoint_every_seconds": args.checkpoint_seconds,
            "checkpoint_every_records": args.checkpoint_records,
            "rate": args.rate,
            "duration": args.duration,
            "warmup": args.warmup,
            "outage": args.outage,
            "sample_every": args.sample_every,
            "observe_interval": args.observe_interval,
            "store": "sqlite",
        },
        "commit": git_commit(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {"nproc": os.cpu_count(), "loadavg_start_end": load_avg},
        "anchoring_ready_s": ready_s,
        "baselines": {
            "checkpoint_interval_s": interval,
            "round_trip_s": round_trip,
            "round_trip_before": summary(rt_before),
            "round_trip_after": summary(rt_after),
        },
        "records": {
            "issued": dict(load.issued),
            "durable": dict(load.durable),
            "errors": dict(load.errors),
            "final_size": load.size,
        },
        "lag": lags,
        "steady_anchors": {
            "checkpoints": len(steady_ckpts),
            "anchored_final": anchored_steady,
            "checkpoint_gap": summary(gaps),
            **{name: summary(values) for name, values in steps.items()},
        },
        "outage": outage,
        "settled": settled,
        "drained": drained,
        "newest_anchors_after_drain": at_drain,
        "observer": {
            "polls": observer.polls,
            "mean_poll_ms": 1000 * observer.poll_seconds / max(1, observer.polls),
        },
        "integrity": checks,
        "warnings": collected.lines,
    }


# -- output -----------------------------------------------------------------------------------


def _ratio(value: float) -> str:
    return f"{value:>9.1f}" if value < 100 else f"{value:>9.0f}"


def print_report(result: Mapping[str, Any]) -> None:
    config, base = result["config"], result["baselines"]
    interval, rt = base["checkpoint_interval_s"], base["round_trip_s"]
    records = result["records"]
    print(f"anchoring lag, commit {result['commit']}, {result['date']}")
    print(
        f"chain: {config['chain']}, confirmations {config['confirmations']}; checkpoint every "
        f"{config['checkpoint_every_seconds']} s or {config['checkpoint_every_records']} records"
    )
    print(
        f"load: {config['rate']:g} records/s offered, {config['duration']:g} s steady, "
        f"{sum(records['durable'].values())} records durable, errors {records['errors'] or 0}; "
        f"1 in {config['sample_every']} sampled; store polled every "
        f"{1000 * config['observe_interval']:.0f} ms"
    )
    print(
        f"load average {result['machine']['loadavg_start_end'][0][0]:.2f} -> "
        f"{result['machine']['loadavg_start_end'][-1][0]:.2f} on {result['machine']['nproc']} CPUs"
    )
    print()
    before, after = base["round_trip_before"], base["round_trip_after"]
    print("baselines (this run)")
    print(f"  T  checkpoint interval                  {interval:8.3f} s")
    print(
        f"  RT chain round trip, send + receipt     {1000 * rt:8.2f} ms  (median; before "
        f"{1000 * before['median']:.2f}, after {1000 * after['median']:.2f} ms)"
    )
    print()
    header = (
        f"{'phase':<9}{'lag to':<11}{'n':>6}{'p50 s':>8}{'p95 s':>8}{'max s':>8}"
        f"{'p50/T':>8}{'p95/T':>7}{'max/T':>7}{'p50/RT':>9}{'p95/RT':>9}{'max/RT':>9}"
    )
    print(header)
    print("-" * len(header))
    for phase, entry in result["lag"].items():
        for stage in STAGES:
            row = entry[stage]
            s, t, r = row["seconds"], row["per_interval"], row["per_round_trip"]
            n = entry["samples"] - row["uncovered"]
            if s is None:
                print(f"{phase:<9}{stage:<11}{n:>6}  (not reached)")
                continue
            print(
                f"{phase:<9}{stage:<11}{n:>6}{s['median']:>8.2f}{s['p95']:>8.2f}{s['max']:>8.2f}"
                f"{t['median']:>8.2f}{t['p95']:>7.2f}{t['max']:>7.2f}"
                f"{_ratio(r['median'])}{_ratio(r['p95'])}{_ratio(r['max'])}"
            )
    print()
    steady = result["steady_anchors"]

    def med(name: str) -> str:
        value = steady[name]
        return "-" if value is None else f"{value['median']:.3f} s (max {value['max']:.3f})"

    print(
        f"steady anchors: {steady['checkpoints']} checkpoints, {steady['anchored_final']} "
        "anchored final themselves (the rest covered by a later anchor)"
    )
    print(f"  checkpoint gap           {med('checkpoint_gap')}")
    print(f"  checkpoint -> tx sent    {med('checkpoint_to_sent')}")
    print(f"  tx sent -> mined (seen)  {med('sent_to_mined')}")
    print(f"  mined -> final           {med('mined_to_final')}")
    outage = result["outage"]
    if outage is not None:
        print()
        print(
            f"outage: the bench's anvil down {outage['down_s']:.1f} s "
            f"(stop {outage['stop_s']:.2f} s, start {outage['start_s']:.2f} s); "
            f"{outage['records_while_down']} records and "
            f"{outage['checkpoints_while_down']} checkpoints meanwhile; worker failed passes "
            f"{outage['failed_passes']}"
        )

        def since_up(name: str) -> str:
            value = outage[name]
            if value is None:
                return "not reached"
            return f"{value:.2f} s  ({value / interval:.2f} T, {value / rt:.0f} RT)"

        print(f"  chain back -> first anchor activity        {since_up('first_anchor_activity_s')}")
        print(
            f"  chain back -> newest checkpoint final      {since_up('checkpoint_backlog_final_s')}"
            f"  (size {outage['checkpoint_at_up']})"
        )
        print(
            f"  chain back -> every outage record final    {since_up('records_backlog_final_s')}"
            f"  (size {outage['size_at_up']})"
        )
    checks = result["integrity"]
    print()
    print(
        f"integrity: {checks['chain_events']} Anchored events on chain, "
        f"{checks['chain_distinct']} distinct (stream, size), duplicates on chain: "
        f"{checks['chain_duplicates'] or 'none'}, sizes strictly increasing: "
        f"{checks['chain_sizes_increasing']}"
    )
    print(
        f"  anchors table: {checks['db_anchors']}, duplicate (stream, size): "
        f"{checks['db_duplicates'] or 'none'}; transactions {checks['db_transactions']}; "
        f"requeues {checks['requeues']}"
    )
    print(
        f"  final anchors found on chain: {checks['final_anchors_on_chain']}; chain events "
        f"recorded: {checks['chain_events_recorded']}"
    )
    verdict = "PASS" if checks["ok"] else "FAIL"
    print(f"  each (stream, size) anchored at most once: {verdict}")
    if not (result["settled"] and result["drained"]):
        print(
            "WARNING: some records were not anchored final within --timeout; newest anchors "
            f"(size: status) when the wait ended: {result['newest_anchors_after_drain']}"
        )
    if result["warnings"]:
        print()
        print(f"gateway warnings/errors ({len(result['warnings'])}):")
        for line in dict.fromkeys(result["warnings"]):
            print(f"  {line[:200]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=60.0, help="steady seconds (60)")
    parser.add_argument("--rate", type=float, default=300.0, help="records/s offered (300)")
    parser.add_argument("--warmup", type=float, default=3.0, help="unsampled seconds (3)")
    parser.add_argument(
        "--outage",
        type=float,
        default=10.0,
        help="seconds the bench's anvil is down; 0 skips the outage and, without --block-time, "
        "lets the gateway run its own anvil (10)",
    )
    parser.add_argument(
        "--checkpoint-seconds", type=int, default=5, help="checkpoint_every_seconds, T (5)"
    )
    parser.add_argument(
        "--checkpoint-records", type=int, default=10_000, help="checkpoint_every_records (10000)"
    )
    parser.add_argument("--confirmations", type=int, default=1, help="chain_confirmations (1)")
    parser.add_argument(
        "--block-time",
        type=float,
        default=None,
        help="the bench's anvil mines every SECONDS (default: a block per transaction; "
        "1 s with --confirmations > 1, as the gateway runs anvil)",
    )
    parser.add_argument("--sample-every", type=int, default=10, help="sample 1 in N records (10)")
    parser.add_argument(
        "--observe-interval", type=float, default=0.05, help="store poll seconds (0.05)"
    )
    parser.add_argument(
        "--probes", type=int, default=20, help="chain round trips before and after (20)"
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="max wait for anchors to be final (120)"
    )
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON ('-': stdout)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    if args.json == "-":
        print(json.dumps(result, indent=2))
    else:
        print_report(result)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    ok = result["integrity"]["ok"] and result["settled"] and result["drained"]
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
