"""What each governance step of the query path costs, measured in isolation, in one process.

The end-to-end benchmark (``bench/query_path.py``) says *how much* the governed path costs
over the bare one; this harness says *where*. It opens a real gateway on a fresh data dir
(same setup as the benchmark) and times, per call, the steps a governed query adds around
the connector fetch the bare server also does:

    .venv/bin/python bench/governance_steps.py [--rows 20000] [--n 3000] [--batch 13]

Times are wall-clock microseconds per call on an otherwise idle event loop (medians of
``--repeat`` runs of ``--n`` calls). Steps that hop to another thread (the connector fetch,
the log commit) include the hop; on a loaded machine a hop costs much more than here.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bare_server  # noqa: E402
import query_path  # noqa: E402

from connectors import synthetic  # noqa: E402
from connectors.base import Condition, RowQuery  # noqa: E402
from gateway.api.bodies import parse_json_body  # noqa: E402
from gateway.api.problems import json_bytes  # noqa: E402
from gateway.cli.demo import DEMO_SCENARIO  # noqa: E402
from gateway.dataplane.values import json_value  # noqa: E402
from gateway.ledger.records import CallRecord  # noqa: E402
from gateway.runtime import Gateway  # noqa: E402
from gateway.settings import load_settings  # noqa: E402

DATASET = "enterprises"


async def timed(
    fn: Callable[[], Awaitable[Any]] | Callable[[], Any], n: int, repeat: int
) -> tuple[float, float]:
    """Medians over ``repeat`` runs of the wall time and the process CPU time (all
    threads) of one call, in microseconds."""
    wall, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            value = fn()
            if asyncio.iscoroutine(value):
                await value
        wall.append((time.perf_counter() - t0) / n * 1e6)
        cpu.append((time.process_time() - c0) / n * 1e6)
    return statistics.median(wall), statistics.median(cpu)


async def timed_batches(
    make: Callable[[], Awaitable[Any]], batch: int, n: int, repeat: int
) -> tuple[float, float]:
    """Per-call times when ``batch`` calls run concurrently (how group commit sees them)."""
    wall, cpu = [], []
    rounds = max(1, n // batch)
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(rounds):
            await asyncio.gather(*(make() for _ in range(batch)))
        wall.append((time.perf_counter() - t0) / (rounds * batch) * 1e6)
        cpu.append((time.process_time() - c0) / (rounds * batch) * 1e6)
    return statistics.median(wall), statistics.median(cpu)


def strict_json(raw: bytes) -> Any:
    """What ``gateway.api.bodies.read_json`` does to the body after reading it."""
    return parse_json_body(raw)


async def run(
    args: argparse.Namespace, data_dir: Path
) -> list[tuple[str, tuple[float, float], str]]:
    passphrase = secrets.token_urlsafe(24)
    query_path.generate_sources(data_dir, args.rows)
    client_id, secret = await query_path.setup_gateway(data_dir, passphrase)
    settings = load_settings(None, environ={}, data_dir=data_dir, keystore_passphrase=passphrase)
    gateway = await Gateway.open(settings)
    out: list[tuple[str, tuple[float, float], str]] = []
    n, repeat = args.n, args.repeat
    try:
        client = await gateway.tokens.authenticate(_credentials(client_id, secret, gateway))
        issued = await gateway.tokens.issue(client, f"scenario:{DEMO_SCENARIO}")
        token = issued.access_token
        code = synthetic.enterprise_identity(query_path.SEED, 0)[0]
        raw = json.dumps({"filters": {"credit_code": code}}).encode()
        snapshot = await gateway.policy.current()
        claims = await gateway.tokens.verify(token)
        dataset = snapshot.datasets[DATASET]
        connector = await gateway.connectors.get(dataset)
        fields = bare_server.scenario_fields()

        async def bare_fetch() -> Any:
            return await connector.fetch(
                RowQuery(
                    fields=fields,
                    conditions=(Condition("credit_code", "eq", code),),
                    order_by=dataset.key_fields,
                    limit=50,
                )
            )

        rows = await bare_fetch()
        bare_doc = {"rows": [{k: json_value(v) for k, v in r.items()} for r in rows]}

        def new_record() -> CallRecord:
            record = CallRecord(
                kind="data",
                started_at=gateway.clock.now(),
                method="POST",
                path=query_path.GOVERNED_PATH,
                remote="127.0.0.1",
            )
            record.merchant_id, record.client_id = claims.merchant_id, claims.client_id
            record.agreement_id, record.token_id = claims.agreement_id, claims.jti
            record.scenario_id, record.dataset_id, record.mode = DEMO_SCENARIO, DATASET, "query"
            return record

        async def execute() -> dict[str, Any]:
            return await gateway.dataplane.execute(
                snapshot, claims, DEMO_SCENARIO, DATASET, "query", strict_json(raw), new_record()
            )

        result = await execute()
        record = new_record()
        await gateway.dataplane.execute(
            snapshot, claims, DEMO_SCENARIO, DATASET, "query", strict_json(raw), record
        )
        record.decision, record.status = "allow", 200
        body = json_bytes(result)
        record.response_sha256 = hashlib.sha256(body).hexdigest()

        async def append() -> Any:
            return await gateway.log.append(new_record().to_pending(gateway.clock.now()))

        class InstantConnector:
            """Answers with the rows fetched above, without a thread hop: what remains of
            ``execute`` is governance alone."""

            async def fetch(self, query: RowQuery) -> Any:
                return rows

        async def instant(dataset: Any) -> Any:
            return InstantConnector()

        real_get = gateway.connectors.get
        gateway.connectors.get = instant  # type: ignore[method-assign]
        governance_only = await timed(execute, n, repeat)
        gateway.connectors.get = real_get  # type: ignore[method-assign]

        def build_rows() -> Any:
            from gateway.ledger.log import _build_row

            pending = record.to_pending(gateway.clock.now())
            return _build_row(
                "sha256", pending, pending.payload(), secrets.token_bytes(16), (1, bytes(32))
            )

        steps: list[tuple[str, Callable[[], Any], str]] = [
            (
                "connector fetch (the bare server does this too)",
                bare_fetch,
                "connectors/sql.py SqlConnector.fetch",
            ),
            (
                "dataplane.execute with the real connector",
                execute,
                "gateway/dataplane/service.py DataPlane.execute",
            ),
            (
                "policy.current() (one os.stat of policy.epoch)",
                gateway.policy.current,
                "gateway/governance/policy.py PolicyStore.current",
            ),
            (
                "tokens.verify(token), cached (incl. policy.current)",
                lambda: gateway.tokens.verify(token),
                "gateway/authorization/tokens.py TokenService.verify",
            ),
            (
                "strict JSON body parsing (read_json)",
                lambda: strict_json(raw),
                "gateway/api/bodies.py read_json",
            ),
            ("plain json.loads (bare)", lambda: json.loads(raw), "bench/bare_server.py"),
            ("CallRecord() + clock.now()", new_record, "gateway/api/app.py logged"),
            (
                "json_bytes(result) (governed)",
                lambda: json_bytes(result),
                "gateway/api/problems.py json_bytes",
            ),
            (
                "json.dumps(rows) (bare)",
                lambda: json.dumps(bare_doc, ensure_ascii=False).encode(),
                "bench/bare_server.py",
            ),
            (
                "sha256(response body)",
                lambda: hashlib.sha256(body).hexdigest(),
                "gateway/api/app.py logged",
            ),
            (
                "to_pending() + canonical payload()",
                lambda: record.to_pending(gateway.clock.now()).payload(),
                "gateway/ledger/records.py, canonical.py",
            ),
            (
                "  + salt, leaf and chain hashes, row dict (_build_row)",
                build_rows,
                "gateway/ledger/log.py _build_row",
            ),
        ]
        for name, fn, where in steps:
            out.append((name, await timed(fn, n, repeat), where))
            if fn is execute:
                out.append(
                    (
                        "dataplane.execute, instant connector (governance)",
                        governance_only,
                        "gateway/dataplane/service.py DataPlane.execute",
                    )
                )
        out.append(
            (
                f"log.append, {args.batch} concurrent (group commit)",
                await timed_batches(append, args.batch, n, repeat),
                "gateway/ledger/log.py LogWriter",
            )
        )
        out.append(
            (
                "log.append, 1 at a time (one commit each)",
                await timed(append, max(50, n // 20), repeat),
                "gateway/ledger/log.py LogWriter",
            )
        )
        out.append(
            (
                f"for comparison: raw sqlite3 insert of {args.batch} rows + commit, per row",
                raw_sqlite(data_dir, args.batch, n, repeat),
                "sqlite3 stdlib",
            )
        )
    finally:
        await gateway.close()
    return out


def raw_sqlite(data_dir: Path, batch: int, n: int, repeat: int) -> tuple[float, float]:
    """The floor for a durable group commit: stdlib sqlite3, WAL, synchronous=FULL, one
    executemany of ``batch`` rows the size of a call record, then COMMIT."""
    import sqlite3

    conn = sqlite3.connect(data_dir / "raw.sqlite3", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, payload TEXT, h BLOB)")
    payload, seq = "x" * 900, 0
    wall, cpu = [], []
    rounds = max(1, n // batch)
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(rounds):
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO t VALUES (?, ?, ?)",
                [(seq + i, payload, secrets.token_bytes(32)) for i in range(batch)],
            )
            conn.execute("COMMIT")
            seq += batch
        wall.append((time.perf_counter() - t0) / (rounds * batch) * 1e6)
        cpu.append((time.process_time() - c0) / (rounds * batch) * 1e6)
    conn.close()
    return statistics.median(wall), statistics.median(cpu)


def _credentials(client_id: str, secret: str, gateway: Gateway) -> Any:
    import base64

    from gateway.authorization.clients import ClientCredentials

    basic = "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return ClientCredentials.from_request({"grant_type": "client_credentials"}, basic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--n", type=int, default=3000, help="calls per timing run")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batch", type=int, default=13, help="concurrent appends per batch")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="dsgw-steps-"))
    try:
        rows = asyncio.run(run(args, data_dir))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    print(f"{'step':<58} {'wall µs':>8} {'CPU µs':>8}  where")
    for name, (wall, cpu), where in rows:
        print(f"{name:<58} {wall:>8.1f} {cpu:>8.1f}  {where}")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\n(load average at the end, {dt.datetime.now():%H:%M:%S}: {load})")


if __name__ == "__main__":
    main()
