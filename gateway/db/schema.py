"""The gateway's own tables, on one declarative base with named constraints.

Alembic migrations under ``gateway/migrations`` create exactly these tables; a test compares
the two so they cannot drift.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "AgreementRow",
    "AlertRow",
    "AnchorRegistryRow",
    "AnchorRow",
    "AnchorTransactionRow",
    "AnsweredCellRow",
    "AssertionJtiRow",
    "Base",
    "CheckpointRow",
    "ClientRow",
    "DatasetRow",
    "ExclusionRow",
    "LogEntryRow",
    "MeasureRow",
    "MerchantRow",
    "MonitorCursorRow",
    "ObjectionRow",
    "OnboardingRow",
    "PrivacySpendRow",
    "ProductRow",
    "RatingFormRow",
    "RatingRow",
    "ReviewRow",
    "ScenarioRow",
    "SettlementRow",
    "TokenRow",
    "TraceRow",
    "TradeRow",
    "TreeNodeRow",
    "UseApplicationRow",
    "VerifyNegativeRow",
    "WorkdayScheduleRow",
]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JsonDoc = JSON().with_variant(JSONB(), "postgresql")
Timestamp = DateTime(timezone=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class DatasetRow(Base):
    """A catalog entry; the full definition (fields, masking, source) lives in ``definition``."""

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    provider: Mapped[str] = mapped_column(String(200))
    open_attribute: Mapped[str] = mapped_column(String(16))
    negative_list: Mapped[bool] = mapped_column(Boolean)
    definition: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp)


class ScenarioRow(Base):
    __tablename__ = "scenarios"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    definition: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp)


class MerchantRow(Base):
    __tablename__ = "merchants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    credit_code: Mapped[str] = mapped_column(String(18), unique=True)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp)


class AgreementRow(Base):
    __tablename__ = "agreements"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), index=True)
    scenario_id: Mapped[str] = mapped_column(ForeignKey("scenarios.id"), index=True)
    starts_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    ends_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    share_owner: Mapped[Decimal] = mapped_column(Numeric(5, 2))
    share_operator: Mapped[Decimal] = mapped_column(Numeric(5, 2))
    share_processor: Mapped[Decimal] = mapped_column(Numeric(5, 2))
    status: Mapped[str] = mapped_column(String(16))
    terms: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp)


class ClientRow(Base):
    """OAuth client: a merchant's application or a staff member of a role."""

    __tablename__ = "clients"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    merchant_id: Mapped[str | None] = mapped_column(ForeignKey("merchants.id"), index=True)
    role: Mapped[str | None] = mapped_column(String(32))
    # A source department's staff client reviews applications for the datasets whose
    # provider is this department.
    department: Mapped[str | None] = mapped_column(String(200))
    # A buyer's client (a company that bought a product on the exchange): its credit code.
    buyer_code: Mapped[str | None] = mapped_column(String(18))
    secret_hash: Mapped[str | None] = mapped_column(String(255))
    public_jwk: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp)


