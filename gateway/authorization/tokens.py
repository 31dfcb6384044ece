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

import base64
import binascii
import datetime as dt
import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import jwt
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.authorization.roles import Role
from gateway.authorization.secrets import SecretHasher
from gateway.clock import Clock
from gateway.db.schema import AssertionJtiRow, TokenRow
from gateway.errors import (
    AgreementError,
    InvalidClientError,
    InvalidTokenError,
    SuspendedError,
    TokenRevokedError,
    ValidationError,
)
from gateway.governance.models import Client, MerchantStatus
from gateway.governance.policy import PolicySnapshot, PolicyStore
from gateway.ledger.log import LogUnavailableError
from gateway.settings import Settings
from gateway.supervision.measures import MeasureKind
from keys.jwk import jwk_to_public_key, jwks
from keys.keystore import KeyPurpose, Keystore

__all__ = ["AccessClaims", "ClientCredentials", "IssuedToken", "TokenService"]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_TOKEN_LENGTH = 4096
# A client assertion may not live longer than this (RFC 7523 §3: exp "reasonable").
MAX_ASSERTION_LIFETIME = dt.timedelta(minutes=5)
# A dummy argon2 hash verified for unknown clients, so response time does not reveal
# whether a client id exists.
_DUMMY_SECRET = "dsgw-dummy-secret"  # noqa: S105 - not a credential


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


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    """What a token request presented; at most one authentication method may be used."""

    client_id: str | None = None
    client_secret: str | None = None
    assertion_type: str | None = None
    assertion: str | None = None

    @classmethod
    def from_request(cls, form: Mapping[str, str], authorization: str | None) -> ClientCredentials:
        methods = 0
        client_id = form.get("client_id")
        secret = form.get("client_secret")
        if secret is not None:
            methods += 1
        if authorization is not None:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() != "basic":
                raise InvalidClientError("token: use HTTP Basic client authentication")
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise InvalidClientError("token: malformed Basic credentials") from exc
            basic_id, sep, basic_secret = decoded.partition(":")
            if not sep:
                raise InvalidClientError("token: malformed Basic credentials")
            basic_id, basic_secret = unquote(basic_id), unquote(basic_secret)
            if client_id is not None and client_id != basic_id:
                raise InvalidClientError("token: client_id differs from the Basic credentials")
            client_id, secret = basic_id, basic_secret
            methods += 1
        assertion_type = form.get("client_assertion_type")
        assertion = form.get("client_assertion")
        if assertion_type is not None or assertion is not None:
            methods += 1
            if assertion_type != ASSERTION_TYPE or not assertion:
                raise InvalidClientError(
                    f"token: client_assertion_type must be {ASSERTION_TYPE} with a client_assertion"
                )
        if methods == 0:
            raise InvalidClientError("token: client authentication required")
        if methods > 1:
            raise ValidationError(
                "token: use exactly one client authentication method (RFC 6749 §2.3)",
                error="invalid_request",
            )
        return cls(client_id, secret, assertion_type, assertion)


# 9999-01-01T00:00:00Z: the last NumericDate a datetime can hold, with room for leeway.
_MAX_NUMERIC_DATE = 253370764800


