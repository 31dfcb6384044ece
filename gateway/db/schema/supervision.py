"""Tables of supervision: alerts, monitor cursors, measures, objections, the yearly rating,
and the official holiday schedules that deadlines are counted on.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from gateway.db.schema.base import Base, JsonDoc, Timestamp

__all__ = [
    "AlertRow",
    "MeasureRow",
    "MonitorCursorRow",
    "ObjectionRow",
    "RatingFormRow",
    "RatingRow",
    "WorkdayScheduleRow",
]


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
