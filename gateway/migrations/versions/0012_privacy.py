"""privacy controls: DP budget spend, answered cells for the overlap audit, verify negatives

Three tables of state the privacy controls of docs/privacy.md keep in the store, so that a
restart or a second worker sees the same spend and the same history:

* ``privacy_spend``: ε and δ spent per agreement, dataset and budget period;
* ``answered_cells``: a fixed-size sketch of each exact aggregate cell answered to a
  merchant, for the overlap audit;
* ``verify_negatives``: negative verification answers per agreement, dataset, subject
  (keyed digest) and window.

Revision ID: 0012_privacy
Revises: 0011_time
Create Date: 2026-12-07 16:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_privacy"
down_revision = "0011_time"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "privacy_spend",
        sa.Column("agreement_id", sa.String(length=64), nullable=False),
        sa.Column("dataset_id", sa.String(length=64), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("epsilon_micros", sa.BigInteger(), nullable=False),
        sa.Column("delta_picos", sa.BigInteger(), nullable=False),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "agreement_id", "dataset_id", "period_start", name=op.f("pk_privacy_spend")
        ),
    )
    op.create_table(
        "answered_cells",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("merchant_id", sa.String(length=64), nullable=False),
        sa.Column("dataset_id", sa.String(length=64), nullable=False),
        sa.Column("subjects", sa.Integer(), nullable=False),
        sa.Column("sketch", sa.LargeBinary(length=512), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_answered_cells")),
    )
    op.create_index(
        "ix_answered_cells_lookup",
        "answered_cells",
        ["merchant_id", "dataset_id", "subjects"],
    )
    op.create_table(
        "verify_negatives",
        sa.Column("agreement_id", sa.String(length=64), nullable=False),
        sa.Column("dataset_id", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("negatives", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "agreement_id",
            "dataset_id",
            "subject",
            "window_start",
            name=op.f("pk_verify_negatives"),
        ),
    )


def downgrade() -> None:
    op.drop_table("verify_negatives")
    op.drop_index("ix_answered_cells_lookup", table_name="answered_cells")
    op.drop_table("answered_cells")
    op.drop_table("privacy_spend")
