"""Following anchors after broadcast: pending to mined to final, fee bumps and reorgs.

Split from the worker so that the confirmation rules (how long a transaction may stay
pending before its fee is bumped, how deep a receipt must be to be final, what a vanished
receipt means) read in one place. See :mod:`gateway.chain.worker` for the anchor life cycle.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from eth_account.typed_transactions.typed_transaction import TypedTransaction
from hexbytes import HexBytes
from web3.types import TxReceipt

from gateway.chain.anchors import LIVE_TRANSACTION
from gateway.chain.errors import (
    ChainError,
)
from gateway.chain.records import AnchorRecord, AnchorStore, AnchorTransaction
from gateway.chain.sending import AnchorSender, bump_fee

__all__ = ["AnchorConfirmation"]

log = logging.getLogger(__name__)


class AnchorConfirmation(AnchorSender):
    """Moves sent anchors along: receipt, depth, replacement, re-send after a reorg."""

    async def _follow(self, store: AnchorStore, counts: Counter[str]) -> None:
        anchors = await store.anchors(("pending", "mined"))
        if not anchors:
            return
        txs = await store.transactions(a.id for a in anchors)
        # Read before the receipts: a nonce consumed after this read shows up as a receipt.
        confirmed = await self._nonces.confirmed_count()
        held = {t.nonce for ts in txs.values() for t in ts if t.status in LIVE_TRANSACTION}

        def nonce_order(anchor: AnchorRecord) -> int:
            current = [t.nonce for t in txs[anchor.id] if t.status in (*LIVE_TRANSACTION, "mined")]
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
        live = [t for t in txs if t.status in LIVE_TRANSACTION]
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
                await store.set_transactions(conn, anchor.id, "dropped", among=LIVE_TRANSACTION)
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
                await store.set_transactions(conn, anchor.id, "dropped", among=LIVE_TRANSACTION)
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
            await store.set_transactions(conn, anchor.id, "dropped", among=LIVE_TRANSACTION)
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
        new_priority = max(bump_fee(old.priority_fee, bump), priority)
        new_max = max(bump_fee(old.max_fee, bump), max_fee, new_priority)
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
