"""The final anchor of a record for a process that runs no anchoring worker (``dsgw bundle``).

The store says which anchors are final; the worker is what moves an anchor from ``mined`` to
``final`` as blocks pass. When no worker runs (the gateway is stopped, or this is a CLI
process) an anchor may have become final on chain after the store last heard of it. This
module then asks the chain itself, through a node that is already there (the configured
JSON-RPC node, or the anvil node that serves the data directory, whoever runs it): it never
starts a node and never writes to the store.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from hexbytes import HexBytes
from sqlalchemy.ext.asyncio import AsyncEngine
from web3.exceptions import TransactionNotFound

from gateway.chain.backends import AnvilBackend, RpcBackend
from gateway.chain.contract import AnchorRegistry, stream_id
from gateway.chain.errors import ChainError, rpc_errors
from gateway.chain.records import AnchorRecord, recorded_covering_anchor
from gateway.errors import DsgwError

__all__ = ["final_anchor"]

log = logging.getLogger(__name__)


async def final_anchor(
    engine: AsyncEngine,
    stream: str,
    size: int,
    *,
    chain: str,
    state_dir: Path,
    rpc_url: str = "",
    contract: str = "",
    confirmations: int = 1,
) -> AnchorRecord | None:
    """The smallest anchor covering a tree of ``size`` leaves of ``stream`` that is final:
    recorded final in the store, or recorded ``mined`` and, on the chain now, in a
    successful transaction holding exactly its ``Anchored`` event, with at least
    ``confirmations`` blocks. None when there is none, or the chain cannot be asked (the
    bundle then carries no anchor, as before it was final)."""
    found = await recorded_covering_anchor(engine, stream, size, contract=contract)
    if found is not None:
        return found
    mined = await recorded_covering_anchor(
        engine, stream, size, contract=contract, statuses=("mined",)
    )
    if mined is None or mined.tx_hash is None or mined.block_number is None:
        return None
    url = rpc_url if chain == "rpc" else ""
    if chain == "anvil":
        url = AnvilBackend(state_dir).running_url() or ""
    if not url:
        return None
    try:
        return await _confirmed(url, mined, mined.tx_hash, mined.block_number, confirmations)
    except (ChainError, DsgwError) as exc:
        log.warning("chain: could not confirm anchor %s@%d on %s: %s", stream, mined.size, url, exc)
        return None


async def _confirmed(
    url: str, mined: AnchorRecord, tx_hash: bytes, block: int, confirmations: int
) -> AnchorRecord | None:
    backend = RpcBackend(url)
    await backend.start()
    try:
        with rpc_errors("confirming an anchor", backend.node):
            if int(await backend.w3.eth.chain_id) != mined.chain_id:
                return None
            try:
                receipt = await backend.w3.eth.get_transaction_receipt(HexBytes(tx_hash))
            except TransactionNotFound:
                return None
            head = int(await backend.w3.eth.block_number)
        if receipt["status"] != 1 or receipt["blockNumber"] != block:
            return None
        wanted = stream_id(mined.stream)
        registry = AnchorRegistry(backend, mined.contract)
        if not any(
            e.stream_id == wanted and e.size == mined.size and e.root == mined.root
            for e in registry.events_in_receipt(receipt)
        ):
            return None
        depth = head - block + 1
        if depth < confirmations:
            return None
        return dataclasses.replace(mined, status="final", confirmations=depth)
    finally:
        await backend.close()
