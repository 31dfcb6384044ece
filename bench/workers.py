"""Throughput of ``dsgw serve --workers W``: one port, W processes, measured for several W.

The query of ``query_path.py`` (``enterprises`` by credit code, the ``enterprise-credit``
scenario, one row per answer) under the same closed-loop load (``bench/load.py``), served
by ``dsgw serve --workers W --port P`` for each W of ``--workers`` (default 1, 2, 4), on each
store of ``--stores``: SQLite, and PostgreSQL in a fresh database created beside
``--database-url`` and dropped at the end. Quotas are shared through Redis (``redis_url``,
needed for W > 1 and set for every W so that each W runs the same quota code), under a
deployment name of this run whose keys are deleted at the end. No chain (``chain = "none"``):
the serving path only.

Every run starts a fresh server, waits until W sockets listen on the port, measures, and
stops the server with SIGTERM (it commits what is queued) before the next. Rounds take the
W values in turn, in reverse order every other round, and the report uses the median per W
and ratios against W = 1 of the same invocation.

Measured in the window, besides what ``load.py`` reports (requests/s, latency, the load
generator's own CPU, the machine's busy CPU):

- the server's CPU: every process of the tree under ``dsgw serve`` (parent, workers,
  multiprocessing's resource tracker), from ``/proc``; per worker, too;
- the store's CPU: PostgreSQL backends of this run's database, PostgreSQL's shared
  processes (checkpointer, WAL writer...) and ``redis-server``;
- the call-log writers: records per group commit (the gateway's own
  ``dsgw_log_commit_batch_records`` histogram, scraped from ``/metrics`` before and after)
  and how often the ``calls`` stream's write lock was held, sampled every
  ``--lock-sample-ms``: on PostgreSQL the advisory lock in ``pg_locks`` (holders and
  waiters), on SQLite the WAL write lock (byte 120 of ``-shm``) in ``/proc/locks``
  (holders only: SQLite's busy handler polls instead of queueing);
- per worker (W > 1): its cores, the client connections it holds (``/proc/net/tcp`` and its
  file descriptors), the data calls it answered and its records per commit (the multiprocess
  metric files of ``<data dir>/metrics``), and whether it is the leader (its log line).

So that the server's CPU is read at the very instants ``load.py`` opens and closes its
window, the load generator runs as ``workers.py _load ...``: ``load.py`` itself with its
``process_cpu_seconds`` replaced by the process-tree sampler of this file.

Correctness, per run and at the end: the ``data``/``allow`` records committed equal the 200
answers the clients read, every answer's record id is in the store and all are distinct
(across all workers), and the ``calls`` stream's sequence has no gap.

    .venv/bin/python bench/workers.py [--workers 1,2,4] [--stores sqlite,postgresql]
        [--seconds 8] [--rounds 3] [--pin-server 1 --pin-client 0] [--nice N]
        [--set monitor_enabled=false] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import re
import secrets
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import query_path as qp  # noqa: E402
import wrk_load  # noqa: E402

ROOT = qp.ROOT
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The calls stream's PostgreSQL advisory lock: (namespace "dsgw", index of "calls" in
# gateway.ledger.log.STREAMS); pg_locks shows a two-int4 key as classid, objid, objsubid 2.
PG_LOCK_NAMESPACE = 0x64736777
PG_CALLS_LOCK_KEY = 0
# SQLite's WAL write lock: byte 120 of the -shm file (unix VFS, WAL_WRITE_LOCK).
SQLITE_WAL_WRITE_LOCK_BYTE = 120
PG_SHARED = (
    "checkpointer",
    "background writer",
    "walwriter",
    "autovacuum launcher",
    "logical replication launcher",
    "stats collector",
    "archiver",
)


# --- processes from /proc -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Proc:
    pid: int
    ppid: int
    comm: str
    cpu_s: float  # user + system, all threads
    reaped_s: float  # user + system of children it has waited for


def read_procs() -> dict[int, Proc]:
    procs: dict[int, Proc] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        head, _, rest = text.rpartition(")")
        fields = rest.split()
        # After "pid (comm)": state is fields[0], ppid [1], utime [11], stime [12],
        # cutime [13], cstime [14] (proc(5) fields 3, 4, 14-17).
        procs[int(entry.name)] = Proc(
            pid=int(entry.name),
            ppid=int(fields[1]),
            comm=head.split("(", 1)[1],
            cpu_s=(int(fields[11]) + int(fields[12])) / CLK_TCK,
            reaped_s=(int(fields[13]) + int(fields[14])) / CLK_TCK,
        )
    return procs


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def process_tree(procs: dict[int, Proc], root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for proc in procs.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in procs:
            tree.append(pid)
            todo.extend(children.get(pid, ()))
    return tree


def role_of(pid: int, root: int) -> str:
    if pid == root:
        return "parent"
    line = cmdline(pid)
    if "spawn_main" in line:
        return "worker"
    if "resource_tracker" in line:
        return "resource_tracker"
    return "other"


def snapshot(server_pid: int, pg_database: str) -> dict[str, Any]:
    """CPU seconds so far of the server's process tree (each process's own plus what it
    reaped, so a worker that exits moves its time to the parent instead of losing it), of
    PostgreSQL (this database's backends; shared processes) and of redis-server."""
    t = time.monotonic()
    procs = read_procs()
    tree = {
        pid: {
            "role": role_of(pid, server_pid),
            "cpu_s": procs[pid].cpu_s + procs[pid].reaped_s,
        }
        for pid in process_tree(procs, server_pid)
    }
    store = {"pg_backends": 0.0, "pg_shared": 0.0, "redis": 0.0}
    for proc in procs.values():
        if proc.comm == "redis-server":
            store["redis"] += proc.cpu_s
        elif proc.comm == "postgres":
            line = cmdline(proc.pid)
            title = line.split(": ", 2)[-1].strip() if ": " in line else ""
            if not title or title in PG_SHARED:  # the postmaster, or a shared process
                store["pg_shared"] += proc.cpu_s
            elif pg_database and f" {pg_database} " in f" {title} ":
                store["pg_backends"] += proc.cpu_s
    return {
        "t": t,
        "server_cpu_s": sum(p["cpu_s"] for p in tree.values()),
        "tree": {str(pid): p for pid, p in tree.items()},
        "store": store,
    }


def load_generator_main(argv: list[str]) -> None:
    """``workers.py _load SAMPLES PG_DATABASE <load.py arguments>``: run ``load.py`` with
    the server's CPU read from the whole process tree; write the two snapshots (window
    start and end) to SAMPLES."""
    samples_path, pg_database, *load_args = argv
    import load

    samples: list[dict[str, Any]] = []

    def tree_cpu_seconds(pid: int) -> float:
        taken = snapshot(pid, pg_database)
        samples.append(taken)
        return float(taken["server_cpu_s"])

    load.process_cpu_seconds = tree_cpu_seconds
    sys.argv = [str(BENCH / "load.py"), *load_args]
    load.main()
    Path(samples_path).write_text(json.dumps(samples))


# --- per worker: connections, calls, commits ------------------------------------------------


def worker_metrics(metrics_dir: Path) -> dict[str, dict[str, float]]:
    """Per worker pid, from the multiprocess files ``serve --workers`` keeps in
    ``<data dir>/metrics``: data calls answered, log commits and records committed."""
    from prometheus_client.mmap_dict import MmapedDict

    found: dict[str, dict[str, float]] = {}
    for path in metrics_dir.glob("*.db"):
        kind, _, pid = path.stem.rpartition("_")
        if kind not in ("counter", "histogram"):
            continue
        mine = found.setdefault(pid, {"data_calls": 0.0, "commits": 0.0, "records": 0.0})
        read: Any = MmapedDict.read_all_values_from_file  # untyped in prometheus_client
        for key, value, _ts, _pos in read(str(path)):
            metric, sample, labels, _help = json.loads(key)
            if metric == "dsgw_requests" and labels.get("kind") == "data":
                mine["data_calls"] += value
            elif metric == "dsgw_log_commit_batch_records":
                if sample.endswith("_sum"):
                    mine["records"] += value
                elif sample.endswith("_bucket"):  # stored per bucket, not cumulative
                    mine["commits"] += value
    return found


def established_per_process(port: int, pids: list[int]) -> dict[str, int]:
    """Established connections to ``port`` held by each of ``pids`` (which worker the
    kernel gave each client connection)."""
    suffix = f":{port:04X}"
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[1].endswith(suffix) and f[3] == "01":
                inodes.add(f[9])
    counts: dict[str, int] = {}
    for pid in pids:
        try:
            links = [os.readlink(e.path) for e in os.scandir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        counts[str(pid)] = sum(1 for link in links if link[8:-1] in inodes)
    return counts


class ConnectionSampler:
    """Every half second while the load runs, the connections each server process holds;
    keeps the sample with the most (the clients keep theirs open for the whole run)."""

    def __init__(self, port: int, pids: list[int]):
        self.port, self.pids = port, pids
        self.best: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="conn-sampler", daemon=True)

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            counts = established_per_process(self.port, self.pids)
            if sum(counts.values()) > sum(self.best.values()):
                self.best = counts


# --- the stream lock, sampled -----------------------------------------------------------------


class LockSampler:
    """Samples the ``calls`` stream's write lock in a thread while a run's load goes on:
    ``(monotonic time, holders, waiters)``; waiters are ``None`` where not observable."""

    def __init__(self, store: str, *, admin_dsn: str, database: str, shm: Path, every: float):
        self.store = store
        self.samples: list[tuple[float, int, int | None]] = []
        self._admin_dsn, self._database, self._shm, self._every = admin_dsn, database, shm, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lock-sampler", daemon=True)
        self.error = ""

    def __enter__(self) -> LockSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            if self.store == "postgresql":
                asyncio.run(self._pg())
            else:
                self._sqlite()
        except Exception as exc:  # a failed sampler loses figures, never the run
            self.error = f"{type(exc).__name__}: {exc}"

    async def _pg(self) -> None:
        import asyncpg

        # On the admin database, so that this connection is not one of the bench database's
        # backends whose CPU is counted.
        conn = await asyncpg.connect(self._admin_dsn)
        try:
            oid = await conn.fetchval(
                "SELECT oid FROM pg_database WHERE datname = $1", self._database
            )
            query = (
                "SELECT count(*) FILTER (WHERE granted), count(*) FILTER (WHERE NOT granted) "
                "FROM pg_locks WHERE locktype = 'advisory' AND database = $1 "
                "AND classid = $2::bigint::oid AND objid = $3::bigint::oid AND objsubid = 2"
            )
            while not self._stop.is_set():
                row = await conn.fetchrow(query, oid, PG_LOCK_NAMESPACE, PG_CALLS_LOCK_KEY)
                assert row is not None
                self.samples.append((time.monotonic(), int(row[0]), int(row[1])))
                await asyncio.sleep(self._every)
        finally:
            await conn.close()

    def _sqlite(self) -> None:
        st = self._shm.stat()
        ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        byte = str(SQLITE_WAL_WRITE_LOCK_BYTE)
        while not self._stop.is_set():
            held = 0
            for line in Path("/proc/locks").read_text().splitlines():
                f = line.split()
                # "1: POSIX  ADVISORY  WRITE 16532 fe:00:2146866 120 120"
                if len(f) >= 8 and f[5] == ident and f[3] == "WRITE" and f[6] == byte:
                    held += 1
            self.samples.append((time.monotonic(), held, None))
            time.sleep(self._every)

    def summary(self, start: float, end: float) -> dict[str, Any]:
        window = [s for s in self.samples if start <= s[0] <= end]
        if not window:
            return {"samples": 0, "error": self.error}
        waiting = [s[2] for s in window if s[2] is not None]
        return {
            "samples": len(window),
            "held_share": sum(1 for s in window if s[1] > 0) / len(window),
            "mean_waiters": statistics.fmean(waiting) if waiting else None,
            "error": self.error,
        }


# --- commit floor --------------------------------------------------------------------------


def sqlite_commit_floor(path: Path, n: int) -> float:
    """Median ms of a one-row commit with the gateway's pragmas (WAL, synchronous=FULL)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE probe (n INTEGER)")
        times = []
        for i in range(n):
            t0 = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO probe VALUES (?)", (i,))
            conn.execute("COMMIT")
            times.append(time.perf_counter() - t0)
    finally:
        conn.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return statistics.median(times) * 1000


async def pg_commit_floor(dsn: str, n: int) -> float:
    """Median ms of a one-row commit holding an advisory lock, as a log batch does."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE bench_commit_probe (n integer)")
        times = []
        for i in range(n):
            t0 = time.perf_counter()
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1, 99)", PG_LOCK_NAMESPACE)
                await conn.execute("INSERT INTO bench_commit_probe VALUES ($1)", i)
            times.append(time.perf_counter() - t0)
        await conn.execute("DROP TABLE bench_commit_probe")
    finally:
        await conn.close()
    return statistics.median(times) * 1000


