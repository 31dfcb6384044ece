"""Tables of the governance workflows: exclusions, onboarding, use applications, reviews."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    Date,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from gateway.db.schema.base import Base, JsonDoc, Timestamp

__all__ = ["ExclusionRow", "OnboardingRow", "ReviewRow", "UseApplicationRow"]


class ExclusionRow(Base):
    """An entity that may not become a merchant (CS23 art. 18): a dishonest judgement debtor,
    a major tax violator, a revoked licence, a criminal penalty or a large fine. Imported from
    the lists the authorities publish; ``lifted_on`` ends an entry without deleting it."""

    __tablename__ = "exclusions"
    __table_args__ = (UniqueConstraint("credit_code", "category", "listed_on"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    credit_code: Mapped[str] = mapped_column(String(18), index=True)
    name: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(200))
    listed_on: Mapped[dt.date] = mapped_column(Date)
    lifted_on: Mapped[dt.date | None] = mapped_column(Date)
    imported_at: Mapped[dt.datetime] = mapped_column(Timestamp)


class OnboardingRow(Base):
    """A company's application to become a merchant, answered by the operator within 5
    working days (ZW art. 18). ``details``: licence and contacts; ``exclusion_hits``: the
    exclusion-list entries found at submission; ``reasons``: a rejection's reasons."""

    __tablename__ = "onboarding_applications"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    credit_code: Mapped[str] = mapped_column(String(18), index=True)
    details: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    status: Mapped[str] = mapped_column(String(16), index=True)
    exclusion_hits: Mapped[list[Any]] = mapped_column(JsonDoc)
    submitted_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    due_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    decided_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    decided_by: Mapped[str | None] = mapped_column(String(64))
    reasons: Mapped[list[Any]] = mapped_column(JsonDoc)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp)


class UseApplicationRow(Base):
    """A merchant's application to use data in a published scenario (ZW art. 20-21):
    compliance check by the operator within 5 working days, then a review by each source
    department owning a requested dataset within 10. ``requirements``: the data requirement
    list; ``terms``: purpose, period and safeguards as submitted."""

    __tablename__ = "use_applications"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), index=True)
    scenario_id: Mapped[str] = mapped_column(ForeignKey("scenarios.id"), index=True)
    requirements: Mapped[list[Any]] = mapped_column(JsonDoc)
    terms: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    status: Mapped[str] = mapped_column(String(24), index=True)
    submitted_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    compliance_due_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    checked_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    checked_by: Mapped[str | None] = mapped_column(String(64))
    reasons: Mapped[list[Any]] = mapped_column(JsonDoc)
    agreement_id: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp)


class ReviewRow(Base):
    """One source department's review of a use application. Silent past ``due_at`` (or
    ``extended_until``) it is deemed to approve (ZW art. 21), recorded as such."""

    __tablename__ = "application_reviews"
    __table_args__ = (UniqueConstraint("application_id", "department"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    application_id: Mapped[str] = mapped_column(ForeignKey("use_applications.id"), index=True)
    department: Mapped[str] = mapped_column(String(200))
    datasets: Mapped[list[Any]] = mapped_column(JsonDoc)
    status: Mapped[str] = mapped_column(String(24), index=True)
    opened_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    due_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    extended_until: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    extension_reason: Mapped[str | None] = mapped_column(Text)
    decided_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    decided_by: Mapped[str | None] = mapped_column(String(64))
    reasons: Mapped[list[Any]] = mapped_column(JsonDoc)
