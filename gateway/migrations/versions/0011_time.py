"""days in the deployment zone; loaded holiday schedules

Before this revision a date-only period bound ("valid_from": "2026-12-06") was stored as
00:00 UTC of that date, so in Beijing an authorization started and ended at 08:00. Date-only
bounds are now 00:00 of that day in the deployment zone (setting ``timezone``, default
Asia/Shanghai). This revision moves the stored bounds that came from a date-only input:

* which: a bound stored exactly at 00:00:00.000000 UTC in ``scenarios.definition``
  (``valid_from``, ``valid_until``), ``agreements`` (``starts_at``, ``ends_at``) and
  ``use_applications.terms`` (``period_start``, ``period_end``). The original input is not
  kept (the definition and the governance record hold the parsed time), and every writer
  before this revision turned a date into exactly UTC midnight; an RFC 3339 input of
  exactly ``…T00:00:00Z`` (08:00 in Beijing) is indistinguishable and moved too;
  docs/workdays.md says so;
* to: 00:00 of the same date in the zone (in Beijing 8 hours earlier, the previous day
  16:00 UTC), so both bounds keep their half-open meaning ``[start, end)``.

The governance records of these rows keep the times they were recorded with: the log is
append-only. It also creates ``workday_schedules``, the holiday schedules operators load
with ``dsgw workdays import``. The downgrade drops that table and moves the bounds back.

Revision ID: 0011_time
Revises: 0010
Create Date: 2026-12-07 14:00:00.000000
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

revision = "0011_time"
down_revision = "0010"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_scenarios = sa.table("scenarios", sa.column("id", sa.String()), sa.column("definition", _JSON))
_agreements = sa.table(
    "agreements",
    sa.column("id", sa.String()),
    sa.column("starts_at", sa.DateTime(timezone=True)),
    sa.column("ends_at", sa.DateTime(timezone=True)),
)
_applications = sa.table(
    "use_applications", sa.column("id", sa.String()), sa.column("terms", _JSON)
)


def _zone() -> ZoneInfo:
    """The deployment zone :func:`gateway.db.engines.migrate` passes in (Asia/Shanghai by
    default)."""
    return ZoneInfo(str(context.config.attributes.get("timezone", "Asia/Shanghai")))


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _to_zone(value: dt.datetime, zone: ZoneInfo) -> dt.datetime | None:
    """The bound moved onto the zone's day, or None if it did not come from a date."""
    value = _utc(value)
    if value.time() != dt.time(0):
        return None
    return dt.datetime.combine(value.date(), dt.time(0), tzinfo=zone).astimezone(dt.UTC)


def _from_zone(value: dt.datetime, zone: ZoneInfo) -> dt.datetime | None:
    """The inverse of :func:`_to_zone`, for the downgrade."""
    local = _utc(value).astimezone(zone)
    if local.time() != dt.time(0):
        return None
    return dt.datetime.combine(local.date(), dt.time(0), tzinfo=dt.UTC)


def _move(move: Any, zone: ZoneInfo) -> None:
    bind = op.get_bind()
    for row in bind.execute(sa.select(_agreements)).fetchall():
        start, end = move(row.starts_at, zone), move(row.ends_at, zone)
        if start is not None or end is not None:
            bind.execute(
                sa.update(_agreements)
                .where(_agreements.c.id == row.id)
                .values(starts_at=start or row.starts_at, ends_at=end or row.ends_at)
            )
    for table, column, keys in (
        (_scenarios, "definition", ("valid_from", "valid_until")),
        (_applications, "terms", ("period_start", "period_end")),
    ):
        for row in bind.execute(sa.select(table)).fetchall():
            document = dict(getattr(row, column) or {})
            changed = False
            for key in keys:
                raw = document.get(key)
                if not isinstance(raw, str):
                    continue
                try:
                    moved = move(dt.datetime.fromisoformat(raw.replace("Z", "+00:00")), zone)
                except ValueError:
                    continue
                if moved is not None:
                    document[key] = moved.isoformat()
                    changed = True
            if changed:
                bind.execute(
                    sa.update(table).where(table.c.id == row.id).values({column: document})
                )


def upgrade() -> None:
    op.create_table(
        "workday_schedules",
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("schedule", _JSON, nullable=False),
        sa.Column("loaded_by", sa.String(length=200), nullable=False),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("year", name=op.f("pk_workday_schedules")),
    )
    _move(_to_zone, _zone())


def downgrade() -> None:
    _move(_from_zone, _zone())
    op.drop_table("workday_schedules")
