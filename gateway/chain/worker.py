"""The anchoring worker: puts each stream's newest checkpoint on the AnchorRegistry and
follows it until it is final.

Life of an anchor (table ``anchors``, one row per (chain, contract, stream, size))::

    queued --sign, store, broadcast--> pending --receipt--> mined --deep enough--> final
      ^                                  |  ^                 |
      |  nonce taken by another tx,      |  |   reorg: receipt gone, the same raw
      +-- reverted, nonce gap -----------+  +-- transaction is sent again
      +-- chain lost a final anchor (reconcile) ------------------------------+

Rules that keep a checkpoint from being anchored twice, across crashes and restarts:

* One anchor in flight (``queued``/``pending``) per stream, the stream's newest checkpoint:
  anchoring it covers every older one. A queued anchor that a newer checkpoint overtakes
  before it is sent is ``superseded``.
* Before building a transaction the worker reads the registry's ``latest(stream)``: it never
  sends a size at or below the chain's, and proves consistency from exactly that head.
* The signed transaction is stored (``anchor_transactions.raw``) in the same database
  transaction that moves the anchor to ``pending``, *before* it is broadcast. After a crash,
  a lost mempool or a reorg it is sent again byte for byte: same nonce, same hash. A fee bump
  reuses the nonce, so of all an anchor's transactions at most one can be mined.
* On start, and whenever the chain comes back after an outage, :meth:`AnchorWorker.reconcile`
  compares the recorded anchors with the registry, re-queues what the chain lost (a reset dev
  chain) and logs it at ERROR level.

Chain outages never reach the gateway: :meth:`AnchorWorker.run_once` raises
:class:`ChainUnavailableError`, the background loop backs off (up to
``AnchorPolicy.max_backoff``) and catches up when the node answers again. The backlog is in
:func:`gateway.chain.status.anchoring_status` and :attr:`AnchorWorker.health`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
from collections import Counter
from collections.abc import Sequence
from fractions import Fraction
from typing import Any, Final

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from eth_typing import ChecksumAddress, HexStr
from eth_utils.exceptions import ValidationError as EthValidationError
from hexbytes import HexBytes
from sqlalchemy import and_, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from web3.exceptions import (
    MethodUnavailable,
    TransactionNotFound,
    Web3RPCError,
)
from web3.types import TxParams, TxReceipt

from gateway.chain.contract import AnchorRegistry, RegistryHead, revert_reason
from gateway.chain.errors import (
    AnchorRejectedError,
    ChainConfigError,
    ChainError,
    ChainUnavailableError,
    RegistryConflictError,
    UnanchorableError,
    revert_errors,
    rpc_errors,
)
from gateway.chain.models import (
    AnchorPolicy,
    CycleReport,
    ReconcileReport,
    WorkerHealth,
    check_anchorable,
    proof_checked_on_chain,
)
from gateway.chain.nonces import NonceManager, nonce_manager
from gateway.chain.records import LIVE_TRANSACTION, AnchorRecord, AnchorStore, AnchorTransaction
from gateway.clock import Clock, SystemClock
from gateway.db.schema import CheckpointRow
from gateway.errors import DsgwError, NotFoundError
from gateway.ledger.hashing import HashAlgorithm, hash_function
from gateway.ledger.log import STREAMS
from gateway.ledger.tree import MerkleTree

__all__ = ["AnchorWorker"]

log = logging.getLogger(__name__)

_GWEI: Final = 10**9
_LIVE: Final = LIVE_TRANSACTION


def _bump(value: int, fraction: Fraction) -> int:
    return math.ceil(value * (1 + fraction))


class AnchorWorker:
    """Anchors the checkpoints in ``engine``'s ``checkpoints`` table on ``registry``, signing
    with the secp256k1 private key ``account_key`` (32 bytes; the keystore's
    ``chain_account_private_key(kid)``). The account must be funded and authorized on the
    registry (:func:`gateway.chain.deployment.ensure_registry` does both on dev chains).

    Drive it with :meth:`run_once` (tests, a one-shot CLI) or :meth:`start`/:meth:`close`
    (a background task). One worker per registry and account: two workers would share the
    account's nonces.

    ``algorithm`` is the deployment's tree hash. SHA-256 trees are anchored with
    consistency proofs the registry checks; SM3 trees with ``anchorWithoutProof``, which the
    registry keeps append-only by size only, so their consistency is checked off chain: by
    this worker against the registry's head before each anchor, and by ``dsgw audit --chain``
    over every anchored root.

    Raises :class:`ChainConfigError` for an invalid key.
    """

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
        self._reachable: bool | None = None
        self._failures = 0
        self._last_error: str | None = None
        self._last_success: dt.datetime | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    # -- public face ------------------------------------------------------------------

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

    @property
    def health(self) -> WorkerHealth:
        return WorkerHealth(
            node=self._backend.node,
            account=self.account,
            reachable=self._reachable,
            consecutive_failures=self._failures,
            last_error=self._last_error,
            last_success_at=self._last_success,
            blocked_streams=tuple(
                f"{stream}: {why}"
                for stream, why in sorted({**self._refused, **self._conflicts}.items())
            ),
        )

    def notify(self) -> None:
        """Wake the background loop now (e.g. after a new checkpoint); ignored while the
        chain is unreachable, so that an outage is not hammered."""
        if self._failures == 0:
            self._wake.set()

    def resume(self) -> None:
        """Run a pass now even after failures: the node is known to be back."""
        self._wake.set()

    async def start(self) -> None:
        """Run passes in a background task until :meth:`close`."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="dsgw-anchoring")

    async def close(self) -> None:
        """Stop the background task. Stored transactions stay stored; the next worker on
        this database picks them up."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run_once(self) -> CycleReport:
        """One pass: reconcile if due, follow pending and mined anchors, queue the newest
        checkpoints, and submit queued anchors. Updates :attr:`health`.

        Raises :class:`ChainUnavailableError` when the node does not answer (nothing is
        lost: the next pass resumes), :class:`ChainConfigError` when the registry is not on
        the chain, other :class:`DsgwError` subclasses when the store fails.
        """
        counts: Counter[str] = Counter()
        try:
            try:
                store = await self._ensure_store()
                if not self._reconciled:
                    report = await self.reconcile()
                    counts["requeued"] += len(report.requeued)
                    counts["adopted"] += len(report.adopted)
                await self._follow(store, counts)
                await self._enqueue(store, counts)
                await self._submit(store, counts)
            except SQLAlchemyError as exc:
                raise DsgwError(f"anchoring: the store failed: {exc}") from exc
        except ChainUnavailableError as exc:
            # Whatever the outage hid (a reset node, a reorg) is checked again on return.
            self._reconciled = False
            self._failed(exc, transient=True)
            raise
        except DsgwError as exc:
            self._failed(exc, transient=False)
            raise
        if self._failures:
            log.warning(
                "chain: %s answers again after %d failed attempts; anchoring catches up",
                self._backend.node,
                self._failures,
            )
        self._failures = 0
        self._reachable = True
        self._last_error = None
        self._last_success = self._clock.now()
        return CycleReport(**counts)

    async def reconcile(self) -> ReconcileReport:
        """Compare the recorded anchors with the registry and repair the records.

        * A stream whose registry head is below our newest final anchor lost anchors (a
          reset dev chain, or a reorg deeper than finality): the newest lost anchor is
          re-queued, older lost ones are superseded by it; logged at ERROR level.
        * A registry head whose root is not this log's root at that size blocks the stream
          (:class:`RegistryConflictError`, logged); a head above our records whose root is
          ours is adopted (e.g. a database restored from an older backup).

        Raises :class:`ChainConfigError` if the registry is not deployed on the chain.
        """
        store = await self._ensure_store()
        if not await self._registry.deployed():
            raise ChainConfigError(
                f"chain: no AnchorRegistry at {self._registry.address} on chain "
                f"{store.chain_id} ({self._backend.node}): the chain lost it (a reset dev "
                "chain?) or the address is wrong; on a dev chain restart the gateway to "
                "redeploy, on a production chain configure the registry's address"
            )
        self._conflicts.clear()  # found again below if they persist
        lost: list[tuple[str, int]] = []
        requeued: list[tuple[str, int]] = []
        adopted: list[tuple[str, int]] = []
        conflicts: list[str] = []
        for stream in self._streams:
            head = await self._registry.latest(stream)
            gone = await store.anchors(("final",), stream=stream, above=head.size)
            if gone:
                newest = max(gone, key=lambda a: a.size)
                await self._requeue_lost(store, head, gone, newest)
                lost.extend((stream, a.size) for a in gone)
                requeued.append((stream, newest.size))
                continue
            if head.size == 0:
                continue
            try:
                await self._check_head(stream, head)
                newer = head.size > await store.top_size(stream, ("mined", "final"))
                if newer and await self._adopt(store, stream, head):
                    adopted.append((stream, head.size))
            except RegistryConflictError as exc:
                conflicts.append(str(exc))
        await self._resync_nonces(store)
        self._reconciled = True
        if lost or adopted:
            log.warning(
                "chain: reconciled anchors with %s: re-queued %s, adopted %s",
                self._backend.node,
                requeued,
                adopted,
            )
        return ReconcileReport(tuple(lost), tuple(requeued), tuple(adopted), tuple(conflicts))

    # -- background loop --------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except DsgwError:
                pass  # counted and logged by run_once; back off below
            except Exception as exc:  # the one anchoring task must outlive any failed pass
                log.exception("anchoring: unexpected failure; retrying")
                self._failed(exc, transient=False)
            delay = self._policy.poll_interval
            if self._failures:
                delay = min(delay * 2 ** min(self._failures, 16), self._policy.max_backoff)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    def _failed(self, exc: BaseException, *, transient: bool) -> None:
        self._failures += 1
        self._last_error = str(exc)
        if transient:
            self._reachable = False
        # Loud once, then quiet: an outage of hours must not flood the log.
        level = logging.WARNING if self._failures == 1 or not transient else logging.DEBUG
        log.log(level, "anchoring paused (attempt %d): %s", self._failures, exc)

    # -- chain helpers ----------------------------------------------------------------

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

    # -- following pending and mined anchors ------------------------------------------

    async def _follow(self, store: AnchorStore, counts: Counter[str]) -> None:
        anchors = await store.anchors(("pending", "mined"))
        if not anchors:
            return
        txs = await store.transactions(a.id for a in anchors)
        # Read before the receipts: a nonce consumed after this read shows up as a receipt.
        confirmed = await self._nonces.confirmed_count()
        held = {t.nonce for ts in txs.values() for t in ts if t.status in _LIVE}

        def nonce_order(anchor: AnchorRecord) -> int:
            current = [t.nonce for t in txs[anchor.id] if t.status in (*_LIVE, "mined")]
            return min(current, default=0)

        # Lower nonces first: a node accepts (and mines) an account's transactions in order.
        for anchor in sorted(anchors, key=nonce_order):
            if anchor.status == "pending":
                await self._follow_pending(store, anchor, txs[anchor.id], confirmed, held, counts)
        mined = await store.anchors(("mined",))
        if mined:
            latest, finalized = await self._head()
            txs = await store.transactions(a.id for a in mined)
            for anchor in sorted(mined, key=nonce_order):
                await self._follow_mined(store, anchor, txs[anchor.id], latest, finalized, counts)

    async def _follow_pending(
        self,
        store: AnchorStore,
        anchor: AnchorRecord,
        txs: list[AnchorTransaction],
        confirmed: int,
        held: set[int],
        counts: Counter[str],
    ) -> None:
        live = [t for t in txs if t.status in _LIVE]
        for tx in live:
            receipt = await self._receipt(tx.tx_hash)
            if receipt is not None:
                await self._mined(store, anchor, tx, receipt, counts)
                return
        newest = live[-1] if live else None
        if newest is None:
            reason = "no transaction of this anchor can be mined any more; anchoring again"
        elif newest.nonce < confirmed:
            reason = (
                f"nonce {newest.nonce} was consumed by a transaction this gateway did not "
                "record; anchoring again"
            )
        elif any(n not in held for n in range(confirmed, newest.nonce)):
            reason = (
                f"nonce {newest.nonce} can never be mined: the chain is at nonce {confirmed} "
                "and no stored transaction fills the gap (a reset chain?); anchoring again"
            )
        else:
            reason = ""
        if reason:
            log.warning("chain: anchor %s@%d: %s", anchor.stream, anchor.size, reason)
            async with store.engine.begin() as conn:
                await store.set_transactions(conn, anchor.id, "dropped", among=_LIVE)
                await store.requeue(conn, anchor, "queued", reason)
            await self._resync_nonces(store)
            counts["requeued"] += 1
            return
        assert newest is not None
        if newest.status == "signed" or not await self._known(newest.tx_hash):
            log.info(
                "chain: sending transaction %s of anchor %s@%d (again)",
                newest.tx_hash.hex(),
                anchor.stream,
                anchor.size,
            )
            if await self._broadcast(store, newest, anchor):
                counts["rebroadcast"] += 1
                return
        # Unmined for too long, or refused by the node since then (e.g. its fee fell below
        # the base fee while it waited in the store): the same nonce with higher fees.
        waiting_since = newest.sent_at or newest.created_at
        if self._clock.now() - waiting_since >= self._policy.replace_after and await self._replace(
            store, anchor, newest
        ):
            counts["replaced"] += 1

    async def _mined(
        self,
        store: AnchorStore,
        anchor: AnchorRecord,
        tx: AnchorTransaction,
        receipt: TxReceipt,
        counts: Counter[str],
    ) -> None:
        block_number = int(receipt["blockNumber"])
        block_hash = bytes(receipt["blockHash"])
        if receipt["status"] != 1:
            reason = f"transaction {tx.tx_hash.hex()} reverted in block {block_number}"
            log.warning(
                "chain: anchor %s@%d: %s; anchoring again", anchor.stream, anchor.size, reason
            )
            async with store.engine.begin() as conn:
                await store.set_transactions(conn, anchor.id, "dropped", among=_LIVE)
                await store.set_transaction(conn, tx.id, "reverted")
                await store.requeue(conn, anchor, "queued", reason)
            counts["requeued"] += 1
            return
        if not any(
            e.size == anchor.size and e.root == anchor.root
            for e in self._registry.events_in_receipt(receipt)
        ):
            raise ChainError(
                f"chain: transaction {tx.tx_hash.hex()} of anchor {anchor.stream}@{anchor.size} "
                "succeeded without an Anchored event of that size and root; is the registry "
                "address right?"
            )
        async with store.engine.begin() as conn:
            # Every other transaction of the anchor shares the mined one's nonce: dead now.
            await store.set_transactions(conn, anchor.id, "dropped", among=_LIVE)
            await store.set_transaction(conn, tx.id, "mined")
            await store.set_status(
                conn,
                anchor.id,
                "mined",
                block_number=block_number,
                block_hash=block_hash,
                tx_hash=tx.tx_hash,
                confirmations=0,
                last_error=None,
            )
        log.info(
            "chain: anchor %s@%d mined in block %d (tx %s)",
            anchor.stream,
            anchor.size,
            block_number,
            tx.tx_hash.hex(),
        )
        counts["mined"] += 1

    async def _follow_mined(
        self,
        store: AnchorStore,
        anchor: AnchorRecord,
        txs: list[AnchorTransaction],
        latest: int,
        finalized: int | None,
        counts: Counter[str],
    ) -> None:
        assert anchor.tx_hash is not None
        receipt = await self._receipt(anchor.tx_hash)
        mined_tx = next((t for t in txs if t.tx_hash == anchor.tx_hash), None)
        if receipt is None:
            await self._reorged(store, anchor, mined_tx, counts)
            return
        if receipt["status"] != 1 and mined_tx is not None:
            await self._mined(store, anchor, mined_tx, receipt, counts)
            return
        block_number = int(receipt["blockNumber"])
        block_hash = bytes(receipt["blockHash"])
        confirmations = max(0, latest - block_number + 1)
        if self._use_finalized_tag and finalized is not None:
            final = block_number <= finalized
        else:
            final = confirmations >= self._policy.confirmations
        if block_hash != anchor.block_hash:
            log.warning(
                "chain: anchor %s@%d moved to block %d (%s) in a reorg",
                anchor.stream,
                anchor.size,
                block_number,
                block_hash.hex(),
            )
        values: dict[str, Any] = {
            "confirmations": confirmations,
            "block_number": block_number,
            "block_hash": block_hash,
        }
        if final:
            values["final_at"] = self._clock.now()
        async with store.engine.begin() as conn:
            await store.set_status(conn, anchor.id, "final" if final else "mined", **values)
        if final:
            log.info(
                "chain: anchor %s@%d is final (block %d, %d confirmations)",
                anchor.stream,
                anchor.size,
                block_number,
                confirmations,
            )
            counts["final"] += 1

    async def _reorged(
        self,
        store: AnchorStore,
        anchor: AnchorRecord,
        mined_tx: AnchorTransaction | None,
        counts: Counter[str],
    ) -> None:
        """The mined anchor's receipt is gone: back to pending, and its transaction (the
        same bytes, the same nonce) goes to the node again."""
        log.warning(
            "chain: anchor %s@%d was in block %s (%s) but the chain dropped it (a reorg); "
            "sending its transaction %s again",
            anchor.stream,
            anchor.size,
            anchor.block_number,
            anchor.block_hash.hex() if anchor.block_hash else "?",
            anchor.tx_hash.hex() if anchor.tx_hash else "?",
        )
        async with store.engine.begin() as conn:
            if mined_tx is not None:
                await store.set_transaction(conn, mined_tx.id, "sent", sent_at=self._clock.now())
                # Lower-fee predecessors share the nonce: the new fork may mine one of them.
                await store.set_transactions(
                    conn, anchor.id, "replaced", among=("dropped",), nonce=mined_tx.nonce
                )
            await store.requeue(conn, anchor, "pending", "dropped by a reorg; sent again")
        counts["reorged"] += 1
        if mined_tx is not None and await self._broadcast(store, mined_tx, anchor):
            counts["rebroadcast"] += 1

    async def _replace(
        self, store: AnchorStore, anchor: AnchorRecord, old: AnchorTransaction
    ) -> bool:
        """Replace a stuck transaction: same nonce and input, higher fees."""
        max_fee, priority = await self._fees()
        bump = self._policy.fee_bump
        new_priority = max(_bump(old.priority_fee, bump), priority)
        new_max = max(_bump(old.max_fee, bump), max_fee, new_priority)
        cap = self._policy.max_fee_per_gas
        if cap is not None and new_max > cap:
            log.warning(
                "chain: anchor %s@%d is stuck at nonce %d, and a replacement would cost %d wei "
                "per gas, above the cap of %d; raise max_fee_per_gas",
                anchor.stream,
                anchor.size,
                old.nonce,
                new_max,
                cap,
            )
            return False
        fields = dict(TypedTransaction.from_bytes(HexBytes(old.raw)).as_dict())
        for signature_part in ("v", "r", "s"):
            fields.pop(signature_part, None)
        fields.update(maxFeePerGas=new_max, maxPriorityFeePerGas=new_priority)
        raw, tx_hash = self._sign(fields)
        async with store.engine.begin() as conn:
            await store.set_transaction(conn, old.id, "replaced")
            new = await store.store_transaction(
                conn,
                anchor,
                nonce=old.nonce,
                tx_hash=tx_hash,
                raw=raw,
                gas=int(fields["gas"]),
                max_fee=new_max,
                priority_fee=new_priority,
            )
        log.warning(
            "chain: anchor %s@%d unmined for %s; replacing %s by %s (nonce %d, max fee %d -> "
            "%d, tip %d -> %d wei)",
            anchor.stream,
            anchor.size,
            self._policy.replace_after,
            old.tx_hash.hex(),
            tx_hash.hex(),
            old.nonce,
            old.max_fee,
            new_max,
            old.priority_fee,
            new_priority,
        )
        await self._broadcast(store, new, anchor)
        return True

    # -- queueing ---------------------------------------------------------------------

    async def _latest_checkpoints(self) -> dict[str, tuple[int, bytes, str]]:
        """stream -> (size, root, algorithm) of its newest checkpoint."""
        newest = (
            select(CheckpointRow.stream, func.max(CheckpointRow.size).label("size"))
            .where(CheckpointRow.stream.in_(self._streams))
            .group_by(CheckpointRow.stream)
            .subquery()
        )
        query = select(
            CheckpointRow.stream, CheckpointRow.size, CheckpointRow.root, CheckpointRow.algorithm
        ).join(
            newest,
            and_(CheckpointRow.stream == newest.c.stream, CheckpointRow.size == newest.c.size),
        )
        async with self._engine.connect() as conn:
            rows = await conn.execute(query)
            return {str(s): (int(n), bytes(r), str(a)) for s, n, r, a in rows}

    async def _enqueue(self, store: AnchorStore, counts: Counter[str]) -> None:
        for stream, (size, root, algorithm) in (await self._latest_checkpoints()).items():
            try:
                check_anchorable(algorithm, self._algorithm, stream)
            except UnanchorableError as exc:
                if self._refused.get(stream) != str(exc):
                    log.error("%s", exc)
                self._refused[stream] = str(exc)
                counts["refused"] += 1
                continue
            self._refused.pop(stream, None)
            if await store.anchors(("pending",), stream=stream):
                continue  # one in flight at a time; the next pass queues the newest
            queued = await store.anchors(("queued",), stream=stream)
            target = max((a.size for a in queued), default=None)
            newer = size > await store.top_size(stream, ("queued", "mined", "final"))
            existing = await store.anchor_at(stream, size) if newer else None
            async with store.engine.begin() as conn:
                if newer:
                    if existing is None:
                        await store.insert_queued(conn, stream, size, root)
                    else:  # superseded earlier, the newest again after a chain reset
                        await store.requeue(conn, existing, "queued", "the newest checkpoint")
                    target = size
                    counts["queued"] += 1
                for anchor in queued:
                    if anchor.size != target:
                        await store.set_status(conn, anchor.id, "superseded")
                        counts["superseded"] += 1

    # -- submitting -------------------------------------------------------------------

    async def _our_root(self, stream: str, size: int) -> bytes | None:
        try:
            return await MerkleTree(self._engine, stream, algorithm=self._algorithm).root(size)
        except NotFoundError:
            return None

    async def _check_head(self, stream: str, head: RegistryHead) -> None:
        """Raise :class:`RegistryConflictError` (and block the stream) unless the registry's
        head of ``stream`` is this log's root at that size, anchored the way this log's hash
        is anchored (with or without consistency proofs)."""
        ours = await self._our_root(stream, head.size)
        if ours == head.root and head.proof_checked == self._proofs:
            return
        if ours != head.root:
            why = (
                "this log has no tree of that size"
                if ours is None
                else f"this log's root there is {ours.hex()}"
            )
        else:
            way = "with" if head.proof_checked else "without"
            why = (
                f"the registry anchors that stream {way} consistency proofs and this log "
                f"hashes with {self._algorithm.upper()}"
            )
        message = (
            f"chain: registry {self._registry.address} holds stream {stream!r} at size "
            f"{head.size} with root {head.root.hex()}, but {why}; another writer anchors "
            "under this stream id, or the log was rewritten or restored from an older "
            "backup; anchoring of this stream stops until an operator investigates"
        )
        if self._conflicts.get(stream) != message:
            log.error("%s", message)
        self._conflicts[stream] = message
        raise RegistryConflictError(message)

    async def _adopt(self, store: AnchorStore, stream: str, head: RegistryHead) -> bool:
        """Record the registry's head of ``stream`` as our anchor: the chain has it, so it
        must not be sent again. Call after :meth:`_check_head`."""
        events = [
            e
            for e in await self._registry.anchored_events(
                stream, from_block=head.block_number, to_block=head.block_number
            )
            if e.size == head.size and e.root == head.root
        ]
        if not events:
            return False
        event = events[-1]
        async with store.engine.begin() as conn:
            await store.record_found(
                conn,
                stream,
                head.size,
                head.root,
                block_number=event.block_number,
                block_hash=event.block_hash,
                tx_hash=event.tx_hash,
            )
        log.warning(
            "chain: adopted anchor %s@%d found on chain (block %d, tx %s) but not recorded here",
            stream,
            head.size,
            event.block_number,
            event.tx_hash.hex(),
        )
        return True

    async def _requeue_lost(
        self,
        store: AnchorStore,
        head: RegistryHead,
        gone: list[AnchorRecord],
        newest: AnchorRecord,
    ) -> None:
        log.error(
            "chain: %s lost anchors: registry %s on chain %d has stream %r at size %d, but "
            "this gateway recorded final anchors up to size %d (block %s, tx %s); a reset dev "
            "chain or a reorg beyond finality; re-anchoring size %d",
            self._backend.node,
            self._registry.address,
            store.chain_id,
            newest.stream,
            head.size,
            newest.size,
            newest.block_number,
            newest.tx_hash.hex() if newest.tx_hash else "?",
            newest.size,
        )
        reason = f"lost by the chain (registry head at size {head.size})"
        async with store.engine.begin() as conn:
            for anchor in gone:
                await store.set_transactions(conn, anchor.id, "lost")
                status = "queued" if anchor.id == newest.id else "superseded"
                await store.requeue(conn, anchor, status, reason)

    async def _submit(self, store: AnchorStore, counts: Counter[str]) -> None:
        for anchor in await store.anchors(("queued",)):
            conflict = self._conflicts.get(anchor.stream)
            if conflict is not None:
                if anchor.last_error != conflict:
                    await store.note_error(anchor.id, conflict)
                continue
            try:
                if await self._submit_one(store, anchor, counts):
                    counts["submitted"] += 1
            except (AnchorRejectedError, RegistryConflictError) as exc:
                await store.note_error(anchor.id, str(exc))

    async def _submit_one(
        self, store: AnchorStore, anchor: AnchorRecord, counts: Counter[str]
    ) -> bool:
        head = await self._registry.latest(anchor.stream)
        if head.size >= anchor.size:
            # The chain has this size or more already: never send it (again).
            await self._check_head(anchor.stream, head)
            if await self._adopt(store, anchor.stream, head):
                counts["adopted"] += 1
            if head.size > anchor.size:
                async with store.engine.begin() as conn:
                    await store.set_status(conn, anchor.id, "superseded")
                counts["superseded"] += 1
            return False
        proof: list[bytes] | None = [] if self._proofs else None
        if head.size > 0:
            await self._check_head(anchor.stream, head)
            if proof is not None:
                tree = MerkleTree(self._engine, anchor.stream, algorithm=self._algorithm)
                proof = list((await tree.consistency_proof(head.size, anchor.size)).path)
        data = self._registry.anchor_calldata(anchor.stream, anchor.size, anchor.root, proof)
        call: TxParams = {
            "from": self.account,
            "to": self._registry.address,
            "data": HexStr("0x" + data.hex()),
        }
        refusals: tuple[type[Exception], ...] = (Web3RPCError, *revert_errors())
        try:
            with self._rpc("estimating an anchor's gas"):
                estimate = int(await self._backend.w3.eth.estimate_gas(call))
        except refusals as exc:
            reason = revert_reason(exc, self._registry.artifact)
            hint = (
                f"; the registry's owner must authorize {self.account}"
                if "NotAuthorized" in reason
                else ""
            )
            raise AnchorRejectedError(
                f"chain: the registry refuses anchor {anchor.stream}@{anchor.size} "
                f"(from size {head.size}): {reason}{hint}"
            ) from exc
        gas = math.ceil(estimate * self._policy.gas_headroom)
        max_fee, priority = await self._fees()
        async with self._nonces.reserve() as nonce:
            raw, tx_hash = self._sign(
                {
                    "type": 2,
                    "chainId": store.chain_id,
                    "nonce": nonce,
                    "to": self._registry.address,
                    "value": 0,
                    "data": data,
                    "gas": gas,
                    "maxFeePerGas": max_fee,
                    "maxPriorityFeePerGas": priority,
                }
            )
            # Stored, and the anchor moved to pending, before any node sees the transaction.
            async with store.engine.begin() as conn:
                await store.claim(conn, anchor)
                tx = await store.store_transaction(
                    conn,
                    anchor,
                    nonce=nonce,
                    tx_hash=tx_hash,
                    raw=raw,
                    gas=gas,
                    max_fee=max_fee,
                    priority_fee=priority,
                )
        log.info(
            "chain: anchoring %s@%d (from size %d, %s) in tx %s, nonce %d",
            anchor.stream,
            anchor.size,
            head.size,
            "no proof" if proof is None else f"proof of {len(proof)} hashes",
            tx_hash.hex(),
            nonce,
        )
        await self._broadcast(store, tx, anchor)
        return True
