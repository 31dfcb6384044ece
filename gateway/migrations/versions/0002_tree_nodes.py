"""tree nodes: stored perfect subtrees of each stream's Merkle tree

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tree_nodes",
        sa.Column("stream", sa.String(length=32), nullable=False),
        sa.Column("level", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(length=64), nullable=False),
        sa.CheckConstraint("level >= 1 AND idx >= 0", name=op.f("ck_tree_nodes_position")),
        sa.PrimaryKeyConstraint("stream", "level", "idx", name=op.f("pk_tree_nodes")),
    )


def downgrade() -> None:
    op.drop_table("tree_nodes")