class TokenRow(Base):
    """Every token issued, so a token can be revoked by id and audited later."""

    __tablename__ = "tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id"), index=True)
    merchant_id: Mapped[str | None] = mapped_column(String(64), index=True)
    scenario_id: Mapped[str | None] = mapped_column(String(64))
    agreement_id: Mapped[str | None] = mapped_column(String(64))
    role: Mapped[str | None] = mapped_column(String(32))
    issued_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    expires_at: Mapped[dt.datetime] = mapped_column(Timestamp, index=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    revoked_reason: Mapped[str | None] = mapped_column(String(500))


class AssertionJtiRow(Base):
    """Seen ``private_key_jwt`` assertion ids, kept until they expire (replay protection)."""

    __tablename__ = "assertion_jtis"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    jti: Mapped[str] = mapped_column(String(128), primary_key=True)
    expires_at: Mapped[dt.datetime] = mapped_column(Timestamp, index=True)


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


class ExclusionRow(Base):
    """An entity that may not become a merchant (CS23 art. 18): a dishonest judgement debtor,
    a major tax violator, a revoked licence, a criminal penalty or a large fine. Imported from
    the lists the authorities publish; ``lifted_on`` ends an entry without deleting it."""

    __tablename__ = "exclusions"
    __table_args__ = (UniqueConstraint("credit_code", "category", "listed_on"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    credit_code: Mapped[str] = mapped_column(String(18), index=True)
    name: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(200))
    listed_on: Mapped[dt.date] = mapped_column(Date)
    lifted_on: Mapped[dt.date | None] = mapped_column(Date)
    imported_at: Mapped[dt.datetime] = mapped_column(Timestamp)


class OnboardingRow(Base):
    """A company's application to become a merchant, answered by the operator within 5
    working days (ZW art. 18). ``details``: licence and contacts; ``exclusion_hits``: the
    exclusion-list entries found at submission; ``reasons``: a rejection's reasons."""

    __tablename__ = "onboarding_applications"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    credit_code: Mapped[str] = mapped_column(String(18), index=True)
    details: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    status: Mapped[str] = mapped_column(String(16), index=True)
    exclusion_hits: Mapped[list[Any]] = mapped_column(JsonDoc)
    submitted_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    due_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    decided_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    decided_by: Mapped[str | None] = mapped_column(String(64))
    reasons: Mapped[list[Any]] = mapped_column(JsonDoc)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp)


class UseApplicationRow(Base):
    """A merchant's application to use data in a published scenario (ZW art. 20-21):
    compliance check by the operator within 5 working days, then a review by each source
    department owning a requested dataset within 10. ``requirements``: the data requirement
    list; ``terms``: purpose, period and safeguards as submitted."""

    __tablename__ = "use_applications"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), index=True)
    scenario_id: Mapped[str] = mapped_column(ForeignKey("scenarios.id"), index=True)
    requirements: Mapped[list[Any]] = mapped_column(JsonDoc)
    terms: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    status: Mapped[str] = mapped_column(String(24), index=True)
    submitted_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    compliance_due_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    checked_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    checked_by: Mapped[str | None] = mapped_column(String(64))
    reasons: Mapped[list[Any]] = mapped_column(JsonDoc)
    agreement_id: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp)


class ReviewRow(Base):
    """One source department's review of a use application. Silent past ``due_at`` (or
    ``extended_until``) it is deemed to approve (ZW art. 21), recorded as such."""

    __tablename__ = "application_reviews"
    __table_args__ = (UniqueConstraint("application_id", "department"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    application_id: Mapped[str] = mapped_column(ForeignKey("use_applications.id"), index=True)
    department: Mapped[str] = mapped_column(String(200))
    datasets: Mapped[list[Any]] = mapped_column(JsonDoc)
    status: Mapped[str] = mapped_column(String(24), index=True)
    opened_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    due_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    extended_until: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    extension_reason: Mapped[str | None] = mapped_column(Text)
    decided_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    decided_by: Mapped[str | None] = mapped_column(String(64))
    reasons: Mapped[list[Any]] = mapped_column(JsonDoc)


class ProductRow(Base):
    """A data product (ZW art. 23-24): its definition, the agreement it is built on, and
    where it stands between registration, export check, filing and listing."""

    __tablename__ = "products"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), index=True)
    agreement_id: Mapped[str] = mapped_column(ForeignKey("agreements.id"))
    definition: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    status: Mapped[str] = mapped_column(String(16), index=True)
    check_reasons: Mapped[list[Any]] = mapped_column(JsonDoc)
    filing_number: Mapped[str | None] = mapped_column(String(64))
    listing_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp)


class TradeRow(Base):
    """A trade the exchange recorded. ``used`` counts the units delivered against it,
    raised by one atomic update per delivery that never passes ``quantity``."""

    __tablename__ = "trades"
    __table_args__ = (CheckConstraint("used >= 0 AND used <= quantity", name="used_within"),)

    exchange_trade_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    product_id: Mapped[str] = mapped_column(ForeignKey("products.id"), index=True)
    buyer_code: Mapped[str] = mapped_column(String(18), index=True)
    buyer_name: Mapped[str] = mapped_column(String(200))
    quantity: Mapped[int] = mapped_column(BigInteger)
    unit_price: Mapped[Decimal] = mapped_column(Numeric(15, 2))
    amount: Mapped[Decimal] = mapped_column(Numeric(18, 2))
    traded_at: Mapped[dt.datetime] = mapped_column(Timestamp, index=True)
    used: Mapped[int] = mapped_column(BigInteger)
    settlement_id: Mapped[str | None] = mapped_column(ForeignKey("settlements.id"), index=True)
    recorded_at: Mapped[dt.datetime] = mapped_column(Timestamp)