def _jwt_time(value: object, name: str) -> dt.datetime:
    # bool is an int in Python; and a time outside what datetime holds (year 1-9999) is
    # no date at all: refused as malformed rather than overflowing.
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < _MAX_NUMERIC_DATE:
        raise InvalidTokenError(f"token: claim {name} must be a NumericDate")
    return dt.datetime.fromtimestamp(value, dt.UTC)


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
        self._lifetime = dt.timedelta(seconds=settings.token_lifetime_seconds)
        self._leeway = dt.timedelta(seconds=settings.token_leeway_seconds)
        self._keys: dict[str, Any] = {}
        self._cache: dict[str, AccessClaims] = {}
        self._dummy_hash = hasher.hash(_DUMMY_SECRET)
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
        """Return the authenticated client or raise :class:`InvalidClientError`.

        The message never says whether the client id or the secret was wrong.
        """
        snapshot = await self._policy.current()
        if credentials.assertion is not None:
            return await self._authenticate_assertion(credentials, snapshot)
        client = snapshot.clients.get(credentials.client_id or "")
        secret = credentials.client_secret or ""
        if client is None or client.secret_hash is None:
            await self._hasher.verify_async(self._dummy_hash, secret)
            raise InvalidClientError("token: client authentication failed")
        if not await self._hasher.verify_async(client.secret_hash, secret):
            raise InvalidClientError("token: client authentication failed")
        if client.status != "active":
            raise InvalidClientError("token: client authentication failed (client disabled)")
        return client

    async def _authenticate_assertion(
        self, credentials: ClientCredentials, snapshot: PolicySnapshot
    ) -> Client:
        assertion = credentials.assertion or ""
        try:
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise InvalidClientError("token: client_assertion is not a JWT") from exc
        client_id = unverified.get("iss")
        if not isinstance(client_id, str) or unverified.get("sub") != client_id:
            raise InvalidClientError("token: client_assertion iss and sub must be the client id")
        if credentials.client_id is not None and credentials.client_id != client_id:
            raise InvalidClientError("token: client_id differs from the client_assertion issuer")
        client = snapshot.clients.get(client_id)
        if client is None or client.public_jwk is None or client.status != "active":
            raise InvalidClientError("token: client authentication failed")
        key = jwk_to_public_key(client.public_jwk)
        algorithm = "EdDSA" if client.public_jwk.get("kty") == "OKP" else "ES256"
        try:
            claims = jwt.decode(
                assertion,
                key,
                algorithms=[algorithm],  # exactly the registered key's algorithm
                audience=[self._settings.token_endpoint, self._settings.issuer],
                issuer=client_id,
                # exp is required here and checked below against the gateway's clock.
                options={
                    "require": ["iss", "sub", "aud", "exp", "jti"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise InvalidClientError(f"token: client_assertion rejected: {exc}") from exc
        now = self._clock.now()
        try:
            expires = _jwt_time(claims["exp"], "exp")
        except InvalidTokenError as exc:
            raise InvalidClientError("token: client_assertion exp is not a NumericDate") from exc
        if now >= expires + self._leeway:
            raise InvalidClientError("token: client_assertion expired")
        if expires - now > MAX_ASSERTION_LIFETIME:
            raise InvalidClientError("token: client_assertion may live at most 5 minutes")
        jti = claims["jti"]
        if not isinstance(jti, str) or not 8 <= len(jti) <= 128:
            raise InvalidClientError("token: client_assertion jti must be 8-128 characters")
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    insert(AssertionJtiRow).values(
                        client_id=client_id, jti=jti, expires_at=expires + self._leeway
                    )
                )
        except IntegrityError as exc:
            raise InvalidClientError("token: client_assertion replayed (jti seen before)") from exc
        return client

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
            # A product delisted by a supervision measure gets no new delivery token.
            snapshot.check_measure(MeasureKind.PRODUCT, scope.removeprefix("product:"))
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
            merchant = snapshot.merchants.get(merchant_id)
            if merchant is None or merchant.status is not MerchantStatus.ACTIVE:
                raise SuspendedError(f"merchant {merchant_id} is suspended", merchant=merchant_id)
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
        merchant = snapshot.merchants.get(merchant_id)
        if merchant is None or merchant.status is not MerchantStatus.ACTIVE:
            raise SuspendedError(f"merchant {merchant_id} is suspended", merchant=merchant_id)
        snapshot.check_measure(MeasureKind.MERCHANT_CHANNEL, merchant_id)
        scenario = snapshot.scenarios.get(scenario_id)
        if scenario is None or not scenario.usable_at(now):
            raise SuspendedError(
                f"scenario {scenario_id} is not published and valid now", scenario=scenario_id
            )
        snapshot.check_measure(MeasureKind.SCENARIO, scenario_id)
        agreement = snapshot.agreement_for(merchant_id, scenario_id, now)
        if agreement is None:
            raise AgreementError(
                f"merchant {merchant_id} has no active agreement for scenario {scenario_id}",
                scenario=scenario_id,
            )
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
            expires_at=_jwt_time(claims["exp"], "exp"),
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
        expires = _jwt_time(claims["exp"], "exp")
        issued = _jwt_time(claims["iat"], "iat")
        if now >= expires + self._leeway:
            raise InvalidTokenError("token: expired; request a new one")
        if now + self._leeway < _jwt_time(claims["nbf"], "nbf"):
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
            if len(self._cache) >= self._settings.token_cache_size:
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
        merchant = snapshot.merchants.get(claims.merchant_id or "")
        if merchant is None or merchant.status is not MerchantStatus.ACTIVE:
            raise SuspendedError(
                f"merchant {claims.merchant_id} is suspended", merchant=claims.merchant_id
            )
        if account:
            return claims  # a closed data channel leaves the merchant its own surface
        snapshot.check_measure(MeasureKind.MERCHANT_CHANNEL, claims.merchant_id)
        scenario = snapshot.scenarios.get(claims.scenario_id or "")
        if scenario is None or not scenario.usable_at(now):
            raise SuspendedError(
                f"scenario {claims.scenario_id} is suspended or no longer valid",
                scenario=claims.scenario_id,
            )
        snapshot.check_measure(MeasureKind.SCENARIO, claims.scenario_id)
        agreement = snapshot.agreements.get(claims.agreement_id or "")
        if agreement is not None and (
            agreement.merchant_id != claims.merchant_id
            or agreement.scenario_id != claims.scenario_id
        ):
            raise InvalidTokenError("token: its agreement is not its merchant's for its scenario")
        if agreement is None or not agreement.usable_at(now):
            raise AgreementError(
                f"agreement {claims.agreement_id} is not active", agreement=claims.agreement_id
            )
        return claims
