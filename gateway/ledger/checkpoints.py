"""Signing checkpoints of each log stream, and reading them back from the store.

The checkpoint model, the C2SP signed-note format and the key ring that verifies notes
live in :mod:`gateway.evidence`; this module is the service that folds each stream's tree
and signs a checkpoint of it (:class:`Checkpointer`), and the store reads of signed
checkpoints. The few evidence names older callers import from here are re-exported.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.clock import Clock, utc
from gateway.db.schema import CheckpointRow
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


def checkpoint_from_row(row: Any) -> Checkpoint:
    """A checkpoint from a ``checkpoints`` row (as stored; not re-verified)."""
    algorithm: HashAlgorithm = "sm3" if row.algorithm == "sm3" else "sha256"
    origin = row.note.split("\n", 1)[0]
    return Checkpoint(origin, row.size, bytes(row.root), algorithm, row.note)


async def latest_checkpoint(engine: AsyncEngine, stream: str) -> Checkpoint:
    """The newest checkpoint of ``stream``; :class:`NotFoundError` if there is none yet."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(CheckpointRow.__table__)
                .where(CheckpointRow.stream == stream)
                .order_by(CheckpointRow.size.desc())
                .limit(1)
            )
        ).first()
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
        # Called after each checkpoint this process signs (the anchoring worker's wake-up).
        self.on_signed: Callable[[], None] | None = None

    def origin(self, stream: str) -> str:
        return f"{self._deployment}/{stream}"

    async def checkpoint(self, stream: str, *, force: bool = True) -> Checkpoint | None:
        """Fold ``stream`` and sign a checkpoint of its current size if it grew (and, unless
        ``force``, if a size or time bound was reached). Returns the new checkpoint."""
        tree = self._trees[stream]
        while await tree.fold() > 0:
            pass
        size = await tree.size()
        if size == 0:
            return None
        try:
            last = await latest_checkpoint(self._engine, stream)
            last_size = last.size
        except NotFoundError:
            last_size = 0
        if size <= last_size:
            return None
        if not force and size - last_size < self._every_records:
            elapsed = await self._since_last(stream)
            if elapsed is not None and elapsed < self._every_seconds:
                return None
        root = await tree.root(size)
        text = Checkpoint.body(self.origin(stream), size, root, self._algorithm)
        note = self._signer.sign(text)
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
                        created_at=self._clock.now(),
                    )
                )
        except IntegrityError:
            return None  # another process signed this size first
        self.signed += 1
        if self.on_signed is not None:
            self.on_signed()
        return Checkpoint(self.origin(stream), size, root, self._algorithm, note)

    async def _since_last(self, stream: str) -> float | None:
        async with self._engine.connect() as conn:
            last = await conn.scalar(
                select(CheckpointRow.created_at)
                .where(CheckpointRow.stream == stream)
                .order_by(CheckpointRow.size.desc())
                .limit(1)
            )
        if last is None:
            return None
        return (self._clock.now() - utc(last)).total_seconds()

    async def run(self, *, poll_seconds: float = 0.5) -> None:
        """Checkpoint until :meth:`stop`; store failures are logged and retried, never fatal."""
        while not self._stopping.is_set():
            for stream in STREAMS:
                try:
                    await self.checkpoint(stream, force=False)
                except (SQLAlchemyError, OSError, DsgwError) as exc:
                    if not self._health.absorb(exc):
                        log.warning("checkpoint of %s failed, will retry: %s", stream, exc)
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