class SettlementRow(Base):
    """The exchange settled a set of trades for a period; revenue is split per period."""

    __tablename__ = "settlements"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    period: Mapped[str] = mapped_column(String(16), index=True)
    amount: Mapped[Decimal] = mapped_column(Numeric(18, 2))
    settled_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    recorded_at: Mapped[dt.datetime] = mapped_column(Timestamp)


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


class AlertRow(Base):
    """A monitoring alert: which rule fired on whom, how bad, on what evidence, and how it
    was handled. ``key`` groups repeated firings of one rule on one subject into one alert
    while it is open."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rule: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(200))
    severity: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), index=True)
    merchant_id: Mapped[str | None] = mapped_column(String(64), index=True)
    scenario_id: Mapped[str | None] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(300))
    detail: Mapped[str] = mapped_column(Text)
    evidence: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    occurrences: Mapped[int] = mapped_column(Integer)
    first_seen: Mapped[dt.datetime] = mapped_column(Timestamp, index=True)
    last_seen: Mapped[dt.datetime] = mapped_column(Timestamp)
    handled_by: Mapped[str | None] = mapped_column(String(64))
    handled_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    resolution: Mapped[str | None] = mapped_column(Text)
    measure_id: Mapped[str | None] = mapped_column(String(64))
    webhook_status: Mapped[str] = mapped_column(String(16))
    webhook_attempts: Mapped[int] = mapped_column(Integer)
    webhook_next_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)

    __table_args__ = (Index("ix_alerts_rule_key", "rule", "key", "status"),)


class MonitorCursorRow(Base):
    """How far a background consumer of a log stream got, so a restart resumes there."""

    __tablename__ = "monitor_cursors"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp)


class MeasureRow(Base):
    """A supervision measure (ZW art. 27; CS23 art. 26): supply of a dataset suspended, a
    merchant's data channel closed, a scenario suspended or a product delisted. Active
    until lifted; lifting keeps the row, so the history stays whole."""

    __tablename__ = "supervision_measures"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    target_kind: Mapped[str] = mapped_column(String(16))
    target_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str] = mapped_column(Text)
    basis: Mapped[str | None] = mapped_column(String(200))
    imposed_by: Mapped[str] = mapped_column(String(64))
    imposed_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    lifted_by: Mapped[str | None] = mapped_column(String(64))
    lifted_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    lift_reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_supervision_measures_target", "target_kind", "target_id"),)


class ObjectionRow(Base):
    """A data-quality objection (ZW art. 11; GY's 数据异议反馈机制): a merchant's about data it
    received (``record_seq``: the ``calls`` record that delivered it) or the operator's,
    routed to the dataset's source department (``department``) with a deadline in working
    days. ``details``: what is wrong (description, evidence, documents) and, for the
    department, the named record's time and mode. ``canary``: the subject is one of the
    filer's tracing canary rows, so the operator answers instead of the department.
    ``answer`` is the first answer (what timeliness counts); ``status`` where it stands now
    (an accepted objection may later be corrected). Never deemed answered: ``overdue_at``
    only records when the deadline passed unanswered."""

    __tablename__ = "objections"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    filer_kind: Mapped[str] = mapped_column(String(16))
    merchant_id: Mapped[str | None] = mapped_column(String(64), index=True)
    filed_by: Mapped[str] = mapped_column(String(64))
    record_seq: Mapped[int | None] = mapped_column(BigInteger)
    dataset_id: Mapped[str] = mapped_column(String(64))
    department: Mapped[str] = mapped_column(String(200), index=True)
    field: Mapped[str] = mapped_column(String(128))
    subject_key: Mapped[str | None] = mapped_column(String(200))
    subject_checked: Mapped[bool] = mapped_column(Boolean)
    category: Mapped[str] = mapped_column(String(16))
    details: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    canary: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(16), index=True)
    filed_at: Mapped[dt.datetime] = mapped_column(Timestamp, index=True)
    due_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    overdue_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    answer: Mapped[str | None] = mapped_column(String(16))
    answered_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    answered_by: Mapped[str | None] = mapped_column(String(64))
    reasons: Mapped[list[Any]] = mapped_column(JsonDoc)
    correction: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc)
    corrected_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    acknowledged_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp)

    __table_args__ = (
        CheckConstraint("status IN ('open', 'accepted', 'rejected', 'corrected')", name="status"),
    )


class RatingFormRow(Base):
    """The form one kind of rater fills in to rate the operator for one year (ZW art. 33):
    the criteria the data bureau set, each scored from 0 to its ``max``, and the last day
    (Beijing) ratings are taken. Fixed once the first rating against it arrived."""

    __tablename__ = "rating_forms"

    year: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    rater_kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    criteria: Mapped[list[Any]] = mapped_column(JsonDoc)
    closes_on: Mapped[dt.date] = mapped_column(Date)
    set_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp)


class RatingRow(Base):
    """One rater's rating of the operator for one year: a source department or a district
    bureau (by its name) or a merchant (by its id). One per rater and year: the unique key
    refuses a second, whichever of the rater's staff sends it."""

    __tablename__ = "ratings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    year: Mapped[int] = mapped_column(Integer)
    rater_kind: Mapped[str] = mapped_column(String(16))
    rater: Mapped[str] = mapped_column(String(200))
    rated_by: Mapped[str] = mapped_column(String(64))
    scores: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    comment: Mapped[str] = mapped_column(Text)
    submitted_at: Mapped[dt.datetime] = mapped_column(Timestamp)

    __table_args__ = (
        UniqueConstraint("year", "rater_kind", "rater"),
        ForeignKeyConstraint(
            ["year", "rater_kind"], ["rating_forms.year", "rating_forms.rater_kind"]
        ),
    )


class WorkdayScheduleRow(Base):
    """A year's official holiday schedule loaded by an operator (``dsgw workdays import``),
    with who loaded it; the calendar loader reads these after the shipped schedules, so
    every node of a cluster counts the same days. The load itself is a governance record."""

    __tablename__ = "workday_schedules"

    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    schedule: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    loaded_by: Mapped[str] = mapped_column(String(200))
    loaded_at: Mapped[dt.datetime] = mapped_column(Timestamp)


class PrivacySpendRow(Base):
    """The differential-privacy budget one agreement has spent on one dataset in one budget
    period (docs/privacy.md). ε and δ are kept in integer millionths and 10^-12 units, so
    the check-and-spend is one exact conditional ``UPDATE`` on every store: two workers
    cannot both spend the last of a budget."""

    __tablename__ = "privacy_spend"

    agreement_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    period_start: Mapped[dt.datetime] = mapped_column(Timestamp, primary_key=True)
    epsilon_micros: Mapped[int] = mapped_column(BigInteger)
    delta_picos: Mapped[int] = mapped_column(BigInteger)
    calls: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp)


class AnsweredCellRow(Base):
    """One exact aggregate cell answered to a merchant, kept for the overlap audit
    (docs/privacy.md): the number of subjects in it and a fixed-size sketch of its subjects
    and their contributions, from which the size of the difference to a later cell can be
    decided without keeping the subjects themselves."""

    __tablename__ = "answered_cells"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    merchant_id: Mapped[str] = mapped_column(String(64))
    dataset_id: Mapped[str] = mapped_column(String(64))
    subjects: Mapped[int] = mapped_column(Integer)
    sketch: Mapped[bytes] = mapped_column(LargeBinary(512))
    answered_at: Mapped[dt.datetime] = mapped_column(Timestamp)

    __table_args__ = (Index("ix_answered_cells_lookup", "merchant_id", "dataset_id", "subjects"),)


class VerifyNegativeRow(Base):
    """Negative verification answers one agreement received about one subject in one
    window (docs/privacy.md, verification budgets); the subject is a keyed digest of its
    key values, never the values."""

    __tablename__ = "verify_negatives"

    agreement_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    subject: Mapped[str] = mapped_column(String(64), primary_key=True)
    window_start: Mapped[dt.datetime] = mapped_column(Timestamp, primary_key=True)
    negatives: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp)
