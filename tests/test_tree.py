"""Stored Merkle trees over the real store (SQLite and PostgreSQL): folding, roots, proofs."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import delete, event, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.engines import create_engine, migrate
from gateway.db.schema import LogEntryRow, TreeNodeRow
from gateway.errors import DsgwError, NotFoundError, ValidationError
from gateway.ledger.hashing import HashAlgorithm, hash_function
from gateway.ledger.log import LogWriter, PendingRecord
from gateway.ledger.merkle import root_from_leaves, verify_consistency, verify_inclusion
from gateway.ledger.tree import MerkleTree
from gateway.settings import Settings

NOW = dt.datetime(2026, 11, 21, 12, 0, 0, tzinfo=dt.UTC)

Node = tuple[int, int, bytes]


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings.resolved_database_url)
    await migrate(engine)
    yield engine
    await engine.dispose()


async def _append(
    engine: AsyncEngine, count: int, *, stream: str = "calls", algorithm: HashAlgorithm = "sha256"
) -> None:
    writer = LogWriter(engine, algorithm=algorithm)
    await writer.start()
    try:
        await asyncio.gather(
            *(
                writer.append(
                    PendingRecord(stream=stream, kind="data", recorded_at=NOW, body={"i": i})
                )
                for i in range(count)
            )
        )
    finally:
        await writer.close()


async def _leaves(engine: AsyncEngine, stream: str = "calls") -> list[bytes]:
    async with engine.connect() as conn:
        rows = await conn.scalars(
            select(LogEntryRow.leaf_hash)
            .where(LogEntryRow.stream == stream)
            .order_by(LogEntryRow.seq)
        )
        return [bytes(leaf) for leaf in rows]


async def _stored_nodes(engine: AsyncEngine, stream: str = "calls") -> set[Node]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(TreeNodeRow.level, TreeNodeRow.idx, TreeNodeRow.hash).where(
                TreeNodeRow.stream == stream
            )
        )
        return {(level, idx, bytes(hash_)) for level, idx, hash_ in rows}


def _expected_nodes(algorithm: HashAlgorithm, leaves: list[bytes]) -> set[Node]:
    """Every complete aligned subtree of level >= 1, computed from scratch."""
    nodes: set[Node] = set()
    level = 1
    while 2**level <= len(leaves):
        width = 2**level
        for idx in range(len(leaves) // width):
            chunk = leaves[idx * width : (idx + 1) * width]
            nodes.add((level, idx, root_from_leaves(algorithm, chunk)))
        level += 1
    return nodes


async def _fold_all(tree: MerkleTree, limit: int = 100_000) -> int:
    total = 0
    while folded := await tree.fold(limit=limit):
        total += folded
    return total


@contextmanager
def _count_queries(engine: AsyncEngine) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(*args: object) -> None:
        statements.append(str(args[2]))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


@pytest.mark.parametrize("algorithm", ["sha256", "sm3"])
async def test_roots_and_proofs_match_the_log(
    engine: AsyncEngine, algorithm: HashAlgorithm
) -> None:
    await _append(engine, 300, algorithm=algorithm)
    tree = MerkleTree(engine, "calls", algorithm=algorithm)
    assert await tree.size() == 1  # one leaf needs no stored node
    assert await _fold_all(tree) == 300
    assert await tree.size() == 300
    leaves = await _leaves(engine)
    assert await _stored_nodes(engine) == _expected_nodes(algorithm, leaves)

    sizes = sorted({*range(0, 301, 13), 1, 2, 3, 4, 5, 255, 256, 257, 299, 300})
    roots = {size: await tree.root(size) for size in sizes}
    for size, root in roots.items():
        assert root == root_from_leaves(algorithm, leaves[:size]), size
    for size in sizes[1:]:
        for index in sorted({0, size // 3, size // 2, size - 1}):
            proof = await tree.inclusion_proof(index, size)
            assert verify_inclusion(algorithm, leaves[index], proof, roots[size]), (index, size)
        for first in sizes[1:]:
            if first <= size and (first % 5 == 0 or first < 6 or first == size):
                proof2 = await tree.consistency_proof(first, size)
                assert verify_consistency(algorithm, proof2, roots[first], roots[size])


async def test_chunked_folds_store_the_same_nodes_as_one_fold(engine: AsyncEngine) -> None:
    await _append(engine, 257)
    tree = MerkleTree(engine, "calls")
    folds = []
    while folded := await tree.fold(limit=7):
        folds.append(folded)
        assert await tree.size() == sum(folds) + 1
    assert sum(folds) == 256  # the 257th leaf waits for its pair, yet is in the tree
    assert await tree.size() == 257
    chunked = await _stored_nodes(engine)

    async with engine.begin() as conn:
        await conn.execute(delete(TreeNodeRow))
    assert await tree.fold() == 256
    assert (
        await _stored_nodes(engine) == chunked == _expected_nodes("sha256", await _leaves(engine))
    )
    # Refolding is a no-op, and one more record pairs the waiting leaf.
    assert await tree.fold() == 0
    await _append(engine, 1)
    assert await tree.fold() == 2
    assert await tree.size() == 258
    assert await tree.root(258) == root_from_leaves("sha256", await _leaves(engine))


async def test_concurrent_folders_and_writers(settings: Settings, engine: AsyncEngine) -> None:
    """Two folders (as in two processes, each with its own engine) fold while records arrive."""
    other = create_engine(settings.resolved_database_url)
    trees = [MerkleTree(engine, "calls"), MerkleTree(other, "calls")]
    folded = [0, 0]

    async def append_in_waves() -> None:
        for _ in range(20):
            await _append(engine, 20)

    appending = asyncio.create_task(append_in_waves())

    async def fold_while_appending(which: int, limit: int) -> None:
        while not appending.done():
            folded[which] += await trees[which].fold(limit=limit)
            await asyncio.sleep(0)

    async def catch_up(which: int, limit: int) -> None:
        folded[which] += await _fold_all(trees[which], limit)

    try:
        await asyncio.gather(fold_while_appending(0, 16), fold_while_appending(1, 37))
        await appending
        # Both catch up at once from the same point: they insert the same rows.
        await asyncio.gather(catch_up(0, 50), catch_up(1, 64))
    finally:
        await other.dispose()
    assert sum(folded) >= 400  # each leaf was paired by one folder or by both
    leaves = await _leaves(engine)
    assert len(leaves) == 400
    assert await _stored_nodes(engine) == _expected_nodes("sha256", leaves)
    assert await trees[0].size() == 400
    root = await trees[0].root(400)
    assert root == root_from_leaves("sha256", leaves)
    assert verify_inclusion("sha256", leaves[123], await trees[0].inclusion_proof(123, 400), root)


async def test_proofs_need_logarithmically_many_queries(engine: AsyncEngine) -> None:
    n = 1000
    await _append(engine, n)
    tree = MerkleTree(engine, "calls")
    await _fold_all(tree)
    leaves = await _leaves(engine)
    bound = 2 * math.log2(n) + 5
    for size in (n, n - 1, 777, 513):
        with _count_queries(engine) as statements:
            root = await tree.root(size)
        assert len(statements) <= bound
        for index in (0, 1, size // 2, size - 2, size - 1):
            with _count_queries(engine) as statements:
                proof = await tree.inclusion_proof(index, size)
            assert len(statements) <= bound, statements
            assert verify_inclusion("sha256", leaves[index], proof, root)
        for first in (1, 2, 3, 256, size - 1, size):
            with _count_queries(engine) as statements:
                consistency = await tree.consistency_proof(first, size)
            assert len(statements) <= bound, statements
            first_root = root_from_leaves("sha256", leaves[:first])
            assert verify_consistency("sha256", consistency, first_root, root)


async def test_out_of_range_requests_are_refused(engine: AsyncEngine) -> None:
    tree = MerkleTree(engine, "governance")
    assert await tree.size() == 0
    assert await tree.root(0) == hash_function("sha256")(b"")
    with pytest.raises(NotFoundError, match="folded to 0"):
        await tree.inclusion_proof(0, 1)
    with pytest.raises(NotFoundError):
        await tree.root(1)

    await _append(engine, 10, stream="governance")
    assert await tree.size() == 1
    with pytest.raises(NotFoundError, match="folded to 1 leaves"):
        await tree.root(5)
    assert await tree.fold() == 10
    with pytest.raises(NotFoundError, match="size 11 does not exist"):
        await tree.consistency_proof(11, 11)
    with pytest.raises(NotFoundError):
        await tree.inclusion_proof(3, 2**40)
    assert (await tree.consistency_proof(10, 10)).path == ()

    for call in (
        lambda: tree.root(-1),
        lambda: tree.inclusion_proof(-1, 5),
        lambda: tree.inclusion_proof(5, 5),
        lambda: tree.inclusion_proof(0, 0),
        lambda: tree.consistency_proof(0, 5),
        lambda: tree.consistency_proof(6, 5),
    ):
        with pytest.raises(ValidationError):
            await call()
    with pytest.raises(ValueError, match="unknown log stream"):
        MerkleTree(engine, "nope")
    with pytest.raises(ValueError, match="limit"):
        await tree.fold(limit=1)


async def test_damaged_tree_state_is_reported_as_damage(engine: AsyncEngine) -> None:
    await _append(engine, 16)
    tree = MerkleTree(engine, "calls")
    await tree.fold()
    async with engine.begin() as conn:
        await conn.execute(delete(TreeNodeRow).where(TreeNodeRow.level == 2, TreeNodeRow.idx == 1))
    with pytest.raises(DsgwError, match="damaged") as caught:
        await tree.inclusion_proof(0, 16)
    assert not isinstance(caught.value, NotFoundError)
