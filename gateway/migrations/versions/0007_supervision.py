"""supervision: trace index, alerts, monitor cursors, supervision measures

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22 00:20:19.343425
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("merchant_id", sa.String(length=64), nullable=True),
        sa.Column("scenario_id", sa.String(length=64), nullable=True),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column(
            "evidence",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("occurrences", sa.Integer(), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("handled_by", sa.String(length=64), nullable=True),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolution", sa.Text(), nullable=True),
        sa.Column("measure_id", sa.String(length=64), nullable=True),
        sa.Column("webhook_status", sa.String(length=16), nullable=False),
        sa.Column("webhook_attempts", sa.Integer(), nullable=False),
        sa.Column("webhook_next_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
    )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alerts_first_seen"), ["first_seen"], unique=False)
        batch_op.create_index(batch_op.f("ix_alerts_merchant_id"), ["merchant_id"], unique=False)
        batch_op.create_index("ix_alerts_rule_key", ["rule", "key", "status"], unique=False)
        batch_op.create_index(batch_op.f("ix_alerts_status"), ["status"], unique=False)

    op.create_table(
        "monitor_cursors",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_monitor_cursors")),
    )
    op.create_table(
        "supervision_measures",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("target_kind", sa.String(length=16), nullable=False),
        sa.Column("target_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("basis", sa.String(length=200), nullable=True),
        sa.Column("imposed_by", sa.String(length=64), nullable=False),
        sa.Column("imposed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lifted_by", sa.String(length=64), nullable=True),
        sa.Column("lifted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lift_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_supervision_measures")),
    )
    with op.batch_alter_table("supervision_measures", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_supervision_measures_status"), ["status"], unique=False
        )
        batch_op.create_index(
            "ix_supervision_measures_target", ["target_kind", "target_id"], unique=False
        )

    op.create_table(
        "trace_rows",
        sa.Column("hash", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("hash", "seq", name=op.f("pk_trace_rows")),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("trace_rows")
    with op.batch_alter_table("supervision_measures", schema=None) as batch_op:
        batch_op.drop_index("ix_supervision_measures_target")
        batch_op.drop_index(batch_op.f("ix_supervision_measures_status"))

    op.drop_table("supervision_measures")
    op.drop_table("monitor_cursors")
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alerts_status"))
        batch_op.drop_index("ix_alerts_rule_key")
        batch_op.drop_index(batch_op.f("ix_alerts_merchant_id"))
        batch_op.drop_index(batch_op.f("ix_alerts_first_seen"))

    op.drop_table("alerts")
