"""OAuth 2.0 client authentication at the token endpoint (RFC 6749 §2.3): a client secret
(HTTP Basic or form) or a ``private_key_jwt`` assertion (RFC 7523), exactly one of them.

Kept apart from :mod:`gateway.authorization.tokens` because it answers a different question
(who is asking) from the one tokens answer (what the holder may do).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote

import jwt
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.authorization.secrets import SecretHasher
from gateway.clock import Clock
from gateway.db.schema import AssertionJtiRow
from gateway.errors import InvalidClientError, InvalidTokenError, ValidationError
from gateway.governance.models import Client
from gateway.governance.policy import PolicySnapshot, PolicyStore
from gateway.settings import Settings
from keys.jwk import jwk_to_public_key

__all__ = ["ClientAuthenticator", "ClientCredentials", "jwt_time"]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# A client assertion may not live longer than this (RFC 7523 §3: exp "reasonable").
MAX_ASSERTION_LIFETIME = dt.timedelta(minutes=5)
# A dummy argon2 hash verified for unknown clients, so response time does not reveal
# whether a client id exists.
_DUMMY_SECRET = "dsgw-dummy-secret"  # noqa: S105 - not a credential


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


def jwt_time(value: object, name: str) -> dt.datetime:
    # bool is an int in Python; and a time outside what datetime holds (year 1-9999) is
    # no date at all: refused as malformed rather than overflowing.
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < _MAX_NUMERIC_DATE:
        raise InvalidTokenError(f"token: claim {name} must be a NumericDate")
    return dt.datetime.fromtimestamp(value, dt.UTC)


class ClientAuthenticator:
    """Authenticates token requests against the clients of the current policy snapshot."""

    def __init__(
        self,
        settings: Settings,
        policy: PolicyStore,
        engine: AsyncEngine,
        hasher: SecretHasher,
        clock: Clock,
    ) -> None:
        self._settings = settings
        self._policy = policy
        self._engine = engine
        self._hasher = hasher
        self._clock = clock
        self._leeway = dt.timedelta(seconds=settings.token.leeway_seconds)
        # Made on the first token request, not here: a hash costs what a verification
        # costs, which every process start (every CLI command) would otherwise pay. Made
        # before the client is looked up, so the first request of a process costs the same
        # whether its client exists or not.
        self._dummy_hash: str | None = None

    async def authenticate(self, credentials: ClientCredentials) -> Client:
        """Return the authenticated client or raise :class:`InvalidClientError`.

        The message never says whether the client id or the secret was wrong.
        """
        snapshot = await self._policy.current()
        if credentials.assertion is not None:
            return await self._authenticate_assertion(credentials, snapshot)
        if self._dummy_hash is None:
            self._dummy_hash = await self._hasher.hash_async(_DUMMY_SECRET)
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
            expires = jwt_time(claims["exp"], "exp")
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
