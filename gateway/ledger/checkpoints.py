"""Signing checkpoints of each log stream, and reading them back from the store.

The checkpoint model, the C2SP signed-note format and the key ring that verifies notes
live in :mod:`gateway.evidence`; this module is the service that folds each stream's tree
and signs a checkpoint of it (:class:`Checkpointer`), and the store reads of signed
checkpoints. The few evidence names older callers import from here are re-exported.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import Select, func, insert, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.clock import Clock, utc
from gateway.db.schema import CheckpointRow, LogEntryRow
from gateway.dependencies import DependencyHealth
from gateway.errors import DsgwError, NotFoundError
from gateway.evidence.checkpoint import Checkpoint
from gateway.evidence.errors import CheckpointError
from gateway.evidence.keys import CheckpointKeys, KeyRing
from gateway.evidence.notes import NoteSigner, NoteVerifier
from gateway.ledger.hashing import HashAlgorithm
from gateway.ledger.log import STREAMS
from gateway.ledger.tree import MerkleTree
from gateway.tasks import Supervised

# Checkpoint, CheckpointError, CheckpointKeys, KeyRing, NoteSigner and NoteVerifier are
# re-exported from gateway.evidence for the callers that import them from here.
__all__ = [
    "Checkpoint",
    "CheckpointError",
    "CheckpointKeys",
    "Checkpointer",
    "KeyRing",
    "NoteSigner",
    "NoteVerifier",
    "checkpoint_from_row",
    "latest_checkpoint",
]

log = logging.getLogger(__name__)

# Leaves one fold reads at most (a long log is folded in several transactions).
FOLD_LEAVES = 100_000
# Records a stream may grow by before a round folds it ahead of its next checkpoint.
FOLD_EVERY = 1024

# The last position of every stream, in one row (STREAMS order).
_HEADS = select(
    *(
        select(func.max(LogEntryRow.seq)).where(LogEntryRow.stream == stream).scalar_subquery()
        for stream in STREAMS
    )
)


def _newest(stream: str, *columns: Any) -> Select[Any]:
    """``columns`` of the stream's newest checkpoint."""
    query = select(*columns).where(CheckpointRow.stream == stream)
    return query.order_by(CheckpointRow.size.desc()).limit(1)


def checkpoint_from_row(row: Any) -> Checkpoint:
    """A checkpoint from a ``checkpoints`` row (as stored; not re-verified)."""
    algorithm: HashAlgorithm = "sm3" if row.algorithm == "sm3" else "sha256"
    origin = row.note.split("\n", 1)[0]
    return Checkpoint(origin, row.size, bytes(row.root), algorithm, row.note)


async def latest_checkpoint(engine: AsyncEngine, stream: str) -> Checkpoint:
    """The newest checkpoint of ``stream``; :class:`NotFoundError` if there is none yet."""
    async with engine.connect() as conn:
        row = (await conn.execute(_newest(stream, CheckpointRow.__table__))).first()
    if row is None:
        raise NotFoundError(f"stream {stream} has no checkpoint yet")
    return checkpoint_from_row(row)


