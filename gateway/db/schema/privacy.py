"""Tables of the privacy budgets: differential-privacy spend, answered exact cells for the
overlap audit, and negative verification answers.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Index,
    Integer,
    LargeBinary,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from gateway.db.schema.base import Base, Timestamp

__all__ = ["AnsweredCellRow", "PrivacySpendRow", "VerifyNegativeRow"]


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
