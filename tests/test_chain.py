"""On-chain anchoring on real chains: the in-process py-evm chain (eth-tester) with mining under
the test's control, and anvil nodes started from contracts/node_modules with persistent state.

Checkpoints are rows of the real tree (records appended with the log writer, folded by
MerkleTree), because the registry checks every consistency proof against real roots.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_typing import HexStr
from eth_utils.crypto import keccak
from sqlalchemy import delete, event, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.chain.backends import (
    AnvilBackend,
    ChainBackend,
    EmbeddedBackend,
    RpcBackend,
    open_backend,
)
from gateway.chain.contract import AnchoredEvent, AnchorRegistry, RegistryArtifact, stream_id
from gateway.chain.deployment import ensure_registry
from gateway.chain.errors import ChainConfigError, ChainUnavailableError
from gateway.chain.models import AnchorPolicy, CycleReport
from gateway.chain.nonces import nonce_manager
from gateway.chain.records import covering_anchor
from gateway.chain.status import anchoring_status
from gateway.chain.worker import AnchorWorker
from gateway.clock import FixedClock
from gateway.db.engines import create_engine, migrate
from gateway.db.schema import AnchorRow, AnchorTransactionRow, CheckpointRow
from gateway.ledger.hashing import HashAlgorithm
from gateway.ledger.log import LogWriter, PendingRecord
from gateway.ledger.tree import MerkleTree
from gateway.settings import Settings

NOW = dt.datetime(2026, 11, 29, 12, 0, 0, tzinfo=dt.UTC)


# --- a gateway's ledger and a chain, wired together ---------------------------------------


@dataclass
class Rig:
    engine: AsyncEngine
    backend: ChainBackend
    registry: AnchorRegistry
    key: bytes
    clock: FixedClock
    writer: LogWriter
    algorithm: HashAlgorithm = "sha256"
    workers: list[AnchorWorker] = field(default_factory=list)

    def worker(self, **policy: Any) -> AnchorWorker:
        """A new worker on the same database, chain and key (as after a restart)."""
        policy.setdefault("confirmations", 3)
        policy.setdefault("poll_interval", 0.05)
        policy.setdefault("max_backoff", 0.2)
        worker = AnchorWorker(
            self.engine,
            self.registry,
            self.key,
            policy=AnchorPolicy(**policy),
            clock=self.clock,
            algorithm=self.algorithm,
        )
        self.workers.append(worker)
        return worker

    async def checkpoint(
        self, stream: str = "calls", add: int = 1, algorithm: str | None = None
    ) -> tuple[int, bytes]:
        """Append ``add`` records to ``stream``, fold its tree and store a checkpoint of it
        (labelled ``algorithm``, by default the log's)."""
        for i in range(add):
            await self.writer.append(
                PendingRecord(stream=stream, kind="data", recorded_at=NOW, body={"i": i})
            )
        tree = MerkleTree(self.engine, stream, algorithm=self.algorithm)
        while await tree.fold():
            pass
        size = await tree.size()
        root = await tree.root(size)
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(CheckpointRow).values(
                    stream=stream,
                    size=size,
                    root=root,
                    algorithm=algorithm or self.algorithm,
                    note=f"test/{stream}\n{size}\n",
                    key_id="test",
                    created_at=self.clock.now(),
                )
            )
        return size, root

    async def anchors(self, stream: str | None = None) -> list[Any]:
        query = select(AnchorRow.__table__).order_by(AnchorRow.id)
        if stream is not None:
            query = query.where(AnchorRow.stream == stream)
        async with self.engine.connect() as conn:
            return list(await conn.execute(query))

    async def transactions(self) -> list[Any]:
        async with self.engine.connect() as conn:
            return list(
                await conn.execute(
                    select(AnchorTransactionRow.__table__).order_by(AnchorTransactionRow.id)
                )
            )

    async def events(self, stream: str = "calls") -> list[AnchoredEvent]:
        return await self.registry.anchored_events(stream)

    async def run(self, worker: AnchorWorker, *, mine: int = 0) -> None:
        """Mine ``mine`` blocks, then let the worker take one pass."""
        await self.run_report(worker, mine=mine)

    async def run_report(self, worker: AnchorWorker, *, mine: int = 0) -> CycleReport:
        if mine:
            await self.backend.mine(mine)
        return await worker.run_once()


