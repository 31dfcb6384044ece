"""Talking to the node for the anchoring worker: head, fees, signing and broadcasting.

The lowest layer of :class:`gateway.chain.worker.AnchorWorker`: it holds the worker's state
and every call that reaches the node, so the fee policy (EIP-1559 caps from
:class:`AnchorPolicy`) and the mapping of node errors to :class:`ChainUnavailableError` and
friends live in one place. The layers above decide *what* to send; this one sends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any, Final

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils.exceptions import ValidationError as EthValidationError
from hexbytes import HexBytes
from sqlalchemy.ext.asyncio import AsyncEngine
from web3.exceptions import (
    MethodUnavailable,
    TransactionNotFound,
    Web3RPCError,
)
from web3.types import TxReceipt

from gateway.chain.contract import AnchorRegistry
from gateway.chain.errors import (
    ChainConfigError,
    revert_errors,
    rpc_errors,
)
from gateway.chain.models import (
    AnchorPolicy,
    proof_checked_on_chain,
)
from gateway.chain.nonces import NonceManager, nonce_manager
from gateway.chain.records import AnchorRecord, AnchorStore, AnchorTransaction
from gateway.clock import Clock, SystemClock
from gateway.ledger.hashing import HashAlgorithm, hash_function
from gateway.ledger.log import STREAMS
from gateway.tasks import Supervised

__all__ = ["AnchorSender", "bump_fee"]

log = logging.getLogger(__name__)

_GWEI: Final = 10**9


def bump_fee(value: int, fraction: Fraction) -> int:
    return math.ceil(value * (1 + fraction))


class AnchorSender:
    """The worker's state, its node calls, fee policy and signing; see ``AnchorWorker``."""

    def __init__(
        self,
        engine: AsyncEngine,
        registry: AnchorRegistry,
        account_key: bytes,
        *,
        policy: AnchorPolicy | None = None,
        clock: Clock | None = None,
        algorithm: HashAlgorithm = "sha256",
        streams: Sequence[str] = STREAMS,
    ) -> None:
        hash_function(algorithm)  # refuses an unknown hash now
        if len(account_key) != 32:
            raise ChainConfigError(
                "chain: the anchoring key must be a 32-byte secp256k1 private key, "
                f"got {len(account_key)} bytes"
            )
        try:
            account: LocalAccount = Account.from_key(account_key)
        except (ValueError, TypeError) as exc:
            raise ChainConfigError(
                "chain: the anchoring key is not a valid secp256k1 private key"
            ) from exc
        self._engine = engine
        self._registry = registry
        self._backend = registry.backend
        self._account = account
        self._policy = policy or AnchorPolicy()
        self._clock: Clock = clock or SystemClock()
        self._streams = tuple(streams)
        self._algorithm: HashAlgorithm = algorithm
        self._proofs = proof_checked_on_chain(algorithm)
        if not self._proofs:
            log.warning(
                "chain: this log hashes with %s, which the EVM cannot compute: the registry "
                "records its roots without checking consistency proofs; run "
                "`dsgw audit --chain` to check consistency between the anchored roots",
                algorithm.upper(),
            )
        self._nonces: NonceManager = nonce_manager(self._backend, account.address)
        self._store: AnchorStore | None = None
        self._reconciled = False
        self._use_finalized_tag = self._policy.finality == "finalized"
        # Streams not anchored, and why: checkpoints of another hash, a registry conflict.
        self._refused: dict[str, str] = {}
        self._conflicts: dict[str, str] = {}
        # stream -> the newest checkpoint size a pass has queued or found anchored already.
        self._enqueued: dict[str, int] = {}
        self._reachable: bool | None = None
        self._failures = 0
        self._last_error: str | None = None
        self._last_success: dt.datetime | None = None
        self._task = Supervised("dsgw-anchoring", log=log)
        self._wake = asyncio.Event()

    @property
    def account(self) -> ChecksumAddress:
        return self._account.address

    @property
    def registry(self) -> AnchorRegistry:
        return self._registry

    @property
    def chain_id(self) -> int | None:
        """The chain's id, known after the first successful contact."""
        return None if self._store is None else self._store.chain_id

    async def _ensure_store(self) -> AnchorStore:
        if self._store is None:
            chain_id = await self._registry.chain_id()
            self._store = AnchorStore(
                self._engine,
                chain_id=chain_id,
                contract=self._registry.address,
                account=self.account,
                clock=self._clock,
            )
        return self._store

    def _rpc(self, step: str) -> contextlib.AbstractContextManager[None]:
        return rpc_errors(step, self._backend.node)

    async def _receipt(self, tx_hash: bytes) -> TxReceipt | None:
        with self._rpc("reading a transaction receipt"):
            try:
                return await self._backend.w3.eth.get_transaction_receipt(HexBytes(tx_hash))
            except TransactionNotFound:
                return None

    async def _known(self, tx_hash: bytes) -> bool:
        """Whether the node has the transaction (in its pool or in a block)."""
        with self._rpc("looking up a transaction"):
            try:
                await self._backend.w3.eth.get_transaction(HexBytes(tx_hash))
            except TransactionNotFound:
                return False
        return True

    async def _head(self) -> tuple[int, int | None]:
        """(latest block number, finalized block number or None)."""
        w3 = self._backend.w3
        with self._rpc("reading the block height"):
            latest = int(await w3.eth.block_number)
            finalized: int | None = None
            if self._use_finalized_tag:
                try:
                    finalized = int((await w3.eth.get_block("finalized"))["number"])
                except (Web3RPCError, MethodUnavailable, ValueError, KeyError) as exc:
                    log.warning(
                        "chain: %s has no 'finalized' block tag (%s); counting %d confirmations",
                        self._backend.node,
                        exc,
                        self._policy.confirmations,
                    )
                    self._use_finalized_tag = False
        return latest, finalized

    async def _fees(self) -> tuple[int, int]:
        """(max fee per gas, max priority fee per gas) at today's prices."""
        w3 = self._backend.w3
        with self._rpc("reading gas prices"):
            block = await w3.eth.get_block("latest")
            base = int(block.get("baseFeePerGas", 0) or 0)
            priority = self._policy.priority_fee
            if priority is None:
                try:
                    priority = int(await w3.eth.max_priority_fee)
                except (Web3RPCError, MethodUnavailable):
                    priority = _GWEI
        max_fee = 2 * base + priority
        cap = self._policy.max_fee_per_gas
        if cap is not None and max_fee > cap:
            log.warning(
                "chain: gas costs %d wei now, above the configured cap of %d; anchoring at the "
                "cap may take a while",
                max_fee,
                cap,
            )
            max_fee = cap
            priority = min(priority, cap)
        return max_fee, priority

    def _sign(self, fields: dict[str, Any]) -> tuple[bytes, bytes]:
        signed = self._account.sign_transaction(fields)
        return bytes(signed.raw_transaction), bytes(signed.hash)

    async def _broadcast(
        self, store: AnchorStore, tx: AnchorTransaction, anchor: AnchorRecord
    ) -> bool:
        """Send the stored raw transaction; True if the node has it now.

        Refusals are logged and left for a later pass (which finds the nonce taken, bumps
        the fee, or sees the account funded); a node that does not answer raises
        :class:`ChainUnavailableError`.
        """
        refusals: tuple[type[Exception], ...] = (
            Web3RPCError,
            EthValidationError,
            ValueError,
            *revert_errors(),
        )
        try:
            with self._rpc("broadcasting an anchor transaction"):
                await self._backend.w3.eth.send_raw_transaction(HexBytes(tx.raw))
        except refusals as exc:
            message = str(exc)
            lowered = message.lower()
            if "already known" not in lowered and "known transaction" not in lowered:
                if "insufficient funds" in lowered:
                    level, problem = (
                        logging.ERROR,
                        (
                            f"chain: the anchoring account {self.account} cannot pay for anchor "
                            f"{anchor.stream}@{anchor.size} ({message}); fund it on "
                            f"{self._backend.node}"
                        ),
                    )
                else:
                    level, problem = (
                        logging.WARNING,
                        (
                            f"chain: {self._backend.node} refused transaction {tx.tx_hash.hex()} "
                            f"(nonce {tx.nonce}) of anchor {anchor.stream}@{anchor.size}: "
                            f"{message}; retrying"
                        ),
                    )
                if problem != anchor.last_error:  # once per problem, not once per pass
                    log.log(level, "%s", problem)
                    await store.note_error(anchor.id, problem)
                return False
        await store.mark_sent(tx)
        return True

    async def _resync_nonces(self, store: AnchorStore) -> None:
        """Let the nonce manager ask the node again, never below a nonce that a stored,
        still live transaction holds."""
        highest = await store.highest_live_nonce()
        self._nonces.resync(floor=0 if highest is None else highest + 1)