class Checkpointer:
    """Folds each stream's tree and signs a checkpoint every ``every_records`` records or
    ``every_seconds`` seconds, whichever comes first.

    Several gateway processes may run one: the (stream, size) primary key keeps a single
    checkpoint per tree size, and every process would sign the same body.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        signer: NoteSigner,
        clock: Clock,
        *,
        deployment: str,
        algorithm: HashAlgorithm = "sha256",
        every_records: int = 10_000,
        every_seconds: float = 5.0,
        health: DependencyHealth | None = None,
    ) -> None:
        self._engine = engine
        # A store outage is logged there once, not once per stream and round.
        self._health = health or DependencyHealth()
        self._signer = signer
        self._clock = clock
        self._deployment = deployment
        self._algorithm: HashAlgorithm = algorithm
        self._every_records = every_records
        self._every_seconds = every_seconds
        self._trees = {s: MerkleTree(engine, s, algorithm=algorithm) for s in STREAMS}
        self._task = Supervised("dsgw-checkpointer", log=log)
        self._stopping = asyncio.Event()
        self.signed = 0
        # stream -> (size, signing time) of its newest checkpoint, as last read or signed here.
        self._signed: dict[str, tuple[int, dt.datetime | None]] = {}
        # stream -> a size its tree is folded to at least, as folded here.
        self._folded: dict[str, int] = {}
        # Called after each checkpoint this process signs (the anchoring worker's wake-up).
        self.on_signed: Callable[[], None] | None = None

    def origin(self, stream: str) -> str:
        return f"{self._deployment}/{stream}"

    async def checkpoint(self, stream: str, *, force: bool = True) -> Checkpoint | None:
        """Fold ``stream`` and sign a checkpoint of its current size if it grew (and, unless
        ``force``, if a size or time bound was reached). Returns the new checkpoint."""
        await self._fold(stream)
        tree = self._trees[stream]
        size = await tree.size()
        self._folded[stream] = size
        if size == 0:
            return None
        last_size, last_at = await self._last_signed(stream)
        self._signed[stream] = (last_size, last_at)
        if size <= last_size:
            return None
        if not force and not self._due(size, last_size, last_at):
            return None
        root = await tree.root(size)
        text = Checkpoint.body(self.origin(stream), size, root, self._algorithm)
        note = self._signer.sign(text)
        now = self._clock.now()
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    insert(CheckpointRow).values(
                        stream=stream,
                        size=size,
                        root=root,
                        algorithm=self._algorithm,
                        note=note,
                        key_id=self._signer.key_id.hex(),
                        created_at=now,
                    )
                )
        except IntegrityError:
            return None  # another process signed this size first
        self._signed[stream] = (size, now)
        self.signed += 1
        if self.on_signed is not None:
            self.on_signed()
        return Checkpoint(self.origin(stream), size, root, self._algorithm, note)

    async def _fold(self, stream: str) -> None:
        tree = self._trees[stream]
        # A fold that read fewer leaves than its limit has caught up with the log.
        while await tree.fold(limit=FOLD_LEAVES) >= FOLD_LEAVES - 1:
            pass

    def _due(self, size: int, last_size: int, last_at: dt.datetime | None) -> bool:
        """Whether a stream of ``size`` records is due a checkpoint after one of
        ``last_size`` signed at ``last_at``: a size or time bound is reached."""
        if size <= last_size:
            return False
        if size - last_size >= self._every_records or last_at is None:
            return True
        return (self._clock.now() - last_at).total_seconds() >= self._every_seconds

    async def _last_signed(self, stream: str) -> tuple[int, dt.datetime | None]:
        """Size and signing time of the stream's newest checkpoint ((0, None) for none)."""
        columns = (CheckpointRow.size, CheckpointRow.created_at)
        async with self._engine.connect() as conn:
            row = (await conn.execute(_newest(stream, *columns))).first()
        return (0, None) if row is None else (int(row.size), utc(row.created_at))

    async def _heads(self) -> dict[str, int]:
        """How many records each stream holds, in one statement (an index seek each)."""
        async with self._engine.connect() as conn:
            row = (await conn.execute(_HEADS)).one()
        heads = zip(STREAMS, row, strict=True)
        return {stream: 0 if last is None else int(last) + 1 for stream, last in heads}

    async def run_round(self) -> None:
        """Checkpoint every stream that is due one; store failures are logged, not raised.

        Why the heads first: a round runs twice a second whatever the load, and folding and
        reading the checkpoints of a stream that is not due costs several statements. The
        heads and the checkpoints this process last read or signed say which streams are;
        a stream signed elsewhere meanwhile is merely checked once more (:meth:`checkpoint`
        reads the store before it signs). Between checkpoints a stream is folded every
        :data:`FOLD_EVERY` records, so that no fold holds the store's write lock (and the
        call log's commits) for the records of a whole checkpoint interval.
        """
        try:
            heads = await self._heads()
        except (SQLAlchemyError, OSError) as exc:
            if not self._health.absorb(exc):
                log.warning("checkpoints: reading the log heads failed, will retry: %s", exc)
            return
        for stream, head in heads.items():
            try:
                if self._due(head, *self._signed.get(stream, (0, None))):
                    await self.checkpoint(stream, force=False)
                elif head - self._folded.get(stream, 0) >= FOLD_EVERY:
                    await self._fold(stream)
                    self._folded[stream] = head  # at least: the fold read what was there
            except (SQLAlchemyError, OSError, DsgwError) as exc:
                if not self._health.absorb(exc):
                    log.warning("checkpoint of %s failed, will retry: %s", stream, exc)

    async def run(self, *, poll_seconds: float = 0.5) -> None:
        """Checkpoint until :meth:`stop`; store failures are logged and retried, never fatal."""
        while not self._stopping.is_set():
            await self.run_round()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), poll_seconds)

    def start(self) -> None:
        if not self._task.running:
            self._stopping.clear()
            self._task.start(self.run)

    async def stop(self) -> None:
        """Let the loop finish its current round and end. Never cancelled mid-transaction:
        a write torn by cancellation could hold the store's lock past shutdown."""
        if self._task.running:
            self._stopping.set()
            await self._task.join()