async def _engine(url: str) -> AsyncEngine:
    engine = create_engine(url)
    await migrate(engine)
    return engine


async def _rig(
    engine: AsyncEngine, backend: ChainBackend, algorithm: HashAlgorithm = "sha256"
) -> Rig:
    key = bytes(Account.create().key)
    clock = FixedClock(NOW)
    registry = await ensure_registry(
        engine, backend, anchoring_account=Account.from_key(key).address, clock=clock
    )
    writer = LogWriter(engine, algorithm=algorithm)
    await writer.start()
    return Rig(engine, backend, registry, key, clock, writer, algorithm)


async def _close(rig: Rig) -> None:
    for worker in rig.workers:
        await worker.close()
    await rig.writer.close()


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """The gateway's store, SQLite and PostgreSQL."""
    engine = await _engine(settings.resolved_database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = await _engine(f"sqlite+aiosqlite:///{tmp_path / 'dsgw.sqlite3'}")
    yield engine
    await engine.dispose()


@pytest.fixture
async def embedded(store: AsyncEngine) -> AsyncIterator[Rig]:
    """A py-evm chain that mines only when told to, with a registry deployed on it."""
    async with EmbeddedBackend(auto_mine=False) as backend:
        rig = await _rig(store, backend)
        try:
            yield rig
        finally:
            await _close(rig)


AnvilFactory = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def anvil(sqlite_store: AsyncEngine, tmp_path: Path) -> AsyncIterator[AnvilFactory]:
    """Starts an anvil node with its state under tmp_path and a registry on it."""
    rigs: list[Rig] = []

    async def start(**options: Any) -> Rig:
        backend = AnvilBackend(tmp_path / "chain", hardfork="prague", **options)
        await backend.start()
        rig = await _rig(sqlite_store, backend)
        rigs.append(rig)
        return rig

    yield start
    for rig in rigs:
        await _close(rig)
        await rig.backend.close()


async def _wait_for(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


# --- small pieces -------------------------------------------------------------------------


def test_stream_id_is_keccak256_of_the_name() -> None:
    assert stream_id("calls") == keccak(b"calls")
    assert stream_id("calls") != stream_id("governance")


def test_artifact_is_checked_when_loaded(tmp_path: Path) -> None:
    artifact = RegistryArtifact.from_file()
    assert artifact.deployed_bytecode and artifact.bytecode
    with pytest.raises(ChainConfigError, match="npm"):
        RegistryArtifact.from_file(tmp_path / "missing.json")
    stripped = tmp_path / "stripped.json"
    stripped.write_text('{"abi": [], "bytecode": "0x00", "deployedBytecode": "0x00"}')
    with pytest.raises(ChainConfigError, match="anchor\\(bytes32,uint64,bytes32,bytes32\\[\\]\\)"):
        RegistryArtifact.from_file(stripped)


def test_backends_refuse_bad_configuration() -> None:
    with pytest.raises(ChainConfigError, match="unknown backend 'besu'"):
        open_backend("besu")
    with pytest.raises(ChainConfigError, match="URL"):
        open_backend("rpc")
    with pytest.raises(ChainConfigError, match="http"):
        RpcBackend("ws://127.0.0.1:8545")
    with pytest.raises(ChainConfigError, match="state directory"):
        open_backend("anvil")
    with pytest.raises(ChainConfigError, match=r"12\.5"):
        AnchorPolicy(fee_bump=AnchorPolicy().fee_bump / 2)


async def test_anvil_missing_is_an_actionable_error(tmp_path: Path) -> None:
    backend = AnvilBackend(tmp_path, executable=tmp_path / "no-anvil")
    with pytest.raises(ChainConfigError, match="npm ci --prefix contracts"):
        await backend.start()


async def test_sm3_streams_are_anchored_without_proofs(sqlite_store: AsyncEngine) -> None:
    """The EVM cannot hash SM3: its roots go on chain without proofs, flagged as such, and
    the worker still refuses a registry head that is not this log's root."""
    async with EmbeddedBackend() as backend:
        rig = await _rig(sqlite_store, backend, algorithm="sm3")
        try:
            worker = rig.worker(confirmations=1)
            first = await rig.checkpoint("calls", add=3)
            await rig.run(worker)
            second = await rig.checkpoint("calls", add=4)
            await rig.run(worker)
            await rig.run(worker)
            events = await rig.events()
            assert [(e.size, e.root, e.proof_checked) for e in events] == [
                (*first, False),
                (*second, False),
            ]
            assert second[1] == await MerkleTree(sqlite_store, "calls", algorithm="sm3").root(7)
            assert second[1] != await MerkleTree(sqlite_store, "calls").root(7)
            assert [a.status for a in await rig.anchors("calls")] == ["final", "final"]

            # A checkpoint of another hash (a deployment that switched) is not anchored and
            # does not hold up the other streams.
            await rig.checkpoint("governance", add=2, algorithm="sha256")
            report = await rig.run_report(worker)
            assert report.refused == 1
            (blocked,) = worker.health.blocked_streams
            assert blocked.startswith("governance: ") and "SHA256 checkpoints" in blocked
            assert await rig.events("governance") == []

        finally:
            await _close(rig)


async def test_nonce_manager_serialises_and_resyncs() -> None:
    async with EmbeddedBackend() as backend:
        account = Account.create().address
        manager = nonce_manager(backend, account)
        assert nonce_manager(backend, account.lower()) is manager  # one per account

        async def take() -> int:
            async with manager.reserve() as nonce:
                await asyncio.sleep(0)
                return nonce

        assert sorted(await asyncio.gather(*(take() for _ in range(5)))) == [0, 1, 2, 3, 4]
        failed = []

        async def fail() -> None:
            async with manager.reserve() as nonce:
                failed.append(nonce)
                raise RuntimeError("signing failed")

        with pytest.raises(RuntimeError):
            await fail()
        assert failed == [5]
        # After an error the node is asked again; it has seen none of these nonces, but the
        # manager never goes below what it handed out: the failed nonce is taken again.
        async with manager.reserve() as nonce:
            assert nonce == 5
        # A resync trusts the node, above the nonces that stored transactions hold.
        manager.resync(floor=7)
        async with manager.reserve() as nonce:
            assert nonce == 7
        manager.resync()
        async with manager.reserve() as nonce:
            assert nonce == 0


async def test_unreachable_node_is_chain_unavailable(sqlite_store: AsyncEngine) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with RpcBackend(f"http://127.0.0.1:{port}", request_timeout=2) as backend:
        registry = AnchorRegistry(backend, "0x" + "11" * 20)
        with pytest.raises(ChainUnavailableError, match=f"127.0.0.1:{port}.*did not answer"):
            await registry.latest("calls")
        with pytest.raises(ChainConfigError, match="not a dev chain"):
            await ensure_registry(sqlite_store, backend, anchoring_account=Account.create().address)
        # The background worker neither crashes nor spins: it backs off and says why.
        worker = AnchorWorker(
            sqlite_store,
            registry,
            bytes(Account.create().key),
            policy=AnchorPolicy(poll_interval=0.01, max_backoff=0.05),
        )
        await worker.start()
        try:
            await _wait_for(
                lambda: asyncio.sleep(0, worker.health.consecutive_failures >= 3), "failures"
            )
            health = worker.health
            assert health.reachable is False
            assert health.last_error is not None and "did not answer" in health.last_error
        finally:
            await worker.close()


# --- the life of an anchor, on py-evm (SQLite and PostgreSQL) -----------------------------


async def test_anchor_goes_pending_mined_final(embedded: Rig) -> None:
    rig = embedded
    await rig.checkpoint(add=3)
    _, root = await rig.checkpoint(add=2)
    worker = rig.worker(confirmations=3)
    status = await anchoring_status(rig.engine)
    assert status.backlog == 2 and status.contract == rig.registry.address

    report = await worker.run_once()
    # Only the newest checkpoint is anchored: it covers the older one.
    assert (report.queued, report.submitted) == (1, 1)
    (anchor,) = await rig.anchors()
    assert (anchor.size, anchor.status, anchor.root) == (5, "pending", root)
    (tx,) = await rig.transactions()
    assert tx.status == "sent" and tx.nonce == 0 and tx.anchor_id == anchor.id

    # Unmined, it stays pending and is not sent twice.
    await rig.run(worker)
    assert [a.status for a in await rig.anchors()] == ["pending"]
    assert len(await rig.transactions()) == 1

    await rig.run(worker, mine=1)
    (anchor,) = await rig.anchors()
    assert (anchor.status, anchor.confirmations, anchor.tx_hash) == ("mined", 1, tx.tx_hash)
    await rig.run(worker, mine=1)
    assert [(a.status, a.confirmations) for a in await rig.anchors()] == [("mined", 2)]
    await rig.run(worker, mine=1)
    (anchor,) = await rig.anchors()
    assert (anchor.status, anchor.confirmations) == ("final", 3)
    assert anchor.final_at is not None
    assert (await anchoring_status(rig.engine)).backlog == 0

    # The next checkpoint extends the anchored tree with a consistency proof from size 5.
    size2, root2 = await rig.checkpoint(add=7)
    report = await worker.run_once()
    assert report.submitted == 1
    await rig.run(worker, mine=3)
    assert [(a.size, a.status) for a in await rig.anchors()] == [(5, "final"), (12, "final")]
    head = await rig.registry.latest("calls")
    assert (head.size, head.root) == (size2, root2)
    events = await rig.events()
    assert [(e.size, e.previous_size, e.by) for e in events] == [
        (5, 0, worker.account),
        (12, 5, worker.account),
    ]
    assert [t.nonce for t in await rig.transactions()] == [0, 1]

    status = await anchoring_status(rig.engine)
    calls = next(s for s in status.streams if s.stream == "calls")
    assert (calls.checkpoint_size, calls.final_size, calls.unanchored_checkpoints) == (12, 12, 0)
    assert status.anchors == {"final": 2}

    # What an evidence bundle cites for a record: the first final anchor covering its tree.
    chain_id, contract = status.chain_id, rig.registry.address
    assert chain_id is not None
    covering = await covering_anchor(rig.engine, "calls", 3, chain_id=chain_id, contract=contract)
    assert covering is not None and (covering.size, covering.tx_hash) == (5, tx.tx_hash)
    covering = await covering_anchor(rig.engine, "calls", 6, chain_id=chain_id, contract=contract)
    assert covering is not None and covering.size == 12
    assert not await covering_anchor(rig.engine, "calls", 13, chain_id=chain_id, contract=contract)


async def test_reorg_requeues_and_anchors_once(embedded: Rig) -> None:
    rig = embedded
    tester = rig.backend.tester  # type: ignore[attr-defined]
    await rig.checkpoint(add=4)
    worker = rig.worker(confirmations=2)
    before = tester.take_snapshot()
    await rig.run(worker)
    await rig.run(worker, mine=1)
    assert await _statuses(rig, ["mined"])

    # A reorg: the chain goes back to before the anchor's block (and its transaction).
    tester.revert_to_snapshot(before)
    assert (await rig.registry.latest("calls")).size == 0
    report = await worker.run_once()
    assert (report.reorged, report.rebroadcast) == (1, 1)
    (anchor,) = await rig.anchors()
    assert (anchor.status, anchor.requeues, anchor.block_hash) == ("pending", 1, None)

    await rig.run(worker, mine=1)
    await rig.run(worker, mine=1)
    (anchor,) = await rig.anchors()
    assert anchor.status == "final" and anchor.block_hash is not None
    # Re-sent byte for byte: one transaction, one anchor on chain.
    (tx,) = await rig.transactions()
    assert tx.status == "mined" and tx.tx_hash == anchor.tx_hash
    assert [e.size for e in await rig.events()] == [4]


async def test_restart_on_a_reset_chain_redeploys_and_reanchors(
    store: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """The embedded chain is ephemeral: a restart meets a fresh chain that has lost the
    registry and every anchor; the gateway redeploys, re-anchors, and says so loudly."""
    async with EmbeddedBackend() as first:
        rig = await _rig(store, first)
        try:
            await rig.checkpoint(add=3)
            await rig.checkpoint("governance", add=2)
            worker = rig.worker(confirmations=1)
            await rig.run(worker)
            await rig.run(worker)
            assert [(a.stream, a.status) for a in await rig.anchors()] == [
                ("calls", "final"),
                ("governance", "final"),
            ]
            address = rig.registry.address
        finally:
            await _close(rig)

    caplog.set_level(logging.INFO, logger="gateway.chain")
    async with EmbeddedBackend() as second:
        registry = await ensure_registry(
            store, second, anchoring_account=Account.from_key(rig.key).address, clock=rig.clock
        )
        assert any(
            r.levelno == logging.ERROR and "is gone from" in r.getMessage() for r in caplog.records
        )
        rig = Rig(store, second, registry, rig.key, rig.clock, LogWriter(store))
        await rig.writer.start()
        try:
            worker = rig.worker(confirmations=1)
            report = await worker.reconcile()
            assert sorted(report.requeued) == [("calls", 3), ("governance", 2)]
            lost = [r for r in caplog.records if "lost anchors" in r.getMessage()]
            assert len(lost) == 2 and all(r.levelno == logging.ERROR for r in lost)
            await rig.run(worker)
            await rig.run(worker)
            anchors = await rig.anchors()
            assert [(a.stream, a.size, a.status, a.requeues) for a in anchors] == [
                ("calls", 3, "final", 1),
                ("governance", 2, "final", 1),
            ]
            assert registry.address == address  # same dev account, same nonce: same address
            assert [e.size for e in await rig.events()] == [3]
            # On a fresh chain the re-signed transaction may be the old one byte for byte
            # (same nonce, input and fees): then its row is revived, else the old one is lost.
            statuses = sorted(t.status for t in await rig.transactions())
            assert statuses in (["mined", "mined"], ["lost", "lost", "mined", "mined"])
        finally:
            await _close(rig)


async def test_anchors_found_on_chain_are_adopted_not_repeated(embedded: Rig) -> None:
    """A database restored from a backup taken before the anchor was recorded: the chain
    already has the checkpoint, so it is adopted, not anchored again."""
    rig = embedded
    await rig.checkpoint(add=6)
    worker = rig.worker(confirmations=1)
    await rig.run(worker)
    await rig.run(worker, mine=1)
    assert [a.status for a in await rig.anchors()] == ["final"]
    async with rig.engine.begin() as conn:
        await conn.execute(delete(AnchorTransactionRow))
        await conn.execute(delete(AnchorRow))

    worker = rig.worker(confirmations=1)
    report = await worker.run_once()
    assert (report.adopted, report.submitted) == (1, 0)
    (anchor,) = await rig.anchors()
    assert (anchor.size, anchor.status) == (6, "final")
    assert await rig.transactions() == []
    assert [e.size for e in await rig.events()] == [6]


async def test_foreign_root_on_chain_blocks_the_stream(embedded: Rig) -> None:
    rig = embedded
    dev = await rig.backend.dev_account()
    assert dev is not None
    await rig.registry.authorize(dev, owner=dev)
    bogus = rig.registry.anchor_calldata("governance", 2, b"\x42" * 32, [])
    await rig.backend.send_unlocked(
        {"from": dev, "to": rig.registry.address, "data": HexStr("0x" + bogus.hex())},
        "anchor a foreign root",
    )
    await rig.checkpoint("governance", add=5)
    await rig.checkpoint("calls", add=1)
    worker = rig.worker(confirmations=1)
    report = await worker.run_once()
    assert report.submitted == 1  # calls only
    (blocked,) = worker.health.blocked_streams
    assert blocked.startswith("governance: ") and "another writer" in blocked
    governance = (await rig.anchors("governance"))[0]
    assert governance.status == "queued" and "another writer" in governance.last_error
    assert len(await rig.transactions()) == 1


async def test_sha256_stream_anchored_without_proofs_blocks_the_stream(embedded: Rig) -> None:
    """Our own root, but put on chain without a consistency proof (by whoever holds an
    anchoring key): the chain no longer witnesses the stream, so the worker stops."""
    rig = embedded
    dev = await rig.backend.dev_account()
    assert dev is not None
    await rig.registry.authorize(dev, owner=dev)
    size, root = await rig.checkpoint("calls", add=3)
    proofless = rig.registry.anchor_calldata("calls", size, root, None)
    await rig.backend.send_unlocked(
        {"from": dev, "to": rig.registry.address, "data": HexStr("0x" + proofless.hex())},
        "anchor without a proof",
    )
    assert not (await rig.registry.latest("calls")).proof_checked
    await rig.checkpoint("calls", add=2)
    worker = rig.worker(confirmations=1)
    report = await worker.reconcile()
    (conflict,) = report.conflicts
    assert "without consistency proofs and this log hashes with SHA256" in conflict
    await worker.run_once()
    assert [a.status for a in await rig.anchors("calls")] == ["queued"]
    assert rig.transactions and not await rig.transactions()


async def test_stuck_transaction_is_replaced_with_higher_fees(embedded: Rig) -> None:
    rig = embedded
    await rig.checkpoint(add=2)
    worker = rig.worker(confirmations=1, replace_after=dt.timedelta(minutes=5))
    await rig.run(worker)
    rig.clock.advance(dt.timedelta(minutes=4))
    assert (await worker.run_once()).replaced == 0
    rig.clock.advance(dt.timedelta(minutes=1))
    assert (await worker.run_once()).replaced == 1
    first, second = await rig.transactions()
    assert first.nonce == second.nonce and first.tx_hash != second.tx_hash
    assert second.max_fee * 8 >= first.max_fee * 9
    assert second.priority_fee * 8 >= first.priority_fee * 9
    assert (first.status, second.status) == ("replaced", "sent")
    await rig.run(worker, mine=1)
    (anchor,) = await rig.anchors()
    assert anchor.status == "final"
    assert [t.status for t in await rig.transactions()] == ["dropped", "mined"]
    assert [e.tx_hash for e in await rig.events()] == [second.tx_hash]


async def test_nonce_taken_by_another_transaction_requeues(embedded: Rig) -> None:
    """Someone else signs with the anchoring key and takes the anchor's nonce: the worker
    sees the nonce consumed without its transaction, re-queues and anchors with the next."""
    rig = embedded
    await rig.checkpoint(add=3)
    worker = rig.worker(confirmations=1)
    await rig.run(worker)
    (first,) = await rig.transactions()
    w3 = rig.backend.w3
    intruder = Account.from_key(rig.key).sign_transaction(
        {
            "type": 2,
            "chainId": await w3.eth.chain_id,
            "nonce": first.nonce,
            "to": worker.account,
            "value": 0,
            "gas": 21000,
            "maxFeePerGas": first.max_fee * 2,
            "maxPriorityFeePerGas": first.priority_fee * 2,
        }
    )
    await w3.eth.send_raw_transaction(intruder.raw_transaction)
    await rig.backend.mine(1)
    report = await worker.run_once()
    assert (report.requeued, report.submitted) == (1, 1)
    await rig.run(worker, mine=1)
    (anchor,) = await rig.anchors()
    assert (anchor.status, anchor.requeues) == ("final", 1)
    dropped, mined = await rig.transactions()
    assert (dropped.status, dropped.nonce, mined.status, mined.nonce) == ("dropped", 0, "mined", 1)
    assert [e.tx_hash for e in await rig.events()] == [mined.tx_hash]


# --- on anvil: outages, crashes and a real mempool -----------------------------------------


@pytest.mark.slow
async def test_chain_down_mid_run_catches_up_without_duplicates(anvil: AnvilFactory) -> None:
    rig = await anvil()
    backend = rig.backend
    assert isinstance(backend, AnvilBackend)
    await rig.checkpoint(add=5)
    worker = rig.worker(confirmations=1)
    await worker.start()
    await _wait_for(lambda: _statuses(rig, ["final"]), "the first anchor to become final")
    height = await backend.w3.eth.block_number

    await backend.stop()
    assert backend.state_file.exists()
    # The gateway goes on logging and checkpointing while the chain is down.
    await rig.checkpoint(add=4)
    await rig.checkpoint(add=3)
    await _wait_for(
        lambda: asyncio.sleep(0, worker.health.consecutive_failures >= 2), "failed attempts"
    )
    assert worker.health.reachable is False
    status = await anchoring_status(rig.engine)
    assert status.backlog == 2
    calls = next(s for s in status.streams if s.stream == "calls")
    assert (calls.final_size, calls.checkpoint_size, calls.unanchored_entries) == (5, 12, 7)

    await backend.start()  # same state file: the chain comes back as it was
    assert await backend.w3.eth.block_number >= height
    await _wait_for(lambda: _final_sizes(rig, [5, 12]), "anchoring to catch up")
    # A checkpoint that a newer one overtook while the chain was down is superseded.
    assert {a.status for a in await rig.anchors()} <= {"final", "superseded"}
    await _wait_for(lambda: asyncio.sleep(0, worker.health.reachable is True), "a successful pass")
    events = await rig.events()
    assert [(e.size, e.previous_size) for e in events] == [(5, 0), (12, 5)]
    assert (await anchoring_status(rig.engine)).backlog == 0


async def _final_sizes(rig: Rig, expected: list[int]) -> bool:
    return [a.size for a in await rig.anchors() if a.status == "final"] == expected


async def _statuses(rig: Rig, expected: list[str]) -> bool:
    return [a.status for a in await rig.anchors()] == expected


@pytest.mark.slow
async def test_crash_between_submit_and_receipt(anvil: AnvilFactory) -> None:
    """A worker stores and sends two anchors and dies before any receipt; the node then
    loses them from its mempool, and for the first one the database is left as a crash
    between storing and broadcasting leaves it. A new worker on the same database finishes
    both with the stored transactions: one Anchored event each."""
    rig = await anvil(no_mining=True, slots_in_an_epoch=1)
    await rig.checkpoint("calls", add=5)
    await rig.checkpoint("governance", add=3)
    first = rig.worker(finality="finalized", confirmations=100)
    assert (await first.run_once()).submitted == 2
    await first.close()
    calls_tx, governance_tx = await rig.transactions()
    assert (calls_tx.nonce, governance_tx.nonce) == (0, 1)

    # The node forgets the first transaction; on disk it is as if the crash came between
    # storing it and broadcasting it.
    w3 = rig.backend.w3
    await w3.provider.make_request("anvil_dropTransaction", ["0x" + calls_tx.tx_hash.hex()])
    async with rig.engine.begin() as conn:
        await conn.execute(
            update(AnchorTransactionRow)
            .where(AnchorTransactionRow.id == calls_tx.id)
            .values(status="signed", sent_at=None)
        )
    await rig.backend.mine(1)
    assert (await rig.registry.latest("governance")).size == 0

    second = rig.worker(finality="finalized", confirmations=100)
    report = await second.run_once()
    # anvil dropped the nonce-1 transaction with the nonce-0 one it depends on: both are
    # sent again as stored, in nonce order, and nothing new is signed.
    assert (report.rebroadcast, report.submitted) == (2, 0)
    await rig.run(second, mine=1)
    assert await _statuses(rig, ["mined", "mined"])
    # Final by the chain's `finalized` tag (two epochs of one slot behind the head), not by
    # the 100 confirmations.
    await rig.run(second, mine=2)
    assert await _statuses(rig, ["final", "final"])
    assert [t.tx_hash for t in await rig.transactions()] == [
        calls_tx.tx_hash,
        governance_tx.tx_hash,
    ]
    assert [e.size for e in await rig.events("calls")] == [5]
    assert [e.size for e in await rig.events("governance")] == [3]


@pytest.mark.slow
async def test_gas_price_spike_is_outbid_by_a_replacement(anvil: AnvilFactory) -> None:
    """The base fee jumps above what the anchor offered, so no block takes it; after
    replace_after the worker sends the same nonce at the new price, and the node's mempool
    (which refuses replacements that do not outbid) swaps it in."""
    rig = await anvil(no_mining=True)
    await rig.checkpoint(add=3)
    worker = rig.worker(confirmations=1, replace_after=dt.timedelta(seconds=30))
    await rig.run(worker)
    (old,) = await rig.transactions()
    w3 = rig.backend.w3
    await w3.provider.make_request("anvil_setNextBlockBaseFeePerGas", [hex(old.max_fee * 4)])
    await rig.run(worker, mine=1)
    assert await _statuses(rig, ["pending"])  # priced out of the block

    rig.clock.advance(dt.timedelta(seconds=29))
    assert (await worker.run_once()).replaced == 0
    rig.clock.advance(dt.timedelta(seconds=1))
    assert (await worker.run_once()).replaced == 1
    old, new = await rig.transactions()
    assert (old.status, new.status, old.nonce) == ("replaced", "sent", new.nonce)
    assert new.max_fee > old.max_fee * 2 and new.priority_fee * 8 >= old.priority_fee * 9
    pool = await w3.provider.make_request("txpool_content", [])
    (by_nonce,) = pool["result"]["pending"].values()
    assert [tx["hash"] for tx in by_nonce.values()] == ["0x" + new.tx_hash.hex()]

    await rig.run(worker, mine=1)
    assert await _statuses(rig, ["final"])
    assert [t.status for t in await rig.transactions()] == ["dropped", "mined"]
    assert [e.tx_hash for e in await rig.events()] == [new.tx_hash]


async def test_an_idle_pass_reads_little_and_writes_nothing(embedded: Rig) -> None:
    """A pass runs every poll interval whatever the load: once the newest checkpoints are
    anchored it reads the anchors in flight, the newest checkpoints and the queue, and
    nothing per stream; a new checkpoint is still queued and anchored."""
    rig = embedded
    await rig.checkpoint(add=3)
    worker = rig.worker(confirmations=1)
    for _ in range(3):
        await rig.run(worker, mine=1)
    assert [(a.size, a.status) for a in await rig.anchors()] == [(3, "final")]
    statements: list[str] = []

    def capture(_c: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    sync_engine = rig.engine.sync_engine
    event.listen(sync_engine, "before_cursor_execute", capture)
    try:
        await rig.run(worker)
        await rig.run(worker)
    finally:
        event.remove(sync_engine, "before_cursor_execute", capture)
    assert all(s.lstrip().upper().startswith("SELECT") for s in statements), statements
    assert len(statements) <= 2 * 3, statements
    await rig.checkpoint(add=2)
    for _ in range(3):
        await rig.run(worker, mine=1)
    assert [(a.size, a.status) for a in await rig.anchors()] == [(3, "final"), (5, "final")]
