"""call log indexes for months of records

The readers of ``log_entries`` by merchant and time (monitor windows, history start, quota
seeding) get ``(merchant_id, recorded_at)``; the newest records of one merchant
(``GET /v1/calls``, ``dsgw log``) get ``(stream, merchant_id, seq)``, without which a merchant
with few calls walks the whole stream backwards; time ranges (reports, refused-call windows)
get a BRIN index on ``recorded_at`` on PostgreSQL, where rows arrive in time order (a plain
B-tree on SQLite). They replace ``(merchant_id, scenario_id, recorded_at)``, which could not
narrow a merchant's records by time unless the scenario was given too, and
``(stream, recorded_at)``. docs/postgresql.md has the measurements.

On PostgreSQL every index is built and dropped ``CONCURRENTLY``, so the gateways keep
writing the log meanwhile; an index left invalid by an interrupted build is dropped and
built again.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23 10:00:00.000000
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TABLE = "log_entries"
# name -> (columns, PostgreSQL options)
NEW: dict[str, tuple[list[str], dict[str, Any]]] = {
    "ix_log_entries_merchant_time": (["merchant_id", "recorded_at"], {}),
    "ix_log_entries_merchant_seq": (["stream", "merchant_id", "seq"], {}),
    # autosummarize: each block range is summarized as soon as it fills, so the newest
    # records are not left to a scan of every page written since the last VACUUM.
    "ix_log_entries_time": (
        ["recorded_at"],
        {"postgresql_using": "brin", "postgresql_with": {"autosummarize": "on"}},
    ),
}
OLD: dict[str, tuple[list[str], dict[str, Any]]] = {
    "ix_log_entries_merchant": (["merchant_id", "scenario_id", "recorded_at"], {}),
    "ix_log_entries_recorded_at": (["stream", "recorded_at"], {}),
}


def _postgresql() -> bool:
    return op.get_context().dialect.name == "postgresql"


def _swap(
    create: dict[str, tuple[list[str], dict[str, Any]]],
    drop: dict[str, tuple[list[str], dict[str, Any]]],
) -> None:
    if not _postgresql():
        for name, (columns, _options) in create.items():
            op.create_index(name, TABLE, columns)
        for name in drop:
            op.drop_index(name, table_name=TABLE)
        return
    with op.get_context().autocommit_block():
        # A concurrent build never blocks the log's writers, so it may wait as long as
        # older transactions run: no lock_timeout here (gateway.db.engines.migrate sets one for
        # the other migrations, restored below).
        bind = op.get_bind()
        previous = bind.execute(sa.text("SHOW lock_timeout")).scalar_one()
        bind.execute(sa.text("SET lock_timeout = 0"))
        try:
            for name, (columns, options) in create.items():
                _drop_if_invalid(name)
                op.create_index(
                    name,
                    TABLE,
                    columns,
                    postgresql_concurrently=True,
                    if_not_exists=True,
                    **options,
                )
            for name in drop:
                op.drop_index(name, table_name=TABLE, postgresql_concurrently=True, if_exists=True)
        finally:
            bind.execute(
                sa.text("SELECT set_config('lock_timeout', :value, false)"), {"value": previous}
            )


def _drop_if_invalid(name: str) -> None:
    """Drop what an interrupted ``CREATE INDEX CONCURRENTLY`` left behind: an invalid index
    that ``IF NOT EXISTS`` would otherwise take for the finished one."""
    invalid = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE c.relname = :name AND NOT i.indisvalid"
            ),
            {"name": name},
        )
        .first()
    )
    if invalid is not None:
        op.drop_index(name, table_name=TABLE, postgresql_concurrently=True, if_exists=True)


def upgrade() -> None:
    _swap(NEW, OLD)


def downgrade() -> None:
    _swap(OLD, NEW)
