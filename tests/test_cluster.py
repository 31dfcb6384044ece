"""Two gateway nodes as separate processes on separate ports, sharing PostgreSQL, Redis and
a chain: the production shape of ``docker/compose.yaml`` on one machine.

Node A runs ``dsgw serve --workers 2`` (a worker pool), node B ``--workers 1``; each has its
own data directory holding a copy of the deployment's keystore. Checked here, across the
nodes: one daily quota, a revocation pushed from one to the other well inside the fallback
poll, and one anchoring leader whose death hands anchoring to another process with nothing
lost and nothing anchored twice.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from eth_account import Account
from redis.asyncio import Redis
from sqlalchemy import select, text

from connectors import synthetic
from gateway.chain.backends import AnvilBackend
from gateway.chain.contract import AnchorRegistry
from gateway.chain.deployment import ensure_registry
from gateway.cli.demo import DEMO_SCENARIO
from gateway.clock import FixedClock
from gateway.cluster.leadership import LEADER_LOCK_KEY
from gateway.db.engines import create_engine
from gateway.db.schema import AnchorRow, LogEntryRow
from gateway.db.sessions import LOCK_NAMESPACE
from gateway.ledger.tree import MerkleTree
from gateway.settings import Settings, load_settings
from keys.keystore import KeyPurpose
from tests.support.databases import PG_ADMIN_DSN, create_pg_database, drop_pg_database
from tests.support.enrolment import limited_scenario
from tests.support.ledger import chain_is_valid
from tests.support.world import build_world

REDIS_URL = os.environ.get("DSGW_TEST_REDIS", "redis://127.0.0.1:6379/15")
LIMITED = "credit-limited"
DAILY_CALLS = 10
# Far above the test's length: a revocation seen on the other node came by the push.
POLL_SECONDS = 60


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Node:
    name: str
    port: int
    process: asyncio.subprocess.Process
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Cluster:
    settings: Settings
    nodes: dict[str, Node]
    merchant: tuple[str, str]
    staff: tuple[str, str]
    registry: AnchorRegistry
    http: aiohttp.ClientSession
    start_node: Callable[[str, int], Awaitable[Node]]
    sample: dict[str, Any]

    async def token(self, node: Node, scope: str, creds: tuple[str, str] | None = None) -> str:
        client_id, secret = creds or self.merchant
        async with self.http.post(
            f"{node.url}/oauth/token",
            data={"grant_type": "client_credentials", "scope": scope},
            headers={"Authorization": aiohttp.encode_basic_auth(client_id, secret)},
        ) as resp:
            body = await resp.json()
            assert resp.status == 200, body
            return str(body["access_token"])

    async def verify(self, node: Node, token: str, scenario: str = DEMO_SCENARIO) -> int:
        """One data call (verify a company's registration) through ``node``."""
        async with self.http.post(
            f"{node.url}/v1/scenarios/{scenario}/datasets/enterprises/verify",
            json={"values": {"credit_code": self.sample["credit_code"], "name": "x"}},
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            await resp.read()
            return resp.status


async def _ready(http: aiohttp.ClientSession, node: Node, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.process.returncode is not None:
            raise AssertionError(f"node {node.name} exited:\n{node.log.read_text()[-3000:]}")
        try:
            async with http.get(f"{node.url}/readyz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"node {node.name} not ready:\n{node.log.read_text()[-3000:]}")


async def _leader(settings: Settings) -> tuple[str, int] | None:
    """(host, pid) of the process holding the leader lock, asked of PostgreSQL."""
    engine = create_engine(settings.resolved_database_url)
    try:
        async with engine.connect() as conn:
            name = await conn.scalar(
                text(
                    "SELECT a.application_name FROM pg_locks l "
                    "JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE l.locktype = 'advisory' AND l.granted "
                    "AND l.classid = :ns AND l.objid = :key"
                ),
                {"ns": LOCK_NAMESPACE, "key": LEADER_LOCK_KEY},
            )
    finally:
        await engine.dispose()
    if name is None:
        return None
    _prefix, host, pid = str(name).rsplit(" ", 2)
    return host, int(pid)


@pytest.fixture
async def pg_settings(tmp_path: Path, source_dir: Path) -> AsyncIterator[Settings]:
    """Settings on a fresh PostgreSQL database: nodes on several machines share one (SQLite
    is a single machine's store)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "sources").symlink_to(source_dir / "sources")
    name = await create_pg_database()
    try:
        yield load_settings(
            None,
            environ={},
            data_dir=data_dir,
            database_url=PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + name,
            redis_url=REDIS_URL,
            deployment=f"c{secrets.token_hex(4)}",
            keystore_passphrase="test passphrase",
            secret_hash_time_cost=1,
            secret_hash_memory_kib=8192,
            port=0,
            chain="none",
        )
    finally:
        await drop_pg_database(name)


@pytest.fixture
async def cluster(
    pg_settings: Settings, clock: FixedClock, tmp_path: Path
) -> AsyncIterator[Cluster]:
    shared = pg_settings
    gateway, creds = await build_world(shared, clock)
    now = clock.now()
    await limited_scenario(
        gateway.governance, LIMITED, {"rate_per_minute": 600, "daily_calls": DAILY_CALLS}, now
    )
    keystore = gateway.keystore
    kid = keystore.generate(KeyPurpose.CHAIN_ACCOUNT, now=now).kid
    account = Account.from_key(keystore.chain_account_private_key(kid)).address
    # The chain: one anvil node standing in for the consortium's; the registry deployed and
    # the deployment's anchoring account authorized, as the contract owner would.
    chain = AnvilBackend(tmp_path / "chain")
    await chain.start()
    registry = await ensure_registry(gateway.engine, chain, anchoring_account=account)
    await gateway.close()

    env = {
        **os.environ,
        "DSGW_DATABASE_URL": shared.resolved_database_url.replace("+asyncpg", ""),
        "DSGW_REDIS_URL": REDIS_URL,
        "DSGW_DEPLOYMENT": shared.deployment,
        "DSGW_KEYSTORE_PASSPHRASE": "test passphrase",
        "DSGW_CHAIN": "rpc",
        "DSGW_CHAIN_RPC_URL": str(chain.url),
        "DSGW_CHAIN_CONTRACT": registry.address,
        "DSGW_CHECKPOINT_EVERY_SECONDS": "1",
        "DSGW_POLICY_POLL_SECONDS": str(POLL_SECONDS),
        "DSGW_LEADER_CHECK_SECONDS": "0.5",
        "DSGW_SECRET_HASH_TIME_COST": "1",
        "DSGW_SECRET_HASH_MEMORY_KIB": "8192",
        "DSGW_LOG_LEVEL": "INFO",
    }
    nodes: dict[str, Node] = {}

    async def start_node(name: str, workers: int) -> Node:
        data_dir = tmp_path / f"node-{name}"
        if not data_dir.exists():
            data_dir.mkdir(mode=0o700)
            shutil.copy2(shared.keystore_path, data_dir / "keystore.json")
            (data_dir / "sources").symlink_to((shared.data_dir / "sources").resolve())
        port = nodes[name].port if name in nodes else _free_port()
        log = tmp_path / f"node-{name}.log"
        with log.open("ab") as out:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                "from gateway.cli.main import main; main()",
                "--data-dir",
                str(data_dir),
                "serve",
                "--port",
                str(port),
                "--workers",
                str(workers),
                env=env,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        node = Node(name, port, process, log)
        nodes[name] = node
        return node

    async with aiohttp.ClientSession() as http:
        for name, workers in (("a", 2), ("b", 1)):
            await start_node(name, workers)
        try:
            for node in nodes.values():
                await _ready(http, node)
            yield Cluster(
                settings=shared,
                nodes=nodes,
                merchant=creds["merchant"],
                staff=creds["staff"][next(iter(creds["staff"]))],
                registry=registry,
                http=http,
                start_node=start_node,
                sample=next(synthetic.generate("enterprises", 1, seed=7)),
            )
        finally:
            for node in nodes.values():
                if node.process.returncode is None:
                    os.killpg(node.process.pid, signal.SIGTERM)
            for node in nodes.values():
                try:
                    await asyncio.wait_for(node.process.wait(), 40)
                except TimeoutError:
                    os.killpg(node.process.pid, signal.SIGKILL)
                    await node.process.wait()
            await chain.close()
            redis = Redis.from_url(REDIS_URL)
            keys = [k async for k in redis.scan_iter(f"dsgw:{shared.deployment}:*")]
            if keys:
                await redis.delete(*keys)
            await redis.aclose()


async def test_daily_quota_holds_across_nodes(cluster: Cluster) -> None:
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    token = await cluster.token(a, f"scenario:{LIMITED}")
    statuses = [await cluster.verify((a, b)[i % 2], token, LIMITED) for i in range(DAILY_CALLS + 4)]
    assert statuses.count(200) == DAILY_CALLS
    assert statuses[DAILY_CALLS:] == [429] * 4


async def test_revocation_on_one_node_is_pushed_to_the_other(cluster: Cluster) -> None:
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    staff = await cluster.token(a, "admin", cluster.staff)
    for attempt in range(3):
        token = await cluster.token(b, f"scenario:{DEMO_SCENARIO}")
        assert await cluster.verify(a, token) == 200
        assert await cluster.verify(b, token) == 200
        jti = _jti(token)
        async with cluster.http.post(
            f"{a.url}/admin/tokens/{jti}/revoke",
            json={"reason": f"test {attempt}"},
            headers={"Authorization": f"Bearer {staff}"},
        ) as resp:
            assert resp.status == 200, await resp.text()
        # Node B never saw the revocation locally; only the push can tell it in time.
        started = time.monotonic()
        while (status := await cluster.verify(b, token)) == 200:
            assert time.monotonic() - started < 2.0, "revocation not seen within 2 s"
            await asyncio.sleep(0.02)
        assert status == 401
        # Both of node A's workers refuse it too (new connections spread across them).
        assert {await cluster.verify(a, token) for _ in range(6)} == {401}


def _jti(token: str) -> str:
    import jwt

    return str(jwt.decode(token, options={"verify_signature": False})["jti"])


async def test_anchoring_leader_dies_and_another_takes_over(cluster: Cluster) -> None:
    """Kill the leading process mid-traffic: another process leads within seconds, and in
    the end every record is anchored, once, with the roots the log really has."""
    settings = cluster.settings
    deadline = time.monotonic() + 30
    while (leader := await _leader(settings)) is None:
        assert time.monotonic() < deadline, "no process took the leader lock"
        await asyncio.sleep(0.2)
    b = cluster.nodes["b"]
    # Node B (one process) says in its readiness (to staff) and metrics whether it leads.
    staff = await cluster.token(b, "admin", cluster.staff)
    async with cluster.http.get(
        f"{b.url}/readyz", headers={"Authorization": f"Bearer {staff}"}
    ) as resp:
        assert (await resp.json())["leader"] is (leader[1] == b.process.pid)
    async with cluster.http.get(
        f"{b.url}/metrics", headers={"Authorization": f"Bearer {staff}"}
    ) as resp:
        metrics = await resp.text()
    assert f"dsgw_leader {1.0 if leader[1] == b.process.pid else 0.0}" in metrics
    token = await cluster.token(b, f"scenario:{DEMO_SCENARIO}")
    nodes = list(cluster.nodes.values())
    for i in range(20):
        assert await cluster.verify(nodes[i % 2], token) == 200
    engine = create_engine(settings.resolved_database_url)
    try:
        await _until(lambda: _final_sizes(engine), lambda sizes: bool(sizes), 60, "first anchor")
        os.kill(leader[1], signal.SIGKILL)
        survivors = [n for n in nodes if n.process.pid != leader[1]]
        for i in range(20):
            node = survivors[i % len(survivors)]
            status = await cluster.verify(node, token)
            if status != 200:  # the killed worker's connection; node A restarts it
                assert node.name == "a", status
                status = await cluster.verify(node, token)
            assert status == 200
        new_leader = await _until(
            lambda: _leader(settings),
            lambda who: who is not None and who != leader,
            30,
            "a new leader",
        )
        assert new_leader != leader
        if leader[1] == cluster.nodes["b"].process.pid:
            await cluster.start_node("b", 1)  # B was a single process: an operator restarts it
            await _ready(cluster.http, cluster.nodes["b"])
        async with engine.connect() as conn:
            calls = await conn.scalar(
                select(LogEntryRow.seq)
                .where(LogEntryRow.stream == "calls")
                .order_by(LogEntryRow.seq.desc())
                .limit(1)
            )
        assert calls is not None
        await _until(
            lambda: cluster.registry.latest("calls"),
            lambda head: head.size >= calls + 1,
            90,
            "the last call anchored",
        )
        assert await chain_is_valid(engine, "calls") == calls + 1
        head = await cluster.registry.latest("calls")
        assert head.root == await MerkleTree(engine, "calls").root(head.size)
        events = await cluster.registry.anchored_events("calls")
        sizes = [event.size for event in events]
        assert sizes == sorted(set(sizes)), f"an anchor went on chain twice: {sizes}"
        finals = await _final_sizes(engine)
        assert finals == sorted(set(finals))
        on_chain = {(e.size, e.root) for e in events}
        async with engine.connect() as conn:
            recorded = (
                await conn.execute(
                    select(AnchorRow.size, AnchorRow.root).where(
                        AnchorRow.stream == "calls", AnchorRow.status == "final"
                    )
                )
            ).all()
        assert {(int(s), bytes(r)) for s, r in recorded} <= on_chain
    finally:
        await engine.dispose()


async def _final_sizes(engine: Any) -> list[int]:
    async with engine.connect() as conn:
        rows = await conn.scalars(
            select(AnchorRow.size)
            .where(AnchorRow.stream == "calls", AnchorRow.status == "final")
            .order_by(AnchorRow.size)
        )
        return [int(size) for size in rows]


async def _until(
    read: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], timeout: float, what: str
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await read()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what} (last: {value})"
        await asyncio.sleep(0.3)


def _children(pid: int) -> set[int]:
    """The worker processes of a ``serve`` parent (not multiprocessing's resource tracker)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    workers = set()
    for child in path.read_text().split() if path.exists() else ():
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                workers.add(int(child))
        except OSError:
            continue  # exited meanwhile
    return workers


async def test_worker_pool_replaces_a_killed_worker(cluster: Cluster) -> None:
    """A worker of node A killed outright: the pool starts another, and the node keeps
    answering (calls refused only on the killed worker's own connections)."""
    a = cluster.nodes["a"]
    workers = await _until(
        lambda: _async(_children(a.process.pid)), lambda pids: len(pids) == 2, 30, "2 workers"
    )
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    replaced = await _until(
        lambda: _async(_children(a.process.pid)),
        lambda pids: len(pids) == 2 and victim not in pids,
        30,
        "a replacement worker",
    )
    assert victim not in replaced
    await _ready(cluster.http, a)
    token = await cluster.token(a, f"scenario:{DEMO_SCENARIO}")
    assert {await cluster.verify(a, token) for _ in range(8)} == {200}
    assert "exited with status -9" in a.log.read_text()


async def _async(value: Any) -> Any:
    return value


async def test_a_transaction_pooler_needs_a_session_url_for_the_leader_lock(
    pg_settings: Settings,
) -> None:
    """Behind PgBouncer in transaction mode a session lock proves nothing: serving refuses
    to campaign until database_session_url names PostgreSQL itself."""
    from gateway.errors import ConfigError
    from gateway.runtime import Gateway, initialise

    await initialise(pg_settings)
    pooled = pg_settings.replace(database_statement_cache=False)
    gateway = await Gateway.open(pooled, anchoring=False)
    try:
        with pytest.raises(ConfigError, match="database_session_url"):
            gateway.background.campaign()
        with pytest.raises(ConfigError, match="database_session_url"):
            gateway.background.watch_policy()
    finally:
        await gateway.close()
    direct = pooled.replace(database_session_url=pg_settings.database.url)
    gateway = await Gateway.open(direct, anchoring=False)
    try:
        leadership = gateway.background.campaign()
        await asyncio.wait_for(leadership.changed.wait(), 10)
        assert leadership.leading
        watch = gateway.background.watch_policy()
        await asyncio.wait_for(watch.listening.wait(), 10)
    finally:
        await gateway.close()
