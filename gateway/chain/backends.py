"""Chain backends: where the anchor registry lives and how the gateway reaches it.

``embedded``
    py-evm in this process through eth-tester. Ephemeral (gone with the process) and fast;
    for tests and for machines without a node. Mining is under the caller's control.
``anvil``
    a real Ethereum node (foundry's anvil from ``contracts/node_modules``) that this process
    starts on a free loopback port, with its state persisted to a file in a given directory
    (``anvil --state``: loaded at start, dumped on a clean stop and every few seconds while
    it runs), and stops again on :meth:`ChainBackend.close`. One node serves one directory:
    the node holds an exclusive lock on ``anvil.lock`` there for as long as it runs, and
    any other process (a second gateway, a new leader, ``dsgw audit --chain``) that finds
    the lock taken attaches to that node instead of starting another.
``rpc``
    any Ethereum JSON-RPC endpoint (Besu, geth, ...); nothing is started or deployed.

All three hand out an :class:`~web3.AsyncWeb3`, so anchoring never blocks the gateway's event
loop. Retrying is the anchoring worker's job: the HTTP providers here do not retry.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Final

from eth_typing import ChecksumAddress
from web3.providers.eth_tester import AsyncEthereumTesterProvider

from gateway.chain.anvil import AnvilBackend
from gateway.chain.backend import ChainBackend, http_provider, web3_for
from gateway.chain.errors import ChainConfigError

__all__ = [
    "BACKEND_KINDS",
    "AnvilBackend",
    "ChainBackend",
    "EmbeddedBackend",
    "RpcBackend",
    "open_backend",
]

log = logging.getLogger(__name__)

BACKEND_KINDS: Final = ("embedded", "anvil", "rpc")


class EmbeddedBackend(ChainBackend):
    """py-evm in process (eth-tester). Ephemeral: every start is a fresh chain.

    With ``auto_mine=False`` transactions wait in a pending block until :meth:`mine`;
    :attr:`tester` gives tests snapshots and reverts (``take_snapshot``/``revert_to_snapshot``)
    to stage reorgs.
    """

    kind = "embedded"
    ephemeral = True

    def __init__(self, *, auto_mine: bool = True) -> None:
        super().__init__()
        self._auto_mine = auto_mine
        self._tester: Any = None  # eth_tester.EthereumTester (an untyped library)

    @property
    def node(self) -> str:
        return "the embedded py-evm chain (ephemeral: lost when the process exits)"

    @property
    def tester(self) -> Any:
        """The ``eth_tester.EthereumTester`` under the chain."""
        if self._tester is None:
            raise ChainConfigError("chain: the embedded backend is not started")
        return self._tester

    async def start(self) -> None:
        if self._w3 is not None:
            return
        # Imported here: py-evm takes seconds to load, and only this backend needs it.
        from eth_tester import EthereumTester, PyEVMBackend  # type: ignore[import-untyped]

        tester = EthereumTester(PyEVMBackend())
        if not self._auto_mine:
            tester.disable_auto_mine_transactions()
        provider = AsyncEthereumTesterProvider()
        provider.ethereum_tester = tester
        self._tester = tester
        self._w3 = web3_for(provider)
        log.warning("chain: anchoring on %s", self.node)

    async def dev_account(self) -> ChecksumAddress | None:
        accounts = await self.w3.eth.accounts
        return accounts[0]

    async def mine(self, blocks: int = 1) -> None:
        self.tester.mine_blocks(blocks)


class RpcBackend(ChainBackend):
    """Any Ethereum JSON-RPC endpoint over HTTP(S)."""

    kind = "rpc"
    ephemeral = False

    def __init__(self, url: str, *, request_timeout: float = 10.0) -> None:
        super().__init__()
        if not url.startswith(("http://", "https://")):
            raise ChainConfigError(
                f"chain: the rpc backend needs an http(s):// JSON-RPC URL, not {url!r}"
            )
        self._url = url
        self._timeout = request_timeout

    @property
    def url(self) -> str:
        return self._url

    @property
    def node(self) -> str:
        return f"the JSON-RPC node at {self._url}"

    async def start(self) -> None:
        if self._w3 is None:
            self._w3 = web3_for(http_provider(self._url, self._timeout))


def open_backend(
    kind: str,
    *,
    state_dir: Path | None = None,
    rpc_url: str | None = None,
    anvil_executable: Path | None = None,
    block_time: float | None = None,
) -> ChainBackend:
    """The backend named by ``kind`` (one of :data:`BACKEND_KINDS`), not yet started.

    Raises :class:`ChainConfigError` for an unknown kind or a missing argument.
    """
    if kind == "embedded":
        return EmbeddedBackend()
    if kind == "anvil":
        if state_dir is None:
            raise ChainConfigError("chain: the anvil backend needs a state directory")
        return AnvilBackend(state_dir, executable=anvil_executable, block_time=block_time)
    if kind == "rpc":
        if not rpc_url:
            raise ChainConfigError("chain: the rpc backend needs the node's URL (chain rpc_url)")
        return RpcBackend(rpc_url)
    raise ChainConfigError(
        f"chain: unknown backend {kind!r}; choose one of {', '.join(BACKEND_KINDS)}"
    )
