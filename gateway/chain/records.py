"""Anchors and anchor transactions as the gateway's store keeps them (tables ``anchors`` and
``anchor_transactions``, see :mod:`gateway.db.schema`).

:class:`AnchorStore` is the anchoring worker's access to one registry's rows; every query it
makes is bounded by what is in flight, never by the length of the anchoring history. The
records it returns, and :func:`covering_anchor` for readers such as evidence bundles, are in
:mod:`gateway.chain.anchors`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.chain.anchors import (
    LIVE_TRANSACTION,
    AnchorRecord,
    AnchorTransaction,
    covering_anchor,
    opt_int,
    recorded_covering_anchor,
)
from gateway.chain.errors import ChainError
from gateway.clock import Clock
from gateway.db.schema import AnchorRow, AnchorTransactionRow

__all__ = [
    "LIVE_TRANSACTION",
    "AnchorRecord",
    "AnchorStore",
    "AnchorTransaction",
    "covering_anchor",
    "recorded_covering_anchor",
]


class AnchorStore:
    """The rows of one registry (``chain_id``, ``contract``) signed for by ``account``.

    Methods taking a ``conn`` join the caller's transaction; the others run their own.
    """

    def __init__(
        self, engine: AsyncEngine, *, chain_id: int, contract: str, account: str, clock: Clock
    ) -> None:
        self.engine = engine
        self._chain_id = chain_id
        self._contract = contract
        self._account = account
        self._clock = clock

    @property
    def chain_id(self) -> int:
        return self._chain_id

    @property
    def contract(self) -> str:
        return self._contract

    def _here(self) -> ColumnElement[bool]:
        return and_(AnchorRow.chain_id == self._chain_id, AnchorRow.contract == self._contract)

    # -- reading ------------------------------------------------------------------------

    async def anchors(
        self,
        statuses: Sequence[str],
        *,
        stream: str | None = None,
        above: int | None = None,
    ) -> list[AnchorRecord]:
        """Anchors in ``statuses`` (of ``stream``, of a size above ``above``), oldest first."""
        query = (
            select(AnchorRow.__table__)
            .where(self._here(), AnchorRow.status.in_(statuses))
            .order_by(AnchorRow.id)
        )
        if stream is not None:
            query = query.where(AnchorRow.stream == stream)
        if above is not None:
            query = query.where(AnchorRow.size > above)
        async with self.engine.connect() as conn:
            return [AnchorRecord.from_row(row) for row in await conn.execute(query)]

    async def anchor_at(self, stream: str, size: int) -> AnchorRecord | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(AnchorRow.__table__).where(
                        self._here(), AnchorRow.stream == stream, AnchorRow.size == size
                    )
                )
            ).first()
        return None if row is None else AnchorRecord.from_row(row)

    async def top_size(self, stream: str, statuses: Sequence[str]) -> int:
        """The largest size of ``stream``'s anchors in ``statuses`` (0 if none)."""
        async with self.engine.connect() as conn:
            value = await conn.scalar(
                select(func.max(AnchorRow.size)).where(
                    self._here(), AnchorRow.stream == stream, AnchorRow.status.in_(statuses)
                )
            )
        return int(value or 0)

    async def transactions(self, anchor_ids: Iterable[int]) -> dict[int, list[AnchorTransaction]]:
        """Every transaction of each anchor, oldest first."""
        ids = list(anchor_ids)
        found: dict[int, list[AnchorTransaction]] = {i: [] for i in ids}
        if not ids:
            return found
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(AnchorTransactionRow.__table__)
                .where(AnchorTransactionRow.anchor_id.in_(ids))
                .order_by(AnchorTransactionRow.id)
            )
            for row in rows:
                tx = AnchorTransaction.from_row(row)
                found[tx.anchor_id].append(tx)
        return found

    async def highest_live_nonce(self) -> int | None:
        """The highest nonce a live transaction of the account holds on this chain."""
        async with self.engine.connect() as conn:
            value = await conn.scalar(
                select(func.max(AnchorTransactionRow.nonce)).where(
                    AnchorTransactionRow.chain_id == self._chain_id,
                    AnchorTransactionRow.account == self._account,
                    AnchorTransactionRow.status.in_(LIVE_TRANSACTION),
                )
            )
        return opt_int(value)

    # -- writing ------------------------------------------------------------------------

    async def insert_queued(
        self, conn: AsyncConnection, stream: str, size: int, root: bytes
    ) -> None:
        now = self._clock.now()
        await conn.execute(
            insert(AnchorRow).values(
                chain_id=self._chain_id,
                contract=self._contract,
                stream=stream,
                size=size,
                root=root,
                status="queued",
                confirmations=0,
                requeues=0,
                created_at=now,
                updated_at=now,
            )
        )

    async def record_found(
        self,
        conn: AsyncConnection,
        stream: str,
        size: int,
        root: bytes,
        *,
        block_number: int,
        block_hash: bytes,
        tx_hash: bytes,
    ) -> None:
        """Record an anchor seen on chain (not sent from this database) as ``mined``."""
        now = self._clock.now()
        values: dict[str, Any] = {
            "status": "mined",
            "block_number": block_number,
            "block_hash": block_hash,
            "tx_hash": tx_hash,
            "confirmations": 0,
            "last_error": "found on chain, not in this database; adopted",
            "updated_at": now,
        }
        existing = await conn.scalar(
            select(AnchorRow.id).where(
                self._here(), AnchorRow.stream == stream, AnchorRow.size == size
            )
        )
        if existing is None:
            await conn.execute(
                insert(AnchorRow).values(
                    chain_id=self._chain_id,
                    contract=self._contract,
                    stream=stream,
                    size=size,
                    root=root,
                    requeues=0,
                    created_at=now,
                    **values,
                )
            )
        else:
            await conn.execute(update(AnchorRow).where(AnchorRow.id == existing).values(values))

    async def set_status(
        self, conn: AsyncConnection, anchor_id: int, status: str, **values: Any
    ) -> None:
        await conn.execute(
            update(AnchorRow)
            .where(AnchorRow.id == anchor_id)
            .values(status=status, updated_at=self._clock.now(), **values)
        )

    async def claim(self, conn: AsyncConnection, anchor: AnchorRecord) -> None:
        """Move a queued anchor to ``pending``; refuses if it is no longer queued (a second
        worker on the same database)."""
        moved = await conn.execute(
            update(AnchorRow)
            .where(AnchorRow.id == anchor.id, AnchorRow.status == "queued")
            .values(status="pending", last_error=None, updated_at=self._clock.now())
        )
        if moved.rowcount != 1:
            raise ChainError(
                f"anchoring: anchor {anchor.stream}@{anchor.size} changed while it was being "
                "submitted; is a second anchoring worker running on this database?"
            )

    async def requeue(
        self, conn: AsyncConnection, anchor: AnchorRecord, status: str, reason: str
    ) -> None:
        """Send ``anchor`` back to ``status`` (queued, pending or superseded), forgetting its
        block, counting the requeue and saying why."""
        await self.set_status(
            conn,
            anchor.id,
            status,
            block_number=None,
            block_hash=None,
            tx_hash=None,
            confirmations=0,
            final_at=None,
            requeues=AnchorRow.requeues + 1,
            last_error=reason,
        )

    async def note_error(self, anchor_id: int, message: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(AnchorRow)
                .where(AnchorRow.id == anchor_id)
                .values(last_error=message, updated_at=self._clock.now())
            )

    async def set_transactions(
        self,
        conn: AsyncConnection,
        anchor_id: int,
        status: str,
        *,
        among: Sequence[str] = (*LIVE_TRANSACTION, "mined"),
        nonce: int | None = None,
    ) -> None:
        """Move ``anchor_id``'s transactions in ``among`` (with ``nonce``) to ``status``."""
        query = update(AnchorTransactionRow).where(
            AnchorTransactionRow.anchor_id == anchor_id,
            AnchorTransactionRow.status.in_(among),
        )
        if nonce is not None:
            query = query.where(AnchorTransactionRow.nonce == nonce)
        await conn.execute(query.values(status=status, updated_at=self._clock.now()))

    async def set_transaction(
        self, conn: AsyncConnection, tx_id: int, status: str, **values: Any
    ) -> None:
        await conn.execute(
            update(AnchorTransactionRow)
            .where(AnchorTransactionRow.id == tx_id)
            .values(status=status, updated_at=self._clock.now(), **values)
        )

    async def mark_sent(self, tx: AnchorTransaction) -> None:
        """Record a (re)broadcast: a ``signed`` transaction becomes ``sent``."""
        async with self.engine.begin() as conn:
            await self.set_transaction(
                conn,
                tx.id,
                "sent" if tx.status == "signed" else tx.status,
                sent_at=self._clock.now(),
            )

    async def store_transaction(
        self,
        conn: AsyncConnection,
        anchor: AnchorRecord,
        *,
        nonce: int,
        tx_hash: bytes,
        raw: bytes,
        gas: int,
        max_fee: int,
        priority_fee: int,
    ) -> AnchorTransaction:
        """Store a signed transaction of ``anchor`` as ``signed``.

        A transaction signed again byte for byte (same nonce, input and fees, e.g. when a
        reset dev chain is anchored from scratch) is the same transaction: its old row is
        revived instead of duplicated.
        """
        now = self._clock.now()
        row = (
            await conn.execute(
                select(AnchorTransactionRow.id, AnchorTransactionRow.anchor_id).where(
                    AnchorTransactionRow.tx_hash == tx_hash
                )
            )
        ).first()
        if row is not None:
            if int(row.anchor_id) != anchor.id:
                raise ChainError(
                    f"anchoring: transaction {tx_hash.hex()} is recorded for another anchor"
                )
            tx_id = int(row.id)
            await self.set_transaction(conn, tx_id, "signed", sent_at=None)
        else:
            new_id = await conn.scalar(
                insert(AnchorTransactionRow)
                .values(
                    anchor_id=anchor.id,
                    chain_id=self._chain_id,
                    account=self._account,
                    nonce=nonce,
                    tx_hash=tx_hash,
                    raw=raw,
                    gas=gas,
                    max_fee=max_fee,
                    priority_fee=priority_fee,
                    status="signed",
                    created_at=now,
                    sent_at=None,
                    updated_at=now,
                )
                .returning(AnchorTransactionRow.id)
            )
            assert new_id is not None
            tx_id = int(new_id)
        return AnchorTransaction(
            id=tx_id,
            anchor_id=anchor.id,
            nonce=nonce,
            tx_hash=tx_hash,
            raw=raw,
            gas=gas,
            max_fee=max_fee,
            priority_fee=priority_fee,
            status="signed",
            created_at=now,
            sent_at=None,
        )