# --- stores ----------------------------------------------------------------------------------


async def pg_execute(dsn: str, statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def pg_settings(dsn: str) -> dict[str, str]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        names = ("server_version", "fsync", "synchronous_commit", "wal_sync_method")
        return {name: str(await conn.fetchval(f"SHOW {name}")) for name in names}
    finally:
        await conn.close()


async def read_calls(url: str) -> tuple[int, dict[str, int], set[int], int | None]:
    """The ``calls`` stream's size, records by kind/decision, data/allow seqs, last seq."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            total = (
                await conn.execute(text("SELECT count(*) FROM log_entries WHERE stream = 'calls'"))
            ).scalar_one()
            by_kind = {
                f"{kind}/{decision}": int(n)
                for kind, decision, n in await conn.execute(
                    text(
                        "SELECT kind, decision, count(*) FROM log_entries "
                        "WHERE stream = 'calls' GROUP BY kind, decision"
                    )
                )
            }
            allowed = {
                int(row[0])
                for row in await conn.execute(
                    text(
                        "SELECT seq FROM log_entries WHERE stream = 'calls' AND kind = 'data' "
                        "AND decision = 'allow'"
                    )
                )
            }
            max_seq = (
                await conn.execute(text("SELECT max(seq) FROM log_entries WHERE stream = 'calls'"))
            ).scalar_one()
    finally:
        await engine.dispose()
    return int(total), by_kind, allowed, None if max_seq is None else int(max_seq)


async def issue_staff_client(data_dir: Path, passphrase: str, **overrides: Any) -> tuple[str, str]:
    """Operator credentials, for scraping ``/metrics``."""
    from gateway.authorization.roles import Role
    from gateway.governance.service import LOCAL_ADMIN
    from gateway.runtime import Gateway
    from gateway.settings import load_settings

    settings = load_settings(
        None, environ={}, data_dir=data_dir, keystore_passphrase=passphrase, **overrides
    )
    gateway = await Gateway.open(settings)
    try:
        issued = await gateway.governance.clients.issue_client(LOCAL_ADMIN, role=Role.OPERATOR)
        assert issued.secret
        return issued.client.client_id, issued.secret
    finally:
        await gateway.close()


# --- one run ---------------------------------------------------------------------------------


def staff_token(base: str, client_id: str, secret: str) -> str:
    import base64
    import urllib.parse

    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    form = urllib.parse.urlencode({"grant_type": "client_credentials", "scope": "admin"})
    status, _headers, body = qp.post(
        f"{base}/oauth/token",
        form.encode(),
        {"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"},
    )
    if status != 200:
        raise SystemExit(f"staff token request failed: {status} {body}")
    return str(body["access_token"])


def scrape(base: str, token: str) -> dict[str, float]:
    """The log writers' batch histogram and the worker gauge, summed over all workers."""
    from prometheus_client.parser import text_string_to_metric_families

    request = urllib.request.Request(
        f"{base}/metrics", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        text = resp.read().decode()
    wanted = {
        "dsgw_log_commit_batch_records_count": "commits",
        "dsgw_log_commit_batch_records_sum": "records",
        "dsgw_worker_processes": "workers",
    }
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted:
                found[wanted[sample.name]] = found.get(wanted[sample.name], 0.0) + sample.value
    return found


def listening_sockets(port: int) -> int:
    """Sockets in LISTEN on ``port`` (one per worker with SO_REUSEPORT)."""
    suffix = f":{port:04X}"
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[1].endswith(suffix) and f[3] == "0A":
                count += 1
    return count


@dataclass(frozen=True, slots=True)
class Store:
    kind: str  # "sqlite" | "postgresql"
    data_dir: Path
    config: Path
    url: str  # SQLAlchemy async URL to read the store
    pg_database: str
    admin_dsn: str


def placed(command: list[str], pin: str, nice: int) -> list[str]:
    """``command`` under ``taskset -c pin`` and ``nice -n nice`` when asked; both exec the
    command, so its pid is the one started."""
    if pin:
        command = ["taskset", "-c", pin, *command]
    if nice:
        command = ["nice", "-n", str(nice), *command]
    return command


def start_server(
    store: Store, workers: int, port: int, env: dict[str, str], args: argparse.Namespace, out: Path
) -> subprocess.Popen[bytes]:
    command = [
        str(qp.BIN / "dsgw"), "--config", str(store.config), "--data-dir", str(store.data_dir),
        "serve", "--workers", str(workers), "--port", str(port),
    ]  # fmt: skip
    command = placed(command, args.pin_server, args.nice)
    with out.open("wb") as sink:
        return subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)


def wait_listening(port: int, workers: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"dsgw serve exited with {proc.returncode} while starting")
        if listening_sockets(port) >= workers:
            return
        time.sleep(0.2)
    raise SystemExit(f"{workers} workers did not all listen on port {port} within {timeout} s")


def run_load(
    url: str,
    codes: Path,
    args: argparse.Namespace,
    server_pid: int,
    token: str,
    store: Store,
    samples: Path,
) -> dict[str, Any]:
    command = [
        sys.executable, str(Path(__file__).resolve()), "_load", str(samples), store.pg_database,
        "--url", url,
        "--codes", str(codes),
        "--seconds", str(args.seconds),
        "--warmup", str(args.warmup),
        "--concurrency", str(args.concurrency),
        "--server-pid", str(server_pid),
        "--token", token,
    ]  # fmt: skip
    command = placed(command, args.pin_client, args.nice)
    return wrk_load.load_json(command)


def leader_pids(out: Path) -> list[int]:
    """Processes that logged winning the leadership (background work: checkpoints, monitor)."""
    found = re.findall(r"leadership: this process \(pid (\d+)\) now leads", out.read_text())
    return [int(pid) for pid in found]


def server_problems(out: Path) -> list[str]:
    """Lines of the server's output that say something went wrong."""
    markers = ("ERROR", "Traceback", "CRITICAL", "exited with status", "killing")
    lines = out.read_text(errors="replace").splitlines()
    return [line for line in lines if any(m in line for m in markers)]


def wait_for_quiet(limit: float, longest: float) -> dict[str, float]:
    """Wait, at most ``longest`` seconds, until the machine's busy CPU over one second is
    below ``limit`` cores (between runs nothing of this benchmark runs): neighbours' bursts
    then fall less often into a window. Returns the last reading and the time waited."""
    import load

    t0 = time.monotonic()
    while True:
        before = load.machine_busy_seconds()
        time.sleep(1.0)
        busy = load.machine_busy_seconds() - before
        waited = time.monotonic() - t0
        if busy < limit or waited >= longest:
            return {"busy_cores": round(busy, 2), "waited_s": round(waited, 1)}


def one_run(
    store: Store,
    workers: int,
    rnd: int,
    args: argparse.Namespace,
    ctx: dict[str, Any],
) -> dict[str, Any]:
    quiet = wait_for_quiet(args.quiet, args.quiet_wait) if args.quiet > 0 else {}
    port = qp.free_port()
    out = store.data_dir / f"serve-r{rnd}-w{workers}.out"
    server = start_server(store, workers, port, ctx["env"], args, out)
    try:
        base = f"http://127.0.0.1:{port}"
        qp.wait_healthy(base, server, "dsgw serve", timeout=120)
        wait_listening(port, workers, server, timeout=120)
        tree = process_tree(read_procs(), server.pid)
        worker_pids = sorted(p for p in tree if role_of(p, server.pid) == "worker")

        token = qp.fetch_token(base, ctx["client_id"], ctx["secret"])
        url = base + qp.GOVERNED_PATH
        body = json.dumps({"filters": {"credit_code": ctx["first_code"]}}).encode()
        status, headers, answer = qp.post(
            url,
            body,
            {"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        if status != 200 or answer.get("count") != 1 or "Dsgw-Record-Id" not in headers:
            raise SystemExit(f"check call failed: {status} {answer}")
        seqs = [int(headers["Dsgw-Record-Id"].split("/", 1)[1])]

        admin = staff_token(base, ctx["staff_id"], ctx["staff_secret"])
        before = scrape(base, admin)
        metrics_dir = store.data_dir / "metrics"
        per_worker_before = worker_metrics(metrics_dir) if workers > 1 else {}
        samples_path = store.data_dir / f"cpu-r{rnd}-w{workers}.json"
        shm = store.data_dir / "dsgw.sqlite3-shm"
        with (
            LockSampler(
                store.kind,
                admin_dsn=store.admin_dsn,
                database=store.pg_database,
                shm=shm,
                every=args.lock_sample_ms / 1000,
            ) as sampler,
            ConnectionSampler(port, worker_pids or [server.pid]) as connections,
        ):
            result = run_load(url, ctx["codes"], args, server.pid, token, store, samples_path)
        after = scrape(base, admin)
        per_worker_after = worker_metrics(metrics_dir) if workers > 1 else {}
        tree_end = process_tree(read_procs(), server.pid)
        workers_end = sorted(p for p in tree_end if role_of(p, server.pid) == "worker")
    finally:
        qp.stop(server, "dsgw serve")
    exit_status = server.returncode
    left = [pid for pid in worker_pids if Path(f"/proc/{pid}").exists()]

    seqs += result.pop("record_seqs")
    start, end = json.loads(samples_path.read_text())
    seconds = float(result["seconds"])
    server_tree = {
        pid: {
            "role": info["role"],
            "cores": (info["cpu_s"] - start["tree"].get(pid, {"cpu_s": 0.0})["cpu_s"]) / seconds,
        }
        for pid, info in end["tree"].items()
    }
    store_cores = {k: (end["store"][k] - start["store"][k]) / seconds for k in end["store"]}
    leaders = leader_pids(out)
    per_worker = {}
    for pid, info in server_tree.items():
        if info["role"] not in ("worker", "parent") or (workers > 1 and info["role"] == "parent"):
            continue
        then = per_worker_before.get(pid, {})
        now = per_worker_after.get(pid, {})
        delta = {k: v - then.get(k, 0.0) for k, v in now.items()}
        per_worker[pid] = {
            "leader": int(pid) in leaders,
            "cores": info["cores"],
            "connections": connections.best.get(pid),
            "data_calls": delta.get("data_calls"),
            "records_per_commit": (
                delta["records"] / delta["commits"] if delta.get("commits") else None
            ),
        }
    commits = after.get("commits", 0.0) - before.get("commits", 0.0)
    records = after.get("records", 0.0) - before.get("records", 0.0)
    ok = int(result["total_ok"]) + 1  # the check call
    result |= {
        "store": store.kind,
        "round": rnd,
        "workers": workers,
        "machine_before": quiet,
        "worker_pids": worker_pids,
        "worker_pids_at_end": workers_end,
        "workers_gauge": after.get("workers"),
        "exit_status": exit_status,
        "workers_left_running": left,
        "server_problems": server_problems(out),
        "server_tree_cores": server_tree,
        "per_worker": per_worker,
        "leaders": leaders,
        "store_cores": store_cores,
        "log_batches": {
            "commits": commits,
            "records": records,
            "records_per_commit": records / commits if commits else None,
        },
        "calls_lock": sampler.summary(start["t"], end["t"]),
        "ok_with_check_call": ok,
        "seqs": seqs,
    }
    return result


def cores(run: dict[str, Any], key: str) -> float:
    return float(run[key]) / float(run["seconds"])


def others(run: dict[str, Any]) -> float:
    """Cores used by everything but the server tree, the load generator and the store."""
    own = float(run["server_cpu_s"]) + float(run["client_cpu_s"])
    own += float(sum(run["store_cores"].values())) * float(run["seconds"])
    return max(0.0, float(run["machine_busy_cpu_s"]) - own) / float(run["seconds"])


def check_run(run: dict[str, Any], allowed_before: set[int], allowed_after: set[int]) -> None:
    """What one run added to the store against what its clients read."""
    new = allowed_after - allowed_before
    answered = set(run["seqs"])
    run["log"] = {
        "data_allow_records_added": len(new),
        "ok_responses": run["ok_with_check_call"],
        "distinct_record_ids": len(answered),
        "record_ids_missing_from_log": len(answered - new),
        "missing_record_header": run.get("missing_record_header", 0),
        "every_answer_logged": (
            len(new) == run["ok_with_check_call"] == len(answered) and answered <= new
        ),
    }


# --- summary -----------------------------------------------------------------------------


def summarise(runs: list[dict[str, Any]], counts: list[int]) -> dict[str, Any]:
    by_w: dict[int, dict[str, Any]] = {}
    rounds = sorted({r["round"] for r in runs})
    rps = {(r["round"], r["workers"]): r["rps"] for r in runs}
    base = statistics.median(r["rps"] for r in runs if r["workers"] == counts[0])
    for w in counts:
        mine = [r for r in runs if r["workers"] == w]

        def med(values: list[float]) -> float | None:
            return statistics.median(values) if values else None

        lock = [r["calls_lock"] for r in mine if r["calls_lock"].get("samples")]
        waiters = [x["mean_waiters"] for x in lock if x["mean_waiters"] is not None]
        groups = [
            r["log_batches"]["records_per_commit"]
            for r in mine
            if r["log_batches"]["records_per_commit"]
        ]
        median_rps = statistics.median(r["rps"] for r in mine)
        by_w[w] = {
            "median_rps": median_rps,
            "rps": [round(r["rps"], 1) for r in mine],
            "ratio_vs_first": median_rps / base,
            "ratio_per_round": [
                round(rps[(n, w)] / rps[(n, counts[0])], 3)
                for n in rounds
                if (n, w) in rps and (n, counts[0]) in rps
            ],
            "median_p50_ms": med([r["latency_ms"]["p50"] for r in mine]),
            "median_p99_ms": med([r["latency_ms"]["p99"] for r in mine]),
            "median_server_cores": med([cores(r, "server_cpu_s") for r in mine]),
            "median_server_us_per_call": med(
                [r["server_cpu_s"] / r["ok"] * 1e6 for r in mine if r["ok"]]
            ),
            "median_store_cores": med([sum(r["store_cores"].values()) for r in mine]),
            "median_client_cores": med([cores(r, "client_cpu_s") for r in mine]),
            "median_machine_busy_cores": med([cores(r, "machine_busy_cpu_s") for r in mine]),
            "median_others_cores": med([others(r) for r in mine]),
            "median_records_per_commit": med(groups),
            "median_lock_held_share": med([x["held_share"] for x in lock]),
            "median_lock_waiters": med(waiters),
            "errors": sum(sum(r["errors"].values()) for r in mine),
            "total_errors": sum(sum(r["total_errors"].values()) for r in mine),
        }
    return {str(w): s for w, s in by_w.items()}


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_store(kind: str, runs: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    header = (
        f"{'round':>5} {'W':>2} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'err':>4} "
        f"{'server':>6} {'µs/call':>7} {'store':>6} {'client':>6} {'busy':>5} {'others':>6} "
        f"{'group':>5} {'lock':>5} {'wait':>5}  per worker: cores/connections"
    )
    print(f"\n== {kind} ==")
    print(header)
    print("-" * len(header))
    for r in runs:
        lat, lock = r["latency_ms"], r["calls_lock"]
        per_worker = " ".join(
            f"{'*' if w['leader'] else ''}{w['cores']:.2f}/{fmt(w['connections'], 'd')}"
            for w in sorted(r["per_worker"].values(), key=lambda w: -w["cores"])
        )
        per_call = r["server_cpu_s"] / r["ok"] * 1e6 if r["ok"] else float("nan")
        print(
            f"{r['round']:>5} {r['workers']:>2} {r['rps']:>7.1f} {lat['p50']:>7.1f} "
            f"{lat['p99']:>7.1f} {sum(r['errors'].values()):>4} "
            f"{cores(r, 'server_cpu_s'):>6.2f} {per_call:>7.0f} "
            f"{sum(r['store_cores'].values()):>6.2f} {cores(r, 'client_cpu_s'):>6.2f} "
            f"{cores(r, 'machine_busy_cpu_s'):>5.2f} {others(r):>6.2f} "
            f"{fmt(r['log_batches']['records_per_commit'], '.1f'):>5} "
            f"{fmt(lock.get('held_share'), '.0%'):>5} {fmt(lock.get('mean_waiters'), '.2f'):>5}  "
            f"{per_worker}"
        )
    print(
        "server/store/client/busy/others: cores (CPU seconds per second) of the server's process "
        "tree, of PostgreSQL (this database's backends + shared processes) and redis-server, of "
        "the load generator, of the whole machine, and of everything else; group: records per "
        "log commit; lock: share of samples with the calls stream's write lock held; wait: mean "
        "backends waiting for it (PostgreSQL only); per worker: * the leader"
    )
    print()
    for w, s in summary.items():
        print(
            f"W={w:<2} median {s['median_rps']:7.1f} req/s  x{s['ratio_vs_first']:.2f} "
            f"(per round {s['ratio_per_round']})  p50 {s['median_p50_ms']:.1f} ms  "
            f"p99 {s['median_p99_ms']:.1f} ms  server {s['median_server_cores']:.2f} cores  "
            f"client {s['median_client_cores']:.2f}  busy {s['median_machine_busy_cores']:.2f}"
        )


# --- main ----------------------------------------------------------------------------------


def bench_store(
    kind: str, args: argparse.Namespace, counts: list[int], deployment: str, passphrase: str
) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix=f"dsgw-workers-{kind}-"))
    pg_name = ""
    admin_dsn = args.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    overrides: dict[str, Any] = {
        "chain": "none",
        "redis_url": args.redis_url,
        "deployment": deployment,
        **extra_settings(args.set),
    }
    facts: dict[str, Any] = {}
    try:
        if kind == "postgresql":
            pg_name = f"dsgw_bench_{secrets.token_hex(4)}"
            asyncio.run(pg_execute(admin_dsn, f'CREATE DATABASE "{pg_name}"'))
            overrides["database_url"] = admin_dsn.rsplit("/", 1)[0] + "/" + pg_name
            facts["postgresql"] = asyncio.run(pg_settings(admin_dsn))
        config = data_dir / "bench.toml"
        config.write_text(
            "[dsgw]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in overrides.items())
        )
        t0 = time.monotonic()
        print(f"[{kind}] data dir {data_dir}; generating {args.rows} enterprises ...", flush=True)
        qp.generate_sources(data_dir, args.rows)
        client_id, secret = asyncio.run(qp.setup_gateway(data_dir, passphrase, **overrides))
        staff_id, staff_secret = asyncio.run(issue_staff_client(data_dir, passphrase, **overrides))
        codes = data_dir / "codes.txt"
        qp.write_codes(codes, args.rows)
        url = (
            "sqlite+aiosqlite:///" + str(data_dir / "dsgw.sqlite3")
            if kind == "sqlite"
            else "postgresql+asyncpg://" + overrides["database_url"].split("://", 1)[1]
        )
        store = Store(kind, data_dir, config, url, pg_name, admin_dsn)
        if kind == "sqlite":
            floor = sqlite_commit_floor(data_dir / "probe.sqlite3", args.probe_commits)
        else:
            floor = asyncio.run(pg_commit_floor(overrides["database_url"], args.probe_commits))
        facts["commit_floor_ms"] = floor
        print(
            f"[{kind}] setup done in {time.monotonic() - t0:.1f} s; "
            f"one-row durable commit: {floor:.2f} ms (median of {args.probe_commits})",
            flush=True,
        )
        ctx = {
            "env": qp.server_env(passphrase),
            "client_id": client_id,
            "secret": secret,
            "staff_id": staff_id,
            "staff_secret": staff_secret,
            "codes": codes,
            "first_code": codes.read_text().split()[0],
        }
        runs: list[dict[str, Any]] = []
        all_seqs: list[int] = []
        ok_total = 0
        allowed = asyncio.run(read_calls(url))[2]
        for rnd in range(1, args.rounds + 1):
            order = counts if rnd % 2 else list(reversed(counts))
            for w in order:
                run = one_run(store, w, rnd, args, ctx)
                after = asyncio.run(read_calls(url))[2]
                check_run(run, allowed, after)
                allowed = after
                all_seqs += run.pop("seqs")
                ok_total += run["ok_with_check_call"]
                run["others_cores"] = round(others(run), 2)
                runs.append(run)
                problems = run["server_problems"]
                print(
                    f"[{kind}] round {rnd} W={w}: {run['rps']:7.1f} req/s, "
                    f"p50 {run['latency_ms']['p50']:.1f} ms, "
                    f"errors {sum(run['total_errors'].values())}, "
                    f"logged {run['log']['every_answer_logged']}, exit {run['exit_status']}"
                    + (f", {len(problems)} problem lines in server output" if problems else ""),
                    flush=True,
                )
        total, by_kind, allowed, max_seq = asyncio.run(read_calls(url))
        log = qp.compare_log(total, by_kind, allowed, max_seq, ok_total, all_seqs)
        summary = summarise(runs, counts)
        print_store(kind, runs, summary)
        print(
            f"\n[{kind}] call log: {log['data_allow_records']} data/allow records, "
            f"{log['ok_responses']} 200 answers, {log['distinct_record_ids']} distinct record "
            f"ids, {log['record_ids_missing_from_log']} missing, seq contiguous "
            f"{log['seq_contiguous']}; every answer logged: {log['every_answer_logged']}"
        )
        return {"facts": facts, "runs": runs, "summary": summary, "log": log}
    finally:
        if pg_name:
            asyncio.run(pg_execute(admin_dsn, f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)'))
        if args.keep:
            print(f"[{kind}] data dir kept: {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


def extra_settings(pairs: list[str]) -> dict[str, Any]:
    """``--set key=value`` pairs; the value is read as TOML (``false``, ``10``) or else
    taken as a string."""
    found: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--set wants key=value, got {pair!r}")
        try:
            found[key.strip()] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            found[key.strip()] = raw
    return found


def failures_of(got: dict[str, Any]) -> list[str]:
    """What went wrong on one store, if anything."""
    runs, log = got["runs"], got["log"]
    checks = {
        "not every 200 answer has a committed call record": not log["every_answer_logged"],
        "gap in the calls sequence": not log["seq_contiguous"],
        "a run's answers and records differ": any(
            not r["log"]["every_answer_logged"] for r in runs
        ),
        "a server did not exit with status 0": any(r["exit_status"] != 0 for r in runs),
        "a worker was restarted": any(r["worker_pids"] != r["worker_pids_at_end"] for r in runs),
        "a worker outlived its server": any(r["workers_left_running"] for r in runs),
        "errors under load": any(r["total_errors"] for r in runs),
        "problem lines in the server output": any(r["server_problems"] for r in runs),
    }
    return [why for why, bad in checks.items() if bad]


def main() -> None:
    if sys.argv[1:2] == ["_load"]:
        load_generator_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,4", help="worker counts, the first the base")
    parser.add_argument("--stores", default="sqlite,postgresql", help="sqlite, postgresql")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per run")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent client workers")
    parser.add_argument("--rows", type=int, default=20_000, help="synthetic enterprises")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all worker counts")
    parser.add_argument(
        "--database-url",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="PostgreSQL admin DSN; a fresh database is created beside it and dropped",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--pin-server", default="", help="taskset CPU list for dsgw serve")
    parser.add_argument("--pin-client", default="", help="taskset CPU list for the load")
    parser.add_argument(
        "--quiet",
        type=float,
        default=0.5,
        help="before each run, wait until the machine's busy CPU is below this (cores; 0: no)",
    )
    parser.add_argument("--quiet-wait", type=float, default=15.0, help="longest such wait (s)")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run the server and the load generator under nice -n N (negative: needs root)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a further gateway setting for every run (diagnostics: monitor_enabled=false)",
    )
    parser.add_argument("--lock-sample-ms", type=float, default=20.0)
    parser.add_argument("--probe-commits", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None, help="write JSON results here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dirs")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if any(s not in ("sqlite", "postgresql") for s in stores) or min(counts) < 1:
        parser.error("--stores takes sqlite and postgresql; --workers counts of 1 or more")
    if (args.pin_server or args.pin_client) and not shutil.which("taskset"):
        parser.error("--pin-server/--pin-client need taskset (util-linux)")

    facts = qp.machine_facts()
    deployment = f"bench-workers-{secrets.token_hex(4)}"
    passphrase = secrets.token_urlsafe(24)
    t0 = time.monotonic()
    results: dict[str, Any] = {
        "benchmark": "workers",
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "parameters": {
            k: str(v) if isinstance(v, Path) else v
            for k, v in vars(args).items()
            if k not in ("out", "keep")
        },
        "machine": facts,
        "stores": {},
    }
    try:
        for kind in stores:
            results["stores"][kind] = bench_store(kind, args, counts, deployment, passphrase)
    finally:
        removed = qp.delete_redis_keys(args.redis_url, deployment)
        print(f"redis: deleted {removed} keys of deployment {deployment}")
    results["elapsed_s"] = round(time.monotonic() - t0, 1)
    failures = [
        f"{kind}: {why}" for kind, got in results["stores"].items() for why in failures_of(got)
    ]
    results["failures"] = failures
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        print(f"\nresults written to {args.out}")
    if failures:
        raise SystemExit("FAILED:\n  " + "\n  ".join(failures))


if __name__ == "__main__":
    main()
