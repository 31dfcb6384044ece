"""Tables of the transparency log: entries, Merkle tree nodes, checkpoints, and the keyed
index of delivered rows (``trace_rows``) written in the same transaction as each call record.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from gateway.db.schema.base import Base, Timestamp

__all__ = ["CheckpointRow", "LogEntryRow", "TraceRow", "TreeNodeRow"]


class LogEntryRow(Base):
    """One record of an append-only, hash-linked log stream (calls, governance, products).

    ``seq`` is the record's 0-based index in its stream and thus its RFC 9162 leaf index;
    ``leaf_hash`` = H(0x00 || salt || payload) and ``entry_hash`` = H(0x02 || prev_hash ||
    leaf_hash). The (stream, seq) primary key is what keeps concurrent writers from forking
    a stream: a second writer of the same position fails and retries on the new head.
    The copied columns (merchant, scenario, ...) only serve queries; the payload is the truth.
    """

    __tablename__ = "log_entries"

    stream: Mapped[str] = mapped_column(String(32), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    recorded_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    kind: Mapped[str] = mapped_column(String(32))
    merchant_id: Mapped[str | None] = mapped_column(String(64))
    scenario_id: Mapped[str | None] = mapped_column(String(64))
    dataset_id: Mapped[str | None] = mapped_column(String(64))
    decision: Mapped[str | None] = mapped_column(String(16))
    payload: Mapped[str] = mapped_column(Text)
    salt: Mapped[bytes] = mapped_column(LargeBinary(32))
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(64))
    prev_hash: Mapped[bytes] = mapped_column(LargeBinary(64))
    entry_hash: Mapped[bytes] = mapped_column(LargeBinary(64))

    # Readers by merchant and time (monitor windows, quotas), a merchant's newest records,
    # and time ranges (reports): BRIN on PostgreSQL, where rows arrive in time order, a
    # B-tree on SQLite. Migration 0008 and docs/postgresql.md say why these and no others.
    __table_args__ = (
        Index("ix_log_entries_merchant_time", "merchant_id", "recorded_at"),
        Index("ix_log_entries_merchant_seq", "stream", "merchant_id", "seq"),
        Index(
            "ix_log_entries_time",
            "recorded_at",
            postgresql_using="brin",
            postgresql_with={"autosummarize": "on"},
        ),
    )


class TreeNodeRow(Base):
    """The hash of one perfect subtree of a stream's RFC 9162 Merkle tree: the ``2**level``
    leaves starting at leaf ``idx * 2**level``.

    Stored so that any root or proof needs O(log n) lookups instead of rebuilding the tree
    per request. Only levels >= 1 live here; level 0 is ``log_entries.leaf_hash``. A node is
    written once its subtree is complete and never changes, so concurrent folders may insert
    the same row: the primary key keeps one copy.
    """

    __tablename__ = "tree_nodes"

    stream: Mapped[str] = mapped_column(String(32), primary_key=True)
    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(64))

    __table_args__ = (CheckConstraint("level >= 1 AND idx >= 0", name="position"),)


class CheckpointRow(Base):
    """A signed checkpoint of one stream: the tree head (size, root) in the C2SP
    ``tlog-checkpoint`` signed-note format, exactly as signed (``note``)."""

    __tablename__ = "checkpoints"

    stream: Mapped[str] = mapped_column(String(32), primary_key=True)
    size: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    root: Mapped[bytes] = mapped_column(LargeBinary(64))
    algorithm: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(Text)
    key_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, index=True)


class TraceRow(Base):
    """One keyed hash of one delivered row, pointing at the call that delivered it.

    A delivered row gives one hash per identifying field delivered in clear and one of the
    whole row (see :mod:`gateway.tracing`). Written in the same transaction as the call's
    record, so a delivery that was answered is always traceable. 63-bit integers keep the
    index at 16 bytes per entry; keyed, so the table reveals nothing without the key.
    """

    __tablename__ = "trace_rows"
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012 - SQLAlchemy reads it

    hash: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
