"""The interface every chain backend implements, and the HTTP provider they share.

A small abstract class, so that tests run the anchoring code against a real in-process
chain (:class:`gateway.chain.backends.EmbeddedBackend`) rather than a mock.
"""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Any, ClassVar, Self

import aiohttp
from eth_typing import ChecksumAddress
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.exceptions import TimeExhausted, TransactionNotFound
from web3.providers.async_base import AsyncBaseProvider
from web3.types import TxParams, TxReceipt

from gateway.chain.errors import ChainConfigError, ChainError, revert_errors, rpc_errors

__all__ = ["ChainBackend", "http_provider"]


class ChainBackend(abc.ABC):
    """A chain to anchor on. Use as ``async with backend:`` or call :meth:`start` and
    :meth:`close`; :attr:`w3` is usable in between."""

    kind: ClassVar[str]
    ephemeral: ClassVar[bool]
    """Whether the chain's state vanishes with this process."""

    def __init__(self) -> None:
        self._w3: AsyncWeb3[Any] | None = None

    @property
    def w3(self) -> AsyncWeb3[Any]:
        """The web3 client. Raises :class:`ChainConfigError` before :meth:`start`."""
        if self._w3 is None:
            raise ChainConfigError(f"chain: the {self.kind} backend is not started")
        return self._w3

    @property
    @abc.abstractmethod
    def node(self) -> str:
        """Where the chain is, for messages: ``"anvil at http://127.0.0.1:8545"``."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Make :attr:`w3` usable (start the node where this backend runs one)."""

    async def close(self) -> None:
        """Release connections and stop what :meth:`start` started."""
        if self._w3 is not None and isinstance(self._w3.provider, AsyncHTTPProvider):
            await self._w3.provider.disconnect()

    async def dev_account(self) -> ChecksumAddress | None:
        """A funded account the node signs for (dev chains only), used to deploy the registry
        and fund the anchoring account; None on production chains."""
        return None

    async def mine(self, blocks: int = 1) -> None:
        """Mine ``blocks`` blocks now (dev chains only).

        Raises :class:`ChainConfigError` on chains that do not mine on demand."""
        raise ChainConfigError(f"chain: {self.node} does not mine on demand")

    async def send_unlocked(self, tx: TxParams, what: str) -> TxReceipt:
        """Send ``tx`` from an account the node signs for (a dev account) and wait until it
        is mined, mining the block on chains that mine on demand.

        Raises :class:`ChainError` if it reverts or is not mined within 30 s.
        """
        w3 = self.w3
        with rpc_errors(what, self.node):
            try:
                tx_hash = await w3.eth.send_transaction(tx)
            except revert_errors() as exc:
                raise ChainError(f"chain: {what}: reverted: {exc}") from exc
            try:
                receipt = await w3.eth.get_transaction_receipt(tx_hash)
            except TransactionNotFound:
                await self.mine(1)
                try:
                    receipt = await w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
                except TimeExhausted as exc:
                    raise ChainError(
                        f"chain: {what}: transaction {tx_hash.to_0x_hex()} was not mined "
                        "within 30 s"
                    ) from exc
        if receipt["status"] != 1:
            raise ChainError(f"chain: {what}: reverted (tx {tx_hash.to_0x_hex()})")
        return receipt

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


def web3_for(provider: AsyncBaseProvider) -> AsyncWeb3[Any]:
    """A web3 client for ``provider`` without ENS name resolution.

    Why: the gateway names accounts and contracts by address only (a name on a consortium
    chain would mean nothing), and web3's ENS middleware walks every request's parameters
    looking for names: with an anchor's consistency proof in its calldata, that walk cost
    most of the CPU of an ``eth_estimateGas`` call on the serving event loop.
    """
    w3: AsyncWeb3[Any] = AsyncWeb3(provider)
    w3.middleware_onion.remove("ens_name_to_address")
    return w3


def http_provider(url: str, timeout: float) -> AsyncHTTPProvider:
    # exception_retry_configuration=None: the worker backs off itself; web3's own retries
    # would hold every call for seconds while the node is down.
    return AsyncHTTPProvider(
        url,
        request_kwargs={"timeout": aiohttp.ClientTimeout(total=timeout)},
        exception_retry_configuration=None,
    )
