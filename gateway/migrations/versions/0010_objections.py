"""data-quality objections and the yearly evaluation's rating forms and ratings

Objections (ZW art. 11; GY) are routed to the dataset's source department and answered
within working days; the reports count them per department (ZW art. 31). Rating forms and
ratings are the yearly evaluation's inputs (ZW art. 33). docs/workflows.md describes both.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 10:00:00.000000
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "objections",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("filer_kind", sa.String(length=16), nullable=False),
        sa.Column("merchant_id", sa.String(length=64), nullable=True),
        sa.Column("filed_by", sa.String(length=64), nullable=False),
        sa.Column("record_seq", sa.BigInteger(), nullable=True),
        sa.Column("dataset_id", sa.String(length=64), nullable=False),
        sa.Column("department", sa.String(length=200), nullable=False),
        sa.Column("field", sa.String(length=128), nullable=False),
        sa.Column("subject_key", sa.String(length=200), nullable=True),
        sa.Column("subject_checked", sa.Boolean(), nullable=False),
        sa.Column("category", sa.String(length=16), nullable=False),
        sa.Column("details", _json(), nullable=False),
        sa.Column("canary", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("filed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("overdue_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("answer", sa.String(length=16), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("answered_by", sa.String(length=64), nullable=True),
        sa.Column("reasons", _json(), nullable=False),
        sa.Column("correction", _json(), nullable=True),
        sa.Column("corrected_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('open', 'accepted', 'rejected', 'corrected')",
            name=op.f("ck_objections_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_objections")),
    )
    with op.batch_alter_table("objections", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_objections_department"), ["department"])
        batch_op.create_index(batch_op.f("ix_objections_filed_at"), ["filed_at"])
        batch_op.create_index(batch_op.f("ix_objections_merchant_id"), ["merchant_id"])
        batch_op.create_index(batch_op.f("ix_objections_status"), ["status"])

    op.create_table(
        "rating_forms",
        sa.Column("year", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("rater_kind", sa.String(length=16), nullable=False),
        sa.Column("criteria", _json(), nullable=False),
        sa.Column("closes_on", sa.Date(), nullable=False),
        sa.Column("set_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("year", "rater_kind", name=op.f("pk_rating_forms")),
    )
    op.create_table(
        "ratings",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("rater_kind", sa.String(length=16), nullable=False),
        sa.Column("rater", sa.String(length=200), nullable=False),
        sa.Column("rated_by", sa.String(length=64), nullable=False),
        sa.Column("scores", _json(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["year", "rater_kind"],
            ["rating_forms.year", "rating_forms.rater_kind"],
            name=op.f("fk_ratings_year_rating_forms"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ratings")),
        sa.UniqueConstraint("year", "rater_kind", "rater", name=op.f("uq_ratings_year")),
    )


def downgrade() -> None:
    op.drop_table("ratings")
    op.drop_table("rating_forms")
    with op.batch_alter_table("objections", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_objections_status"))
        batch_op.drop_index(batch_op.f("ix_objections_merchant_id"))
        batch_op.drop_index(batch_op.f("ix_objections_filed_at"))
        batch_op.drop_index(batch_op.f("ix_objections_department"))
    op.drop_table("objections")
