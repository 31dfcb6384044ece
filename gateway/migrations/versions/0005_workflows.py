"""workflows: onboarding, exclusions, use applications, reviews

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21 21:55:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "exclusions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("credit_code", sa.String(length=18), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("listed_on", sa.Date(), nullable=False),
        sa.Column("lifted_on", sa.Date(), nullable=True),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exclusions")),
        sa.UniqueConstraint(
            "credit_code", "category", "listed_on", name=op.f("uq_exclusions_credit_code")
        ),
    )
    with op.batch_alter_table("exclusions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_exclusions_credit_code"), ["credit_code"], unique=False
        )

    op.create_table(
        "onboarding_applications",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("merchant_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("credit_code", sa.String(length=18), nullable=False),
        sa.Column(
            "details",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column(
            "exclusion_hits",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.String(length=64), nullable=True),
        sa.Column(
            "reasons",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_onboarding_applications")),
    )
    with op.batch_alter_table("onboarding_applications", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_onboarding_applications_credit_code"), ["credit_code"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_onboarding_applications_status"), ["status"], unique=False
        )

    op.create_table(
        "use_applications",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("merchant_id", sa.String(length=64), nullable=False),
        sa.Column("scenario_id", sa.String(length=64), nullable=False),
        sa.Column(
            "requirements",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "terms",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("compliance_due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("checked_by", sa.String(length=64), nullable=True),
        sa.Column(
            "reasons",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("agreement_id", sa.String(length=64), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id"],
            ["merchants.id"],
            name=op.f("fk_use_applications_merchant_id_merchants"),
        ),
        sa.ForeignKeyConstraint(
            ["scenario_id"],
            ["scenarios.id"],
            name=op.f("fk_use_applications_scenario_id_scenarios"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_use_applications")),
    )
    with op.batch_alter_table("use_applications", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_use_applications_merchant_id"), ["merchant_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_use_applications_scenario_id"), ["scenario_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_use_applications_status"), ["status"], unique=False)

    op.create_table(
        "application_reviews",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("application_id", sa.String(length=64), nullable=False),
        sa.Column("department", sa.String(length=200), nullable=False),
        sa.Column(
            "datasets",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("extended_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("extension_reason", sa.Text(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.String(length=64), nullable=True),
        sa.Column(
            "reasons",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["application_id"],
            ["use_applications.id"],
            name=op.f("fk_application_reviews_application_id_use_applications"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_application_reviews")),
        sa.UniqueConstraint(
            "application_id", "department", name=op.f("uq_application_reviews_application_id")
        ),
    )
    with op.batch_alter_table("application_reviews", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_application_reviews_application_id"), ["application_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_application_reviews_status"), ["status"], unique=False)

    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("department", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_column("department")

    with op.batch_alter_table("application_reviews", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_application_reviews_status"))
        batch_op.drop_index(batch_op.f("ix_application_reviews_application_id"))

    op.drop_table("application_reviews")
    with op.batch_alter_table("use_applications", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_use_applications_status"))
        batch_op.drop_index(batch_op.f("ix_use_applications_scenario_id"))
        batch_op.drop_index(batch_op.f("ix_use_applications_merchant_id"))

    op.drop_table("use_applications")
    with op.batch_alter_table("onboarding_applications", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_onboarding_applications_status"))
        batch_op.drop_index(batch_op.f("ix_onboarding_applications_credit_code"))

    op.drop_table("onboarding_applications")
    with op.batch_alter_table("exclusions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_exclusions_credit_code"))

    op.drop_table("exclusions")
