"""Queueing checkpoints and submitting their anchors, after checking the registry's head.

Split from the worker so that the rules that keep a checkpoint from being anchored twice
(one anchor in flight per stream, never a size at or below the chain's, the signed
transaction stored before it is broadcast) read in one place.
"""

from __future__ import annotations

import logging
import math
from collections import Counter

from eth_typing import HexStr
from sqlalchemy import and_, func, select
from web3.exceptions import (
    Web3RPCError,
)
from web3.types import TxParams

from gateway.chain.contract import RegistryHead, revert_reason
from gateway.chain.errors import (
    AnchorRejectedError,
    RegistryConflictError,
    UnanchorableError,
    revert_errors,
)
from gateway.chain.models import (
    check_anchorable,
)
from gateway.chain.records import AnchorRecord, AnchorStore
from gateway.chain.sending import AnchorSender
from gateway.db.schema import CheckpointRow
from gateway.errors import NotFoundError
from gateway.ledger.tree import MerkleTree

__all__ = ["AnchorSubmission"]

log = logging.getLogger(__name__)


class AnchorSubmission(AnchorSender):
    """Queues each stream's newest checkpoint and signs, stores and sends its anchor."""

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
            if self._enqueued.get(stream) == size:
                # Handled by an earlier pass, and no move since (a re-send, a fee bump, a
                # re-queue after a lost nonce) can make it due again; reconcile() forgets.
                continue
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
            self._enqueued[stream] = size

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
