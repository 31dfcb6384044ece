"""Nonce assignment for an anchoring account: one manager per account, one nonce at a time.

Why not ask the node for every transaction: ``eth_getTransactionCount(pending)`` does not see
a transaction that is signed and stored but not yet accepted by the node (the worker stores
before it broadcasts), some nodes (eth-tester) do not count pending transactions at all, and
two concurrent askers get the same answer. So the manager counts locally, serialised by a
lock, and asks the node only at first use and after an error (:meth:`NonceManager.resync`).
The worker also tells it which nonces its stored transactions hold (:meth:`observe`), so a
resync never hands out a nonce that a stored, not yet broadcast transaction owns.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator

from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address

from gateway.chain.backends import ChainBackend
from gateway.chain.errors import rpc_errors

__all__ = ["NonceManager", "nonce_manager"]


class NonceManager:
    """Hands out the nonces of ``account`` on ``backend``'s chain, in order, once each."""

    def __init__(self, backend: ChainBackend, account: str) -> None:
        self._backend = backend
        self._account = to_checksum_address(account)
        self._lock = asyncio.Lock()
        self._next: int | None = None
        self._floor = 0

    @property
    def account(self) -> ChecksumAddress:
        return self._account

    async def pending_count(self) -> int:
        """The node's ``eth_getTransactionCount(account, "pending")``."""
        with rpc_errors("reading the anchoring account's pending nonce", self._backend.node):
            return int(await self._backend.w3.eth.get_transaction_count(self._account, "pending"))

    async def confirmed_count(self) -> int:
        """The node's ``eth_getTransactionCount(account, "latest")``: every nonce below it is
        consumed by a mined transaction."""
        with rpc_errors("reading the anchoring account's nonce", self._backend.node):
            return int(await self._backend.w3.eth.get_transaction_count(self._account, "latest"))

    def observe(self, nonce: int) -> None:
        """Record that ``nonce`` is taken (by a stored transaction); never hand it out."""
        self._floor = max(self._floor, nonce + 1)
        if self._next is not None:
            self._next = max(self._next, self._floor)

    def resync(self, *, floor: int = 0) -> None:
        """Forget the local count: the next reservation asks the node and takes the larger of
        its pending count and ``floor`` (one past the highest nonce still held by a stored
        transaction). Call after a nonce error or when stored transactions were abandoned."""
        self._next = None
        self._floor = floor

    @contextlib.asynccontextmanager
    async def reserve(self) -> AsyncIterator[int]:
        """Reserve the next nonce for the body of the ``async with``.

        Reservations are serialised. If the body completes, the nonce is spent; if it
        raises, the manager resyncs before the next reservation (the nonce may or may not
        have reached the node). Raises :class:`ChainUnavailableError` if the node must be
        asked and does not answer.
        """
        async with self._lock:
            if self._next is None:
                self._next = max(await self.pending_count(), self._floor)
            nonce = self._next
            try:
                yield nonce
            except BaseException:
                self._next = None
                raise
            self._next = nonce + 1
            self._floor = max(self._floor, nonce + 1)


_MANAGERS: weakref.WeakKeyDictionary[ChainBackend, dict[str, NonceManager]] = (
    weakref.WeakKeyDictionary()
)


def nonce_manager(backend: ChainBackend, account: str) -> NonceManager:
    """The one manager of ``account`` on ``backend``: every sender of this process that
    signs for the account must take its nonces here."""
    managers = _MANAGERS.setdefault(backend, {})
    key = to_checksum_address(account)
    if key not in managers:
        managers[key] = NonceManager(backend, key)
    return managers[key]
