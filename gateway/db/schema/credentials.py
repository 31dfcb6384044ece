"""Tables of the merchants' credentials: OAuth clients, issued tokens, used assertion ids."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    ForeignKey,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from gateway.db.schema.base import Base, JsonDoc, Timestamp

__all__ = ["AssertionJtiRow", "ClientRow", "TokenRow"]


class ClientRow(Base):
    """OAuth client: a merchant's application or a staff member of a role."""

    __tablename__ = "clients"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    merchant_id: Mapped[str | None] = mapped_column(ForeignKey("merchants.id"), index=True)
    role: Mapped[str | None] = mapped_column(String(32))
    # A source department's staff client reviews applications for the datasets whose
    # provider is this department.
    department: Mapped[str | None] = mapped_column(String(200))
    # A buyer's client (a company that bought a product on the exchange): its credit code.
    buyer_code: Mapped[str | None] = mapped_column(String(18))
    secret_hash: Mapped[str | None] = mapped_column(String(255))
    public_jwk: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp)


class TokenRow(Base):
    """Every token issued, so a token can be revoked by id and audited later."""

    __tablename__ = "tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id"), index=True)
    merchant_id: Mapped[str | None] = mapped_column(String(64), index=True)
    scenario_id: Mapped[str | None] = mapped_column(String(64))
    agreement_id: Mapped[str | None] = mapped_column(String(64))
    role: Mapped[str | None] = mapped_column(String(32))
    issued_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    expires_at: Mapped[dt.datetime] = mapped_column(Timestamp, index=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    revoked_reason: Mapped[str | None] = mapped_column(String(500))


class AssertionJtiRow(Base):
    """Seen ``private_key_jwt`` assertion ids, kept until they expire (replay protection)."""

    __tablename__ = "assertion_jtis"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    jti: Mapped[str] = mapped_column(String(128), primary_key=True)
    expires_at: Mapped[dt.datetime] = mapped_column(Timestamp, index=True)
