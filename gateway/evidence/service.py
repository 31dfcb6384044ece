"""What the log offers its readers: records, evidence bundles, checkpoints and proofs.

The HTTP handlers and the CLI read the ledger through this one service, so the rules of
reading it (who may see which record, which key a checkpoint is published with, where a
bundle's anchor comes from) are decided here and nowhere in the shells.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import ForbiddenError, NotFoundError
from gateway.evidence.keys import KeyRing, gateway_key_ring, published_checkpoint
from gateway.governance.actor import Actor
from gateway.governance.records import RecordView, check_bundle, read_records
from gateway.ledger.checkpoints import Checkpointer, latest_checkpoint
from gateway.ledger.entries import LogEntry, read_entries, read_entry
from gateway.ledger.tree import MerkleTree
from gateway.settings import Settings
from keys.keystore import Keystore

__all__ = ["EvidenceService", "LiveRegistry"]

#: The chain id and registry address this process anchors to right now, or None.
LiveRegistry = Callable[[], "tuple[int, str] | None"]


class EvidenceService:
    def __init__(
        self,
        engine: AsyncEngine,
        checkpointer: Checkpointer,
        keystore: Keystore,
        settings: Settings,
        *,
        live_registry: LiveRegistry = lambda: None,
    ) -> None:
        self._engine = engine
        self._checkpointer = checkpointer
        self._keystore = keystore
        self._settings = settings
        self._live_registry = live_registry

    def keys(self) -> KeyRing:
        """Every checkpoint key of the keystore, active and retired (never pruned), under
        this deployment's name: what verifies any checkpoint this deployment signed."""
        return gateway_key_ring(self._keystore, self._settings.deployment)

    async def bundle(self, stream: str, seq: int) -> dict[str, Any]:
        """The evidence bundle document of one record (:func:`gateway.evidence.build.
        record_bundle`), its anchor taken from this process's anchoring worker if it runs.
        No reader check: for the local administrator and for callers that made theirs."""
        from gateway.evidence.build import record_bundle  # loads the chain libraries

        bundle = await record_bundle(
            self._engine,
            self._checkpointer,
            stream,
            seq,
            settings=self._settings,
            keys=self.keys(),
            live_registry=self._live_registry(),
        )
        return bundle.to_json()

    async def bundle_for(self, actor: Actor, stream: str, seq: int) -> dict[str, Any]:
        """The bundle of ``stream``/``seq`` if ``actor`` may have it
        (:func:`gateway.governance.records.check_bundle`)."""
        await check_bundle(self._engine, actor, stream, seq)
        return await self.bundle(stream, seq)

    async def records(
        self, actor: Actor, stream: str, *, merchant_id: str | None = None, limit: int = 50
    ) -> list[RecordView]:
        """The newest records of ``stream`` as ``actor`` may see them."""
        return await read_records(self._engine, actor, stream, merchant_id=merchant_id, limit=limit)

    async def merchant_calls(self, merchant_id: str | None, *, limit: int = 50) -> list[LogEntry]:
        """A merchant's own newest call records (``merchant_id`` from its token; a token of
        no merchant is refused rather than read as "every merchant")."""
        merchant = _merchant(merchant_id)
        return await read_entries(self._engine, "calls", merchant_id=merchant, limit=limit)

    async def merchant_call(self, merchant_id: str | None, seq: int) -> LogEntry:
        """Call record ``seq`` if it is ``merchant_id``'s own. Another merchant's record is
        as invisible as a missing one: both raise :class:`NotFoundError`."""
        merchant_id = _merchant(merchant_id)
        entry = await read_entry(self._engine, "calls", seq)
        if entry is None or json.loads(entry.payload).get("merchant") != merchant_id:
            raise NotFoundError(f"no call record calls/{seq} of yours")
        return entry

    async def checkpoint(self, stream: str) -> dict[str, Any]:
        """The newest signed checkpoint of ``stream``, published with the key that signed
        it (after a rotation, possibly a retired one)."""
        return published_checkpoint(await latest_checkpoint(self._engine, stream), self.keys())

    async def inclusion(self, stream: str, index: int, size: int | None = None) -> dict[str, Any]:
        """Inclusion proof of record ``index`` in the tree of ``size`` (default: the newest
        checkpoint's size)."""
        if size is None:
            size = (await latest_checkpoint(self._engine, stream)).size
        proof = await self._tree(stream).inclusion_proof(index, size)
        return {"stream": stream, **proof.to_dict()}

    async def consistency(self, stream: str, first: int, second: int) -> dict[str, Any]:
        proof = await self._tree(stream).consistency_proof(first, second)
        return {"stream": stream, **proof.to_dict()}

    def _tree(self, stream: str) -> MerkleTree:
        return MerkleTree(self._engine, stream, algorithm=self._settings.hash_algorithm)


def _merchant(merchant_id: str | None) -> str:
    if not merchant_id:
        raise ForbiddenError("only a merchant's token reads its own call records")
    return merchant_id
