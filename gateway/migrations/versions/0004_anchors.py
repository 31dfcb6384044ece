"""anchors: registries, anchors of checkpoints on chain, and every signed anchor transaction

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "anchor_registries",
        sa.Column("chain_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("address", sa.String(length=42), nullable=False),
        sa.Column("backend", sa.String(length=16), nullable=False),
        sa.Column("deployed_block", sa.BigInteger(), nullable=True),
        sa.Column("deploy_tx_hash", sa.LargeBinary(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("chain_id", "address", name=op.f("pk_anchor_registries")),
    )
    op.create_table(
        "anchors",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("contract", sa.String(length=42), nullable=False),
        sa.Column("stream", sa.String(length=32), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("root", sa.LargeBinary(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=True),
        sa.Column("block_hash", sa.LargeBinary(length=32), nullable=True),
        sa.Column("tx_hash", sa.LargeBinary(length=32), nullable=True),
        sa.Column("confirmations", sa.Integer(), nullable=False),
        sa.Column("requeues", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("final_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'pending', 'mined', 'final', 'superseded')",
            name=op.f("ck_anchors_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_anchors")),
        sa.UniqueConstraint(
            "chain_id", "contract", "stream", "size", name=op.f("uq_anchors_chain_id")
        ),
    )
    with op.batch_alter_table("anchors", schema=None) as batch_op:
        batch_op.create_index("ix_anchors_status", ["chain_id", "contract", "status"], unique=False)
    op.create_table(
        "anchor_transactions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("anchor_id", sa.Integer(), nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("account", sa.String(length=42), nullable=False),
        sa.Column("nonce", sa.BigInteger(), nullable=False),
        sa.Column("tx_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("gas", sa.BigInteger(), nullable=False),
        sa.Column("max_fee", sa.BigInteger(), nullable=False),
        sa.Column("priority_fee", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('signed', 'sent', 'replaced', 'mined', 'reverted', 'dropped', 'lost')",
            name=op.f("ck_anchor_transactions_status"),
        ),
        sa.ForeignKeyConstraint(
            ["anchor_id"],
            ["anchors.id"],
            name=op.f("fk_anchor_transactions_anchor_id_anchors"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_anchor_transactions")),
        sa.UniqueConstraint("tx_hash", name=op.f("uq_anchor_transactions_tx_hash")),
    )
    with op.batch_alter_table("anchor_transactions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_anchor_transactions_anchor_id"), ["anchor_id"], unique=False
        )
        batch_op.create_index(
            "ix_anchor_transactions_nonce", ["chain_id", "account", "nonce"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("anchor_transactions", schema=None) as batch_op:
        batch_op.drop_index("ix_anchor_transactions_nonce")
        batch_op.drop_index(batch_op.f("ix_anchor_transactions_anchor_id"))
    op.drop_table("anchor_transactions")
    with op.batch_alter_table("anchors", schema=None) as batch_op:
        batch_op.drop_index("ix_anchors_status")
    op.drop_table("anchors")
    op.drop_table("anchor_registries")
