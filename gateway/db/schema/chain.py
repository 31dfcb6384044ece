"""Tables of anchoring: the registries used, one row per anchor, and their transactions."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from gateway.db.schema.base import Base, Timestamp

__all__ = ["AnchorRegistryRow", "AnchorRow", "AnchorTransactionRow"]


class AnchorRegistryRow(Base):
    """An AnchorRegistry contract anchors go to: deployed by this gateway on a dev chain, or
    configured for a production chain. The newest row of a chain is the one in use; older
    rows name registries a reset dev chain lost."""

    __tablename__ = "anchor_registries"

    chain_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    address: Mapped[str] = mapped_column(String(42), primary_key=True)
    backend: Mapped[str] = mapped_column(String(16))
    deployed_block: Mapped[int | None] = mapped_column(BigInteger)
    deploy_tx_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp)


class AnchorRow(Base):
    """One checkpoint (stream, size, root) on its way onto one registry (chain, contract).

    ``status``: ``queued`` (no transaction yet), ``pending`` (a signed transaction is stored
    and being broadcast), ``mined`` (in block ``block_number``/``block_hash`` by ``tx_hash``,
    ``confirmations`` deep), ``final`` (deep enough, or under the chain's ``finalized`` tag),
    ``superseded`` (covered by a later anchor of the stream before it was sent, or lost with a
    reset chain and re-anchored through a later one). The unique key makes an anchor of the
    same size on the same registry impossible to record twice; ``requeues`` counts how often
    a reorg or a chain reset sent it back.
    """

    __tablename__ = "anchors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    contract: Mapped[str] = mapped_column(String(42))
    stream: Mapped[str] = mapped_column(String(32))
    size: Mapped[int] = mapped_column(Integer)
    root: Mapped[bytes] = mapped_column(LargeBinary(32))
    status: Mapped[str] = mapped_column(String(16))
    block_number: Mapped[int | None] = mapped_column(BigInteger)
    block_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    tx_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    confirmations: Mapped[int] = mapped_column(Integer)
    requeues: Mapped[int] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    final_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)

    __table_args__ = (
        UniqueConstraint("chain_id", "contract", "stream", "size"),
        CheckConstraint(
            "status IN ('queued', 'pending', 'mined', 'final', 'superseded')", name="status"
        ),
        Index("ix_anchors_status", "chain_id", "contract", "status"),
    )


class AnchorTransactionRow(Base):
    """Every signed anchor transaction, stored (``raw``) before it is first broadcast, so
    that it can be sent again byte for byte (same nonce, same hash) after a crash, a lost
    mempool or a reorg. A fee bump is a new row with the same nonce.

    ``status``: ``signed`` (stored, not yet accepted by a node), ``sent``, ``replaced`` (a
    higher-fee transaction with the same nonce followed; it may still be the one mined),
    ``mined``, ``reverted``, ``dropped`` (its nonce was consumed by another transaction),
    ``lost`` (the chain it was sent to was reset).
    """

    __tablename__ = "anchor_transactions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    anchor_id: Mapped[int] = mapped_column(ForeignKey("anchors.id"), index=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    account: Mapped[str] = mapped_column(String(42))
    nonce: Mapped[int] = mapped_column(BigInteger)
    tx_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    gas: Mapped[int] = mapped_column(BigInteger)
    max_fee: Mapped[int] = mapped_column(BigInteger)
    priority_fee: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    sent_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp)

    __table_args__ = (
        CheckConstraint(
            "status IN ('signed', 'sent', 'replaced', 'mined', 'reverted', 'dropped', 'lost')",
            name="status",
        ),
        Index("ix_anchor_transactions_nonce", "chain_id", "account", "nonce"),
    )
