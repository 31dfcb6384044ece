"""Checking an evidence bundle's anchor with nothing but a JSON-RPC endpoint.

The chain step of :func:`gateway.evidence.verify`: :func:`verify_on_chain` after it, for
a verifier that has a node to ask (``dsgw verify --rpc``, the demo).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hexbytes import HexBytes
from web3.exceptions import TransactionNotFound

from gateway.chain.backends import RpcBackend
from gateway.chain.contract import AnchorRegistry, stream_id
from gateway.chain.errors import ChainError, rpc_errors
from gateway.chain.models import proof_checked_on_chain
from gateway.errors import DsgwError, ValidationError
from gateway.evidence.anchor import Anchor
from gateway.evidence.bundle import EvidenceBundle
from gateway.evidence.checkpoint import Checkpoint
from gateway.evidence.verify import Verification

__all__ = ["verify_anchor", "verify_on_chain"]

_REGISTRY_FROM_BUNDLE = (
    "registry address taken from the bundle; compare it with the address the operator publishes"
)


async def verify_on_chain(bundle: EvidenceBundle, check: Verification, rpc_url: str) -> None:
    """Add to ``check`` (what :func:`gateway.evidence.verify` established for ``bundle``)
    the chain's confirmation of the bundle's anchor, with a warning that the registry
    address came from the bundle. Raises :class:`DsgwError` if the bundle has no anchor,
    :class:`ChainError` naming the failing step."""
    if bundle.anchor is None or check.checkpoint is None:
        raise DsgwError("the bundle has no anchor to check on chain (not anchored yet)")
    check.steps += await verify_anchor(bundle.anchor, check.checkpoint, rpc_url)
    check.warnings.append(_REGISTRY_FROM_BUNDLE)


async def verify_anchor(
    anchor: Anchor | Mapping[str, Any], checkpoint: Checkpoint, rpc_url: str
) -> list[str]:
    """Confirm on chain that the registry accepted exactly the checkpoint's (size, root)
    for its stream in the bundle's transaction, on the bundle's chain, in the bundle's
    block. Returns the steps established. (The anchor's size, root and stream id were
    compared with the checkpoint by :func:`gateway.evidence.verify`.) A bundle's anchor
    member as a mapping is parsed with :meth:`Anchor.from_json` first.

    Raises :class:`ChainError` naming the failing step. Which registry address to trust is
    the caller's knowledge (published by the operator), as with the checkpoint key.
    """
    if not isinstance(anchor, Anchor):
        try:
            anchor = Anchor.from_json(anchor)
        except ValidationError as exc:
            raise ChainError(f"anchor: {exc.detail}") from exc
    contract = anchor.contract
    tx_hash = HexBytes(anchor.tx_hash)
    backend = RpcBackend(rpc_url)
    await backend.start()
    try:
        with rpc_errors("reading the anchor transaction", backend.node):
            chain_id = await backend.w3.eth.chain_id
            try:
                receipt = await backend.w3.eth.get_transaction_receipt(tx_hash)
            except TransactionNotFound as exc:
                raise ChainError(
                    "anchor: the chain has no such transaction (wrong chain, or it was lost)"
                ) from exc
            head = await backend.w3.eth.block_number
        if anchor.chain_id != chain_id:
            raise ChainError(
                f"anchor: the bundle names chain {anchor.chain_id}, the node is {chain_id}"
            )
        if receipt["status"] != 1:
            raise ChainError("anchor: the anchoring transaction reverted")
        if anchor.block_number != receipt["blockNumber"]:
            raise ChainError(
                f"anchor: the bundle names block {anchor.block_number}, the transaction "
                f"is in block {receipt['blockNumber']}"
            )
        registry = AnchorRegistry(backend, contract)
        wanted = stream_id(checkpoint.stream)
        for event in registry.events_in_receipt(receipt):
            if event.stream_id == wanted and event.size == checkpoint.size:
                if event.root != checkpoint.root:
                    raise ChainError("anchor: the chain holds another root for this size")
                checked = proof_checked_on_chain(checkpoint.algorithm)
                if event.proof_checked != checked:
                    raise ChainError(
                        f"anchor: the registry anchored this {checkpoint.algorithm.upper()} "
                        f"stream {'without' if checked else 'with'} consistency proofs; a "
                        "SHA-256 stream anchored without proofs is not witnessed by the chain"
                    )
                depth = head - receipt["blockNumber"] + 1
                steps = [
                    f"registry {contract} on chain {chain_id} anchored {checkpoint.stream} "
                    f"size {checkpoint.size} with this root in block {receipt['blockNumber']} "
                    f"({depth} confirmation{'s' if depth != 1 else ''})"
                ]
                if not checked:
                    steps.append(
                        f"{checkpoint.algorithm.upper()} roots are anchored without on-chain "
                        "consistency checks: `dsgw audit --chain` checks them off chain"
                    )
                return steps
        raise ChainError("anchor: the transaction holds no Anchored event for this checkpoint")
    finally:
        await backend.close()
