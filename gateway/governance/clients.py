"""Client credentials and tokens: issuing merchant, staff and buyer clients, disabling them,
and revoking tokens, within the role boundaries (:mod:`gateway.authorization.boundaries`)."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.authorization.boundaries import Party, Reach, party_of, require_reach
from gateway.authorization.roles import Action, Role
from gateway.authorization.secrets import SecretHasher, new_client_secret
from gateway.db.schema import ClientRow, MerchantRow, TokenRow
from gateway.errors import NotFoundError, ValidationError
from gateway.governance.actor import Actor
from gateway.governance.models import Client
from gateway.governance.unit_of_work import UnitOfWork, fetch_row
from gateway.identifiers import is_valid_uscc
from keys.jwk import jwk_to_public_key

__all__ = ["ClientService", "IssuedClient"]


@dataclass(frozen=True, slots=True)
class IssuedClient:
    client: Client
    # Shown once; only its hash is stored.
    secret: str | None


class ClientService:
    """Issues and disables clients and revokes tokens."""

    def __init__(self, uow: UnitOfWork, hasher: SecretHasher) -> None:
        self._uow = uow
        self._hasher = hasher

    async def issue_client(
        self,
        actor: Actor,
        *,
        merchant_id: str | None = None,
        role: Role | None = None,
        public_jwk: Mapping[str, Any] | None = None,
        with_secret: bool = True,
        department: str | None = None,
        buyer_code: str | None = None,
    ) -> IssuedClient:
        """New client credentials for a merchant, staff credentials for a role, or a
        buyer's credentials (``buyer_code``: its unified social credit code) for the
        product deliveries it bought.

        A client authenticates with the returned secret, with ``private_key_jwt`` signed by
        the key matching ``public_jwk``, or either if both are set.
        """
        if sum(x is not None for x in (merchant_id, role, buyer_code)) != 1:
            raise ValidationError(
                "a client belongs to exactly one of a merchant, a staff role or a buyer"
            )
        if buyer_code is not None:
            buyer_code = buyer_code.strip().upper()
            if not is_valid_uscc(buyer_code):
                raise ValidationError("a buyer is named by its unified social credit code")
        if role is not None and actor.role is not None:
            raise ValidationError("staff credentials are issued only by the local administrator")
        actor.may(Action.ISSUE_CLIENT)
        if public_jwk is not None:
            jwk_to_public_key(public_jwk)  # refuse a malformed key now, not at first use
        if not with_secret and public_jwk is None:
            raise ValidationError("a client needs a secret or a public key")
        if (role in (Role.SOURCE, Role.DISTRICT)) != bool(department and department.strip()):
            raise ValidationError(
                "a source department's client names its department (the datasets' provider), "
                "a district bureau's its district, and only such clients do"
            )
        department = department.strip() if department else None
        if department is not None and len(department) > 200:
            raise ValidationError("department may be at most 200 characters")
        client_id = f"{merchant_id or role or 'buyer'}-{secrets.token_hex(4)}"
        secret = new_client_secret() if with_secret else None
        secret_hash = await self._hasher.hash_async(secret) if secret else None
        kind = "merchant" if merchant_id else "buyer" if buyer_code else "staff"
        client = Client(
            client_id=client_id,
            kind=kind,
            merchant_id=merchant_id,
            role=role.value if role else None,
            secret_hash=secret_hash,
            public_jwk=dict(public_jwk) if public_jwk else None,
            department=department,
            buyer_code=buyer_code,
        )

        async def apply(conn: AsyncConnection, now: dt.datetime) -> IssuedClient:
            if merchant_id is not None:
                exists = await conn.scalar(
                    select(MerchantRow.id).where(MerchantRow.id == merchant_id)
                )
                if exists is None:
                    raise NotFoundError(f"merchant {merchant_id} does not exist")
            await conn.execute(
                insert(ClientRow).values(
                    client_id=client_id,
                    kind=kind,
                    merchant_id=merchant_id,
                    role=client.role,
                    department=department,
                    buyer_code=buyer_code,
                    secret_hash=secret_hash,
                    public_jwk=client.public_jwk,
                    status="active",
                    created_at=now,
                    updated_at=now,
                )
            )
            return IssuedClient(client, secret)

        return await self._uow.change(
            actor,
            "client.issued",
            {
                "client_id": client_id,
                "merchant_id": merchant_id,
                "role": client.role,
                "department": department,
                "buyer_code": buyer_code,
                "auth": [
                    m
                    for m, on in (("secret", bool(secret)), ("private_key_jwt", bool(public_jwk)))
                    if on
                ],
            },
            apply,
        )

    async def set_client_status(
        self, actor: Actor, client_id: str, status: str, reason: str = ""
    ) -> None:
        """Enable or disable a client, within the actor's reach over the client's holder."""
        actor.may(Action.ISSUE_CLIENT)
        if status not in ("active", "disabled"):
            raise ValidationError("client status must be active or disabled")

        async def apply(conn: AsyncConnection, now: dt.datetime) -> None:
            row = await fetch_row(conn, ClientRow, ClientRow.client_id == client_id)
            if row is None:
                raise NotFoundError(f"client {client_id} does not exist")
            # Disabling a client stops its holder as surely as revoking its tokens.
            party = party_of(role=row.role, merchant_id=row.merchant_id)
            require_reach(actor.role, Reach.REVOKE, party, f"client {client_id}")
            await conn.execute(
                update(ClientRow)
                .where(ClientRow.client_id == client_id)
                .values(status=status, updated_at=now)
            )

        await self._uow.change(
            actor, f"client.{status}", {"client_id": client_id, "reason": reason}, apply
        )

    async def revoke_token(self, actor: Actor, jti: str, reason: str) -> None:
        """Revoke one token this gateway issued, within the actor's reach over its holder;
        revoking a revoked token records the request again and changes nothing."""
        actor.may(Action.REVOKE_TOKEN)
        if not reason.strip():
            raise ValidationError("a revocation needs a reason")

        async def apply(conn: AsyncConnection, now: dt.datetime) -> None:
            row = await fetch_row(conn, TokenRow, TokenRow.jti == jti)
            if row is None:
                raise NotFoundError(f"token {jti} was not issued by this gateway")
            # Whose token it is comes from the tokens table (the role boundaries: the
            # operator never revokes its supervisors' tokens).
            party = party_of(role=row.role, merchant_id=row.merchant_id)
            # The message names no token id: refusals are records others read.
            require_reach(actor.role, Reach.REVOKE, party, "this token")
            if row.revoked_at is None:
                await conn.execute(
                    update(TokenRow)
                    .where(TokenRow.jti == jti)
                    .values(revoked_at=now, revoked_reason=reason[:500])
                )

        await self._uow.change(actor, "token.revoked", {"jti": jti, "reason": reason}, apply)

    async def revoke_merchant_tokens(self, actor: Actor, merchant_id: str, reason: str) -> int:
        """Revoke every live token of merchant ``merchant_id``; only merchant tokens carry a
        merchant id, and the update says so again (``role`` null), so no staff token is
        ever caught by it."""
        actor.may(Action.REVOKE_TOKEN)
        require_reach(actor.role, Reach.REVOKE, Party.MERCHANT, f"merchant {merchant_id}'s tokens")
        if not reason.strip():
            raise ValidationError("a revocation needs a reason")

        async def apply(conn: AsyncConnection, now: dt.datetime) -> int:
            if await fetch_row(conn, MerchantRow, MerchantRow.id == merchant_id) is None:
                raise NotFoundError(f"merchant {merchant_id} does not exist")
            result = await conn.execute(
                update(TokenRow)
                .where(
                    TokenRow.merchant_id == merchant_id,
                    TokenRow.role.is_(None),
                    TokenRow.revoked_at.is_(None),
                    TokenRow.expires_at > now,
                )
                .values(revoked_at=now, revoked_reason=reason[:500])
            )
            return int(result.rowcount or 0)

        return await self._uow.change(
            actor, "token.revoked-all", {"merchant_id": merchant_id, "reason": reason}, apply
        )
