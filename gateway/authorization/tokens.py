"""Scenario access tokens: OAuth 2.0 client credentials (RFC 6749 §4.4) in, EdDSA JWTs
(RFC 9068 access-token profile) out, and their verification on every call.

Verification is where algorithm confusion attacks live, so it is written out in full:
the header must say ``EdDSA`` and ``at+jwt`` with a ``kid`` this gateway issued; the key is
an Ed25519 public key object (never bytes that an HMAC could be keyed with); issuer,
audience, expiry, not-before and issue time are required. A verified token is cached until
it expires, but revocation and the status of merchant, scenario and agreement are checked
against the current policy snapshot on every call.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from sqlalchemy import insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.authorization.clients import ClientAuthenticator, ClientCredentials, jwt_time
from gateway.authorization.decisions import (
    decide_standing,
    merchant_active,
    product_deliverable,
    token_standing,
)
from gateway.authorization.roles import Role
from gateway.authorization.secrets import SecretHasher
from gateway.clock import Clock
from gateway.db.schema import TokenRow
from gateway.errors import (
    InvalidTokenError,
    TokenRevokedError,
    ValidationError,
)
from gateway.governance.models import Client
from gateway.governance.policy import PolicySnapshot, PolicyStore
from gateway.ledger.log import LogUnavailableError
from gateway.settings import Settings
from keys.jwk import jwks
from keys.keystore import KeyPurpose, Keystore

__all__ = ["AccessClaims", "IssuedToken", "TokenService"]

MAX_TOKEN_LENGTH = 4096


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """A verified token's meaning. ``scenario_id`` is set for merchant tokens, ``role`` for
    staff tokens, never both."""

    jti: str
    client_id: str
    subject: str
    merchant_id: str | None
    scenario_id: str | None
    agreement_id: str | None
    role: Role | None
    expires_at: dt.datetime
    # Buyer tokens: the product whose deliveries the buyer may call.
    product_id: str | None = None


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scope: str
    claims: AccessClaims

    def to_response(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "scope": self.scope,
        }


class TokenService:
    def __init__(
        self,
        settings: Settings,
        keystore: Keystore,
        policy: PolicyStore,
        engine: AsyncEngine,
        hasher: SecretHasher,
        clock: Clock,
    ) -> None:
        self._settings = settings
        self._keystore = keystore
        self._policy = policy
        self._engine = engine
        self._hasher = hasher
        self._clock = clock
        self._lifetime = dt.timedelta(seconds=settings.token.lifetime_seconds)
        self._leeway = dt.timedelta(seconds=settings.token.leeway_seconds)
        self._keys: dict[str, Any] = {}
        self._cache: dict[str, AccessClaims] = {}
        self._clients = ClientAuthenticator(settings, policy, engine, hasher, clock)
        self._load_keys()

    # -- keys ---------------------------------------------------------------------------

    def _load_keys(self) -> None:
        grace = self._lifetime + self._leeway
        infos = self._keystore.verification_keys(
            KeyPurpose.TOKEN_SIGNING, now=self._clock.now(), grace=grace
        )
        self._keys = {info.kid: self._keystore.public_key(info.kid) for info in infos}

    def _key_for(self, kid: str) -> Any:
        key = self._keys.get(kid)
        if key is None and self._keystore.reload_if_changed():
            self._load_keys()
            key = self._keys.get(kid)
        if key is None:
            raise InvalidTokenError("token: signed by a key this gateway does not know")
        return key

    def jwks(self) -> dict[str, Any]:
        """The public keys that verify tokens now, including retired ones in their grace."""
        if self._keystore.reload_if_changed():
            self._load_keys()
        return jwks(sorted(self._keys.items()))

    # -- client authentication ----------------------------------------------------------

    async def authenticate(self, credentials: ClientCredentials) -> Client:
        """Return the authenticated client or raise :class:`InvalidClientError`
        (:class:`ClientAuthenticator`)."""
        return await self._clients.authenticate(credentials)

    # -- issuing ------------------------------------------------------------------------

    async def issue(self, client: Client, scope: str | None) -> IssuedToken:
        snapshot = await self._policy.current()
        now = self._clock.now()
        if client.kind == "staff":
            if scope not in (None, "", "admin"):
                raise ValidationError(
                    "token: staff clients may only ask for scope 'admin'", error="invalid_scope"
                )
            role = Role(client.role or "")
            return await self._sign(
                client=client,
                audience=self._settings.admin_audience,
                expires_at=now + self._lifetime,
                scope="admin",
                extra={"role": role.value},
                now=now,
            )
        if client.kind == "buyer":
            if not scope or not scope.startswith("product:") or " " in scope:
                raise ValidationError(
                    "token: a buyer asks for scope=product:<id>, the product it bought",
                    error="invalid_scope",
                )
            product_deliverable(snapshot, scope.removeprefix("product:"))
            return await self._sign(
                client=client,
                audience=self._settings.delivery_audience,
                expires_at=now + self._lifetime,
                scope=scope,
                extra={"product": scope.removeprefix("product:")},
                now=now,
            )
        merchant_id = client.merchant_id or ""
        if scope == "account":
            # The merchant's own surface: applications and tasks, never data.
            merchant_active(snapshot, merchant_id)
            return await self._sign(
                client=client,
                audience=self._settings.account_audience,
                expires_at=now + self._lifetime,
                scope="account",
                extra={},
                now=now,
            )
        if not scope or not scope.startswith("scenario:") or " " in scope:
            raise ValidationError(
                "token: scope must name exactly one scenario, as scope=scenario:<id> "
                "(one scenario, one authorization), or be 'account' for the merchant's "
                "applications and tasks",
                error="invalid_scope",
            )
        scenario_id = scope.removeprefix("scenario:")
        standing = decide_standing(snapshot, merchant_id, scenario_id, now)
        agreement, scenario = standing.agreement, standing.scenario
        expires_at = min(now + self._lifetime, agreement.ends_at, scenario.valid_until)
        return await self._sign(
            client=client,
            audience=self._settings.audience,
            expires_at=expires_at,
            scope=scope,
            extra={"scenario": scenario_id, "agreement": agreement.id},
            now=now,
        )

    async def _sign(
        self,
        *,
        client: Client,
        audience: str,
        expires_at: dt.datetime,
        scope: str,
        extra: dict[str, str],
        now: dt.datetime,
    ) -> IssuedToken:
        key_info = self._keystore.active(KeyPurpose.TOKEN_SIGNING)
        if key_info.kid not in self._keys:
            self._load_keys()
        jti = secrets.token_urlsafe(16)
        subject = client.merchant_id or client.buyer_code or client.client_id
        issued = int(now.timestamp())
        claims = {
            "iss": self._settings.issuer,
            "aud": audience,
            "sub": subject,
            "client_id": client.client_id,
            "jti": jti,
            "iat": issued,
            "nbf": issued,
            "exp": int(expires_at.timestamp()),
            "scope": scope,
            **extra,
        }
        token = jwt.encode(
            claims,
            self._keystore.signing_key(key_info.kid),
            algorithm="EdDSA",
            headers={"kid": key_info.kid, "typ": "at+jwt"},
        )
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    insert(TokenRow).values(
                        jti=jti,
                        client_id=client.client_id,
                        merchant_id=client.merchant_id,
                        scenario_id=extra.get("scenario"),
                        agreement_id=extra.get("agreement"),
                        role=extra.get("role"),
                        issued_at=now,
                        expires_at=expires_at,
                    )
                )
        except SQLAlchemyError as exc:
            raise LogUnavailableError("token: could not record the issued token") from exc
        access = self._claims_from(claims)
        return IssuedToken(token, max(0, int(expires_at.timestamp()) - issued), scope, access)

    # -- verifying ----------------------------------------------------------------------

    def _claims_from(self, claims: Mapping[str, Any]) -> AccessClaims:
        role = claims.get("role")
        product = claims.get("product")
        return AccessClaims(
            jti=str(claims["jti"]),
            client_id=str(claims.get("client_id", "")),
            subject=str(claims["sub"]),
            merchant_id=None if role or product else str(claims["sub"]),
            product_id=str(product) if product else None,
            scenario_id=claims.get("scenario"),
            agreement_id=claims.get("agreement"),
            role=Role(role) if role else None,
            expires_at=jwt_time(claims["exp"], "exp"),
        )

    def _decode(self, token: str, audience: str) -> AccessClaims:
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidTokenError("token: too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidTokenError("token: not a well-formed JWT") from exc
        if header.get("alg") != "EdDSA":
            raise InvalidTokenError(
                f"token: algorithm {header.get('alg')!r} is not accepted; tokens are EdDSA"
            )
        if header.get("typ") != "at+jwt":
            raise InvalidTokenError("token: not an access token (typ must be at+jwt)")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise InvalidTokenError("token: header has no key id")
        required = ["iss", "aud", "sub", "exp", "nbf", "iat", "jti", "client_id", "scope"]
        try:
            claims = jwt.decode(
                token,
                self._key_for(kid),
                algorithms=["EdDSA"],  # never from the token's own header
                audience=audience,  # a data token is useless on the admin API and vice versa
                issuer=self._settings.issuer,
                options={
                    "require": required,
                    # Times are checked below against the gateway's clock (injectable, so
                    # tests move time), with the same small leeway.
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidAudienceError as exc:
            raise InvalidTokenError("token: issued for another audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise InvalidTokenError("token: issued by another issuer") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidTokenError(f"token: {exc}") from exc
        except jwt.PyJWTError as exc:
            raise InvalidTokenError("token: signature or claims invalid") from exc
        now = self._clock.now()
        expires = jwt_time(claims["exp"], "exp")
        issued = jwt_time(claims["iat"], "iat")
        if now >= expires + self._leeway:
            raise InvalidTokenError("token: expired; request a new one")
        if now + self._leeway < jwt_time(claims["nbf"], "nbf"):
            raise InvalidTokenError("token: not valid yet")
        if now + self._leeway < issued:
            raise InvalidTokenError("token: issued in the future")
        # Every token this gateway signs lives at most token_lifetime_seconds (issue() caps
        # exp at iat + lifetime, shorter only for an agreement or scenario ending sooner).
        # A longer-lived one, even correctly signed (an old or leaked key, a bug, a signing
        # path other than issue()), is refused: a stolen token is useful for minutes at most.
        if expires - issued > self._lifetime:
            raise InvalidTokenError(
                f"token: lives longer than the {int(self._lifetime.total_seconds())} s "
                "this gateway issues"
            )
        self._check_shape(claims, audience)
        try:
            return self._claims_from(claims)
        except ValueError as exc:
            raise InvalidTokenError("token: unknown role") from exc

    def _check_shape(self, claims: Mapping[str, Any], audience: str) -> None:
        """Each audience's tokens carry exactly their own claims, as :meth:`issue` makes them.

        A claim from another kind of token is refused, not ignored: ``role`` is what marks a
        staff token, so a data token carrying one would otherwise be treated as staff and
        skip the merchant, scenario and agreement checks. A data token is only ever a
        merchant's.
        """
        present = {name for name in ("role", "scenario", "agreement", "product") if name in claims}
        if audience == self._settings.admin_audience:
            kind, required = "admin", {"role"}
        elif audience == self._settings.delivery_audience:
            kind, required = "delivery", {"product"}
        elif audience == self._settings.account_audience:
            kind, required = "merchant account", set()
            if claims.get("scope") != "account":
                raise InvalidTokenError("token: not a merchant account token")
        else:
            kind, required = "data", {"scenario", "agreement"}
        missing = sorted(required - present)
        if missing:
            raise InvalidTokenError(f"token: {kind} token without {' and '.join(missing)}")
        foreign = sorted(present - required)
        if foreign:
            raise InvalidTokenError(
                f"token: a {kind} token carries no {', '.join(foreign)} claim"
                + (" (data tokens are only ever a merchant's)" if kind == "data" else "")
            )
        if any(not isinstance(claims[name], str) or not claims[name] for name in required):
            raise InvalidTokenError(f"token: {kind} token claims must be non-empty strings")

    async def verify(
        self,
        token: str,
        *,
        admin: bool = False,
        account: bool = False,
        delivery: bool = False,
        snapshot: PolicySnapshot | None = None,
    ) -> AccessClaims:
        """Verify a bearer token for the data plane (the admin API with ``admin``, a
        merchant's own surface with ``account``), against ``snapshot`` if given, so a call
        decides everything on one policy view.

        Raises :class:`InvalidTokenError` (or a subclass), :class:`SuspendedError` or
        :class:`AgreementError`.
        """
        if admin:
            audience = self._settings.admin_audience
        elif account:
            audience = self._settings.account_audience
        elif delivery:
            audience = self._settings.delivery_audience
        else:
            audience = self._settings.audience
        cache_key = hashlib.sha256(f"{audience}\x00{token}".encode()).hexdigest()
        claims = self._cache.get(cache_key)
        if claims is None:
            claims = self._decode(token, audience)
            if len(self._cache) >= self._settings.token.cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[cache_key] = claims
        now = self._clock.now()
        if now >= claims.expires_at + self._leeway:
            self._cache.pop(cache_key, None)
            raise InvalidTokenError("token: expired; request a new one")
        if snapshot is None:
            snapshot = await self._policy.current()
        if claims.jti in snapshot.revoked_jtis:
            raise TokenRevokedError("token: revoked")
        client = snapshot.clients.get(claims.client_id)
        if client is None or client.status != "active":
            raise TokenRevokedError("token: its client is disabled")
        # The token's holder is its client's: a staff token has its client's role, a
        # merchant's token its client's merchant, a delivery token a buyer's client.
        if admin:
            role = claims.role.value if claims.role is not None else None
            if client.kind != "staff" or client.role != role:
                raise InvalidTokenError("token: its role is not its client's")
            return claims
        if delivery:
            if client.kind != "buyer":
                raise InvalidTokenError("token: a delivery token is a buyer's")
            return claims  # a buyer's entitlement is checked against its trades per delivery
        if client.kind != "merchant" or client.merchant_id != claims.merchant_id:
            raise InvalidTokenError("token: not a token of its client's merchant")
        if account:
            merchant_active(snapshot, claims.merchant_id)
            return claims  # a closed data channel leaves the merchant its own surface
        token_standing(snapshot, claims.merchant_id, claims.scenario_id, claims.agreement_id, now)
        return claims
