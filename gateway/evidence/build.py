"""Assembling the evidence bundle of one logged record from the store (and the chain).

Kept apart from the models (:mod:`gateway.evidence.bundle`) so that verifying a bundle
needs neither a database nor a chain client.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.chain.lookup import final_anchor
from gateway.chain.records import AnchorRecord, covering_anchor
from gateway.db.schema import CheckpointRow
from gateway.errors import NotFoundError
from gateway.evidence.anchor import Anchor, registry_stream_id
from gateway.evidence.bundle import EvidenceBundle
from gateway.evidence.checkpoint import Checkpoint
from gateway.evidence.keys import KeyRing
from gateway.ledger.checkpoints import Checkpointer, checkpoint_from_row
from gateway.ledger.hashing import HashAlgorithm
from gateway.ledger.log import read_entry
from gateway.ledger.tree import MerkleTree
from gateway.settings import Settings

__all__ = ["anchor_of", "build_bundle", "record_bundle"]


async def _covering_checkpoint(
    engine: AsyncEngine,
    stream: str,
    seq: int,
    checkpointer: Checkpointer,
    at_size: int | None = None,
) -> Checkpoint:
    """The checkpoint of ``at_size`` (an anchored one), else the newest that includes
    record ``seq``, signing one if none does yet."""
    for attempt in range(2):
        query = select(CheckpointRow.__table__).where(CheckpointRow.stream == stream)
        if at_size is not None:
            query = query.where(CheckpointRow.size == at_size)
        else:
            query = query.where(CheckpointRow.size > seq)
        async with engine.connect() as conn:
            row = (await conn.execute(query.order_by(CheckpointRow.size.desc()).limit(1))).first()
        if row is not None:
            return checkpoint_from_row(row)
        if attempt == 0:
            await checkpointer.checkpoint(stream)
    raise NotFoundError(f"no checkpoint covers {stream}/{seq} yet")


async def build_bundle(
    engine: AsyncEngine,
    checkpointer: Checkpointer,
    stream: str,
    seq: int,
    *,
    algorithm: HashAlgorithm,
    checkpoint_keys: KeyRing,
    at_size: int | None = None,
    anchor: Anchor | None = None,
) -> EvidenceBundle:
    """The evidence bundle of record ``stream/seq`` under the checkpoint of ``at_size``
    (default: the newest covering one, signed now if there is none). Its verifier key is
    the key of ``checkpoint_keys`` (active and retired) that signed that checkpoint.

    Raises :class:`NotFoundError` when the record does not exist, :class:`CheckpointError`
    when no key of the ring signed the checkpoint. May sign a checkpoint (a write).
    """
    entry = await read_entry(engine, stream, seq)
    if entry is None:
        raise NotFoundError(f"no record {stream}/{seq}")
    head = await _covering_checkpoint(engine, stream, seq, checkpointer, at_size)
    proof = await MerkleTree(engine, stream, algorithm=algorithm).inclusion_proof(seq, head.size)
    return EvidenceBundle(
        stream=stream,
        seq=seq,
        algorithm=algorithm,
        record=entry.payload.decode("utf-8"),
        salt=entry.salt,
        leaf_hash=entry.leaf_hash,
        inclusion_proof=proof,
        note=head.note,
        verifier_key=checkpoint_keys.signer_of(head.note).to_text(),
        anchor=anchor,
    )


def anchor_of(record: AnchorRecord) -> Anchor | None:
    """The bundle's anchor for a stored anchor record (None until it has a transaction)."""
    if record.tx_hash is None or record.block_number is None:
        return None
    return Anchor(
        chain_id=record.chain_id,
        contract=record.contract,
        stream_id=registry_stream_id(record.stream),
        size=record.size,
        root=record.root.hex(),
        tx_hash="0x" + record.tx_hash.hex(),
        block_number=record.block_number,
    )


async def record_bundle(
    engine: AsyncEngine,
    checkpointer: Checkpointer,
    stream: str,
    seq: int,
    *,
    settings: Settings,
    keys: KeyRing,
    live_registry: tuple[int, str] | None = None,
) -> EvidenceBundle:
    """The evidence bundle of one record, with the anchor of the smallest final anchored
    checkpoint that covers it: from the running anchoring worker's registry
    (``live_registry``: its chain id and address), or, in a process that does not anchor
    (``dsgw bundle``), from the store, or from the chain for an anchor that became final
    after the store last heard of it (:mod:`gateway.chain.lookup`).
    """
    if live_registry is not None:
        chain_id, contract = live_registry
        record = await covering_anchor(
            engine, stream, seq + 1, chain_id=chain_id, contract=contract
        )
    else:
        record = await final_anchor(
            engine,
            stream,
            seq + 1,
            chain=settings.chain.kind,
            state_dir=settings.data_dir / "chain",
            rpc_url=settings.chain.rpc_url,
            contract=settings.chain.contract,
            confirmations=settings.chain.confirmations,
        )
    return await build_bundle(
        engine,
        checkpointer,
        stream,
        seq,
        algorithm=settings.hash_algorithm,
        checkpoint_keys=keys,
        at_size=record.size if record is not None else None,
        anchor=anchor_of(record) if record is not None else None,
    )
