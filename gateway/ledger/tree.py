"""Stored RFC 9162 Merkle trees over the log streams, so that roots and proofs never rebuild
a tree per request.

Why store perfect subtrees: every hash a root or proof needs is a chain of perfect subtrees
(see :mod:`gateway.ledger.merkle`), so with the hash of every complete aligned subtree kept in
``tree_nodes`` (level >= 1; level 0 is ``log_entries.leaf_hash``) any root or proof of any
size up to the folded size costs one indexed query for O(log n) rows.

Folding is incremental and idempotent. A node never changes once its subtree is complete, so
a folder computes exactly the rows any other folder would, and inserts them with
``ON CONFLICT DO NOTHING`` on the (stream, level, idx) primary key: several processes may fold
the same stream at once without locks and without harm. Each fold inserts, in one
transaction, every node that completes within the leaves it read; so whenever the level-1
node covering leaves ``2c-2, 2c-1`` exists, every node within the first ``2c`` leaves exists
too, and the folded size follows from two index lookups. Correctness does not rest on
transaction isolation (SQLite's driver, for one, only begins the transaction at the insert):
rows are never updated or deleted, so whatever a folder read is still true when it writes.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any, Final

from sqlalchemy import (
    BindParameter,
    CompoundSelect,
    Insert,
    Integer,
    Select,
    bindparam,
    literal_column,
    select,
    union_all,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.db.schema import LogEntryRow, TreeNodeRow
from gateway.errors import DsgwError, NotFoundError, ValidationError
from gateway.ledger.hashing import HashAlgorithm, hash_function
from gateway.ledger.log import STREAMS, LogUnavailableError
from gateway.ledger.merkle import (
    ConsistencyProof,
    InclusionProof,
    consistency_path,
    consistency_ranges,
    empty_root,
    inclusion_path,
    inclusion_ranges,
    perfect_subtrees,
    subtree_hash,
)

__all__ = ["MerkleTree"]

# log_entries.seq and tree_nodes.idx are 32-bit integers: no stored tree is larger.
_MAX_STORED_SIZE: Final = 2**31
_NODE_PREFIX: Final = b"\x01"

Block = tuple[int, int]


def _position(block: Block) -> tuple[int, int]:
    """(level, idx) of a perfect subtree given as a leaf range."""
    start, end = block
    level = (end - start).bit_length() - 1
    return level, start >> level


def _size_guards(size: int) -> list[Block]:
    """Blocks whose presence proves that the tree of ``size`` leaves is folded: its last leaf
    exists, and so does the level-1 node just before it (which implies all earlier nodes)."""
    guards = [(size - 1, size)]
    if size >= 2:
        pair = (size - 2) // 2 * 2
        guards.append((pair, pair + 2))
    return guards


class MerkleTree:
    """The RFC 9162 tree of one log stream, kept in ``tree_nodes`` by :meth:`fold`.

    Every method opens its own connection; the object holds no state beyond its arguments,
    so any number of instances, in any number of processes, may share a stream.
    """

    def __init__(
        self, engine: AsyncEngine, stream: str, *, algorithm: HashAlgorithm = "sha256"
    ) -> None:
        if stream not in STREAMS:
            raise ValueError(f"unknown log stream {stream!r}")
        hash_function(algorithm)  # refuses an unknown algorithm now, not at the first proof
        self._engine = engine
        self._stream = stream
        self._algorithm: HashAlgorithm = algorithm

    @property
    def stream(self) -> str:
        return self._stream

    @property
    def algorithm(self) -> HashAlgorithm:
        return self._algorithm

    # -- folding ------------------------------------------------------------------------

    async def fold(self, *, limit: int = 100_000) -> int:
        """Store every node completed by up to ``limit`` leaves past the folded position.

        Returns how many leaves this call paired into stored nodes (an even number; 0 once
        caught up). A trailing unpaired leaf needs no node, so :meth:`size` already counts it;
        it is paired, and counted here, when the next leaf arrives. Call repeatedly until it
        returns 0 to catch up a long log. Under concurrent folders, two calls may both count
        the same leaves; the stored rows are the same either way.

        Raises :class:`LogUnavailableError` if the store fails (nothing is stored then and
        the next fold starts over), :class:`DsgwError` if the stream has a hole or the stored
        frontier is missing, both of which mean the store was damaged.
        """
        if limit < 2:
            raise ValueError("fold: limit must be at least 2 leaves")
        try:
            async with self._engine.begin() as conn:
                paired = await self._paired(conn)
                frontier_blocks = perfect_subtrees(0, paired)
                found = await self._lookup(conn, frontier_blocks)
                if len(found) != len(frontier_blocks):
                    raise DsgwError(
                        f"tree: the stored nodes of the {self._stream!r} tree below leaf "
                        f"{paired} are incomplete; the tree state is damaged"
                    )
                leaves = await self._leaves(conn, paired, limit)
                rows = _fold(
                    self._algorithm,
                    self._stream,
                    paired,
                    [found[block] for block in frontier_blocks],
                    leaves,
                )
                if rows:
                    await conn.exec_driver_sql(_insert_sql(conn.dialect), rows)
        except (SQLAlchemyError, OSError) as exc:  # the cause goes to the log, not the caller
            raise LogUnavailableError(
                f"tree: folding the {self._stream!r} tree failed; retry shortly"
            ) from exc
        return len(leaves) - len(leaves) % 2

    async def _paired(self, conn: AsyncConnection) -> int:
        """Leaves covered by stored level-1 nodes; every node below them is stored too."""
        last = await conn.scalar(
            select(TreeNodeRow.idx)
            .where(TreeNodeRow.stream == self._stream, TreeNodeRow.level == 1)
            .order_by(TreeNodeRow.idx.desc())
            .limit(1)
        )
        return 0 if last is None else 2 * (int(last) + 1)

    async def _leaves(self, conn: AsyncConnection, start: int, limit: int) -> list[bytes]:
        result = await conn.execute(
            select(LogEntryRow.seq, LogEntryRow.leaf_hash)
            .where(LogEntryRow.stream == self._stream, LogEntryRow.seq >= start)
            .order_by(LogEntryRow.seq)
            .limit(limit)
        )
        leaves: list[bytes] = []
        for seq, leaf in result:
            if seq != start + len(leaves):
                # The (stream, seq) key and the writer make this impossible unless rows were
                # deleted; a tree over a log with a hole must never be signed.
                raise DsgwError(
                    f"tree: the {self._stream!r} log has no record {start + len(leaves)} "
                    f"but has record {seq}; refusing to fold a log with a hole"
                )
            leaves.append(bytes(leaf))
        return leaves

    # -- reading ------------------------------------------------------------------------

    async def size(self) -> int:
        """The folded size: the largest tree whose every node is stored (one query).

        That is every record up to and including the one after the last stored pair: a
        single trailing leaf needs no node, so a stream of one record has a tree of size 1
        before any fold.
        """
        try:
            async with self._engine.connect() as conn:
                row = (
                    await conn.execute(
                        select(
                            select(TreeNodeRow.idx)
                            .where(TreeNodeRow.stream == self._stream, TreeNodeRow.level == 1)
                            .order_by(TreeNodeRow.idx.desc())
                            .limit(1)
                            .scalar_subquery(),
                            select(LogEntryRow.seq)
                            .where(LogEntryRow.stream == self._stream)
                            .order_by(LogEntryRow.seq.desc())
                            .limit(1)
                            .scalar_subquery(),
                        )
                    )
                ).one()
        except (SQLAlchemyError, OSError) as exc:  # the cause goes to the log, not the caller
            raise LogUnavailableError(
                f"tree: the {self._stream!r} tree could not be read; retry shortly"
            ) from exc
        last_pair, last_seq = row
        paired = 0 if last_pair is None else 2 * (int(last_pair) + 1)
        records = 0 if last_seq is None else int(last_seq) + 1
        return min(records, paired + 1)

    async def root(self, size: int) -> bytes:
        """MTH of the first ``size`` leaves of the stream (one query).

        Raises :class:`ValidationError` for a negative size, :class:`NotFoundError` for a
        size beyond the folded size.
        """
        if size < 0:
            raise ValidationError(f"tree: a tree size cannot be negative (got {size})")
        if size == 0:
            return empty_root(self._algorithm)
        perfect = await self._subtrees(size, [(0, size)])
        return subtree_hash(self._algorithm, 0, size, perfect)

    async def inclusion_proof(self, index: int, size: int) -> InclusionProof:
        """The RFC 9162 inclusion proof of leaf ``index`` in the tree of ``size`` leaves
        (one query for O(log size) rows).

        Raises :class:`ValidationError` unless ``0 <= index < size``, :class:`NotFoundError`
        for a size beyond the folded size.
        """
        if not 0 <= index < size:
            raise ValidationError(
                f"tree: leaf {index} is not in a tree of size {size}; "
                "the leaf index must be at least 0 and below the tree size"
            )
        alg = self._algorithm
        perfect = await self._subtrees(size, inclusion_ranges(index, size))
        path = inclusion_path(alg, index, size, lambda s, e: subtree_hash(alg, s, e, perfect))
        return InclusionProof(leaf_index=index, tree_size=size, path=path)

    async def consistency_proof(self, first: int, second: int) -> ConsistencyProof:
        """The RFC 9162 consistency proof from the tree of ``first`` leaves to that of
        ``second`` (one query for O(log second) rows); empty when ``first == second``.

        Raises :class:`ValidationError` unless ``0 < first <= second`` (the empty tree is
        consistent with every tree and has no proof), :class:`NotFoundError` for a ``second``
        beyond the folded size.
        """
        if not 0 < first <= second:
            raise ValidationError(
                f"tree: no consistency proof from size {first} to size {second}; "
                "sizes must satisfy 0 < first <= second"
            )
        alg = self._algorithm
        perfect = await self._subtrees(second, consistency_ranges(first, second))
        path = consistency_path(alg, first, second, lambda s, e: subtree_hash(alg, s, e, perfect))
        return ConsistencyProof(first=first, second=second, path=path)

    async def _subtrees(self, size: int, ranges: Iterable[Block]) -> _Perfect:
        """Fetch, in one query, every perfect subtree the ``ranges`` of the tree of ``size``
        leaves decompose into, plus the blocks that prove ``size`` is folded."""
        if size > _MAX_STORED_SIZE:
            raise NotFoundError(f"tree: no {self._stream!r} tree of size {size} exists")
        needed = set(_size_guards(size))
        for start, end in ranges:
            needed.update(perfect_subtrees(start, end))
        found = await self._read(needed)
        if len(found) != len(needed):
            folded = await self.size()
            if size > folded:
                raise NotFoundError(
                    f"tree: the {self._stream!r} tree is folded to {folded} leaves; "
                    f"size {size} does not exist yet"
                )
            # A fold committed between the lookup and the size query: look again.
            found = await self._read(needed)
            if len(found) != len(needed):
                missing = sorted(_position(block) for block in needed - found.keys())
                raise DsgwError(
                    f"tree: the {self._stream!r} tree lacks stored nodes (level, idx) "
                    f"{missing} below its folded size {folded}; the tree state is damaged"
                )
        return _Perfect(found)

    async def _read(self, blocks: Iterable[Block]) -> dict[Block, bytes]:
        try:
            async with self._engine.connect() as conn:
                return await self._lookup(conn, blocks)
        except (SQLAlchemyError, OSError) as exc:  # the cause goes to the log, not the caller
            raise LogUnavailableError(
                f"tree: the {self._stream!r} tree could not be read; retry shortly"
            ) from exc

    async def _lookup(self, conn: AsyncConnection, blocks: Iterable[Block]) -> dict[Block, bytes]:
        """The stored hashes of those ``blocks`` that exist, in one statement."""
        by_level: dict[int, list[int]] = {}
        for block in blocks:
            level, idx = _position(block)
            by_level.setdefault(level, []).append(idx)
        if not by_level:
            return {}
        params: dict[str, Any] = {f"idx{level}": idxs for level, idxs in by_level.items()}
        params["stream"] = self._stream
        statement = _lookup_statement(tuple(sorted(by_level)))
        found: dict[Block, bytes] = {}
        for level, idx, hash_ in await conn.execute(statement, params):
            start = int(idx) << int(level)
            found[(start, start + (1 << int(level)))] = bytes(hash_)
        return found


class _Perfect:
    """``perfect(start, end)`` over the hashes one lookup fetched."""

    __slots__ = ("_found",)

    def __init__(self, found: dict[Block, bytes]) -> None:
        self._found = found

    def __call__(self, start: int, end: int) -> bytes:
        return self._found[(start, end)]


def _fold(
    algorithm: HashAlgorithm,
    stream: str,
    start: int,
    frontier: list[bytes],
    leaves: list[bytes],
) -> list[tuple[str, int, int, bytes]]:
    """Every node completed by appending ``leaves`` at position ``start`` to a tree whose
    perfect subtrees below ``start`` (largest first) are ``frontier``.

    The stack holds one hash per set bit of the position; a leaf at an odd position closes
    one node per trailing 1-bit. Rows come out ordered by the position that completes them,
    then by level: a fixed order shared by every folder, so concurrent inserts of the same
    rows take their key locks in the same order and cannot deadlock.
    """
    hash_ = hash_function(algorithm)
    stack = list(frontier)
    rows: list[tuple[str, int, int, bytes]] = []
    position = start
    for leaf in leaves:
        node = leaf
        level = 0
        idx = position
        while idx & 1:
            node = hash_(_NODE_PREFIX + stack.pop() + node)
            level += 1
            idx >>= 1
            rows.append((stream, level, idx, node))
        stack.append(node)
        position += 1
    return rows


@functools.lru_cache(maxsize=512)
def _lookup_statement(
    levels: tuple[int, ...],
) -> Select[int, int, bytes] | CompoundSelect[int, int, bytes]:
    """``SELECT level, idx, hash`` of the given idx lists (``:idx<level>``) in ``:stream``.

    One indexed IN per level, joined by UNION ALL: with a row-value IN or an OR of key
    equalities, SQLite uses only the stream prefix of the key and scans the whole stream.
    Built once per set of levels, because building and keying a statement of some twenty
    unions costs more than running it.
    """
    stream: BindParameter[str] = bindparam("stream")
    parts: list[Select[int, int, bytes]] = []
    for level in levels:
        idxs: BindParameter[list[int]] = bindparam(f"idx{level}", expanding=True)
        if level == 0:
            parts.append(
                select(
                    literal_column("0", Integer).label("level"),
                    LogEntryRow.seq.label("idx"),
                    LogEntryRow.leaf_hash.label("hash"),
                ).where(LogEntryRow.stream == stream, LogEntryRow.seq.in_(idxs))
            )
        else:
            parts.append(
                select(TreeNodeRow.level, TreeNodeRow.idx, TreeNodeRow.hash).where(
                    TreeNodeRow.stream == stream,
                    TreeNodeRow.level == literal_column(str(level), Integer),
                    TreeNodeRow.idx.in_(idxs),
                )
            )
    return parts[0] if len(parts) == 1 else union_all(*parts)


_NODE_COLUMNS: Final = ("stream", "level", "idx", "hash")


@functools.lru_cache(maxsize=4)
def _insert_sql(dialect: Dialect) -> str:
    """``INSERT ... ON CONFLICT (stream, level, idx) DO NOTHING`` compiled for ``dialect``,
    taking one positional tuple per row in the order of ``_NODE_COLUMNS``.

    Why the driver-level statement: SQLAlchemy's per-row parameter processing costs more
    than hashing the nodes and the database's own insert together; the SQL is still
    SQLAlchemy's, compiled once per dialect.
    """
    keys = ["stream", "level", "idx"]
    statement: Insert
    if dialect.name == "postgresql":
        statement = postgresql.insert(TreeNodeRow).on_conflict_do_nothing(index_elements=keys)
    elif dialect.name == "sqlite":
        statement = sqlite.insert(TreeNodeRow).on_conflict_do_nothing(index_elements=keys)
    else:
        raise DsgwError(f"tree: unsupported database dialect {dialect.name!r}")
    compiled = statement.compile(dialect=dialect)
    if tuple(compiled.positiontup or ()) != _NODE_COLUMNS:
        raise DsgwError(f"tree: unexpected parameter order in {compiled.string!r}")
    return compiled.string
