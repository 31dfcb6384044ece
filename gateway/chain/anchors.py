"""Anchors and anchor transactions as read from the store, and the anchor covering a size.

The models are what :class:`gateway.chain.records.AnchorStore` hands out;
:func:`covering_anchor` and :func:`recorded_covering_anchor` are for readers such as
evidence bundles, which need no store of their own.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.clock import utc
from gateway.db.schema import AnchorRegistryRow, AnchorRow
from gateway.errors import DsgwError

__all__ = [
    "LIVE_TRANSACTION",
    "AnchorRecord",
    "AnchorTransaction",
    "covering_anchor",
    "opt_int",
    "recorded_covering_anchor",
]

LIVE_TRANSACTION: Final = ("signed", "sent", "replaced")
"""Transaction statuses that may still end up mined."""


def opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _opt_bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


def _opt_time(value: Any) -> dt.datetime | None:
    return None if value is None else utc(value)


@dataclass(frozen=True, slots=True)
class AnchorRecord:
    """One row of ``anchors``: a checkpoint (stream, size, root) on one registry."""

    id: int
    chain_id: int
    contract: str
    stream: str
    size: int
    root: bytes
    status: str
    block_number: int | None
    block_hash: bytes | None
    tx_hash: bytes | None
    confirmations: int
    requeues: int
    last_error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    final_at: dt.datetime | None

    @classmethod
    def from_row(cls, row: Any) -> AnchorRecord:
        return cls(
            id=int(row.id),
            chain_id=int(row.chain_id),
            contract=str(row.contract),
            stream=str(row.stream),
            size=int(row.size),
            root=bytes(row.root),
            status=str(row.status),
            block_number=opt_int(row.block_number),
            block_hash=_opt_bytes(row.block_hash),
            tx_hash=_opt_bytes(row.tx_hash),
            confirmations=int(row.confirmations),
            requeues=int(row.requeues),
            last_error=None if row.last_error is None else str(row.last_error),
            created_at=utc(row.created_at),
            updated_at=utc(row.updated_at),
            final_at=_opt_time(row.final_at),
        )


@dataclass(frozen=True, slots=True)
class AnchorTransaction:
    """One row of ``anchor_transactions``: a signed transaction, exactly as sent (``raw``)."""

    id: int
    anchor_id: int
    nonce: int
    tx_hash: bytes
    raw: bytes
    gas: int
    max_fee: int
    priority_fee: int
    status: str
    created_at: dt.datetime
    sent_at: dt.datetime | None

    @classmethod
    def from_row(cls, row: Any) -> AnchorTransaction:
        return cls(
            id=int(row.id),
            anchor_id=int(row.anchor_id),
            nonce=int(row.nonce),
            tx_hash=bytes(row.tx_hash),
            raw=bytes(row.raw),
            gas=int(row.gas),
            max_fee=int(row.max_fee),
            priority_fee=int(row.priority_fee),
            status=str(row.status),
            created_at=utc(row.created_at),
            sent_at=_opt_time(row.sent_at),
        )


async def covering_anchor(
    engine: AsyncEngine,
    stream: str,
    size: int,
    *,
    chain_id: int,
    contract: str,
    statuses: Sequence[str] = ("final",),
) -> AnchorRecord | None:
    """The smallest final anchor (or one in ``statuses``) of ``stream`` on the registry
    that covers a tree of ``size`` leaves (its size is at least ``size``), or None if none
    does yet."""
    try:
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    select(AnchorRow.__table__)
                    .where(
                        AnchorRow.chain_id == chain_id,
                        AnchorRow.contract == contract,
                        AnchorRow.stream == stream,
                        AnchorRow.status.in_(statuses),
                        AnchorRow.size >= size,
                    )
                    .order_by(AnchorRow.size)
                    .limit(1)
                )
            ).first()
    except SQLAlchemyError as exc:
        raise DsgwError(f"anchoring: reading anchors failed: {exc}") from exc
    return None if row is None else AnchorRecord.from_row(row)


async def recorded_covering_anchor(
    engine: AsyncEngine,
    stream: str,
    size: int,
    *,
    contract: str = "",
    statuses: Sequence[str] = ("final",),
) -> AnchorRecord | None:
    """:func:`covering_anchor` on the registry in use, read from the store alone (no chain
    connection, no worker): ``contract`` when the deployment configures one, else the
    newest registry this store recorded for each chain, newest chain first. For processes
    that do not anchor themselves, such as ``dsgw bundle``."""
    try:
        async with engine.connect() as conn:
            registries = (
                await conn.execute(
                    select(AnchorRegistryRow.chain_id, AnchorRegistryRow.address).order_by(
                        AnchorRegistryRow.updated_at.desc()
                    )
                )
            ).all()
    except SQLAlchemyError as exc:
        raise DsgwError(f"anchoring: reading the recorded registries failed: {exc}") from exc
    seen: set[int] = set()
    for chain_id, address in registries:
        if contract and str(address).lower() != contract.lower():
            continue
        if int(chain_id) in seen:
            continue  # an older registry of this chain: a reset dev chain lost it
        seen.add(int(chain_id))
        found = await covering_anchor(
            engine, stream, size, chain_id=int(chain_id), contract=str(address), statuses=statuses
        )
        if found is not None:
            return found
    return None
