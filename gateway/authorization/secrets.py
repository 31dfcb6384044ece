"""Client secrets: generated with enough entropy, stored only as an argon2id hash."""

from __future__ import annotations

import asyncio
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

__all__ = ["SecretHasher", "new_client_secret"]

SECRET_PREFIX = "dsgw_cs_"  # noqa: S105 - a public prefix


def new_client_secret() -> str:
    """256 random bits; the prefix lets secret scanners recognise a leaked dsgw secret."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


class SecretHasher:
    """argon2id, run off the event loop: a slow hash is the point, a blocked loop is not."""

    def __init__(self, *, time_cost: int = 3, memory_kib: int = 65_536) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1)

    def hash(self, secret: str) -> str:
        return self._hasher.hash(secret)

    def verify(self, stored_hash: str, secret: str) -> bool:
        try:
            return self._hasher.verify(stored_hash, secret)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    async def hash_async(self, secret: str) -> str:
        return await asyncio.to_thread(self.hash, secret)

    async def verify_async(self, stored_hash: str, secret: str) -> bool:
        return await asyncio.to_thread(self.verify, stored_hash, secret)
