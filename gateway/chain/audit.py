"""What the chain says about a log, for ``dsgw audit --chain``.

The database audit (:mod:`gateway.ledger.audit`) rebuilds each stream's tree; this module
hands it every root a registry anchored, read from the registry's ``Anchored`` events, so
that each one is compared with the rebuilt tree at its size. For SHA-256 streams the
registry already refused any anchor inconsistent with the previous one; for SM3 streams,
which the registry anchors without proofs, this comparison is the consistency check.

It also reports what only the chain can reveal: anchors the database records as final
that the chain does not hold (a reset chain, or a forged record), and anchors made in the
wrong mode (a SHA-256 stream anchored without proofs is not witnessed by the chain).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.chain.backends import AnvilBackend, ChainBackend, RpcBackend
from gateway.chain.contract import AnchorRegistry
from gateway.chain.errors import ChainConfigError, rpc_errors
from gateway.chain.models import proof_checked_on_chain
from gateway.db.schema import AnchorRegistryRow, AnchorRow
from gateway.errors import DsgwError
from gateway.ledger.audit import AnchoredRoot, Finding
from gateway.ledger.hashing import HashAlgorithm

__all__ = ["ChainEvidence", "chain_evidence", "chain_reader", "registry_for_audit"]


@dataclass(frozen=True, slots=True)
class ChainEvidence:
    """One stream as the registry has it: the roots to compare with the rebuilt tree, and
    the findings that need no tree."""

    stream: str
    anchored: tuple[AnchoredRoot, ...]
    findings: tuple[Finding, ...]


@contextlib.asynccontextmanager
async def chain_reader(
    kind: str, *, state_dir: Path, rpc_url: str = ""
) -> AsyncIterator[ChainBackend]:
    """A started connection to the chain to read anchors from: ``rpc_url`` when given, else
    the configured chain. For ``anvil`` it attaches to the node a running gateway started
    (never a second node on the same state), or starts the node from its state file for the
    duration. Raises :class:`ChainConfigError` when there is no chain to read."""
    backend: ChainBackend
    if rpc_url:
        backend = RpcBackend(rpc_url)
    elif kind == "anvil":
        anvil = AnvilBackend(state_dir)
        url = anvil.running_url()
        if url is None and not anvil.state_file.exists():
            raise ChainConfigError(
                f"chain: no anvil state in {state_dir}: this gateway never anchored; "
                "pass --rpc URL to read another chain"
            )
        backend = RpcBackend(url) if url else anvil
    elif kind == "rpc":
        raise ChainConfigError("chain: no chain_rpc_url configured; pass --rpc URL")
    else:
        raise ChainConfigError(
            f"chain: the {kind!r} chain keeps no anchors to compare with; pass --rpc URL"
        )
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


async def registry_for_audit(
    engine: AsyncEngine, backend: ChainBackend, address: str = ""
) -> AnchorRegistry:
    """The registry at ``address``, or the one this database last recorded for the chain.
    Raises :class:`ChainConfigError` when there is none, or no contract at the address."""
    registry_address = address
    if not registry_address:
        with rpc_errors("reading the chain id", backend.node):
            chain_id = int(await backend.w3.eth.chain_id)
        try:
            async with engine.connect() as conn:
                registry_address = (
                    await conn.scalar(
                        select(AnchorRegistryRow.address)
                        .where(AnchorRegistryRow.chain_id == chain_id)
                        .order_by(AnchorRegistryRow.updated_at.desc())
                        .limit(1)
                    )
                    or ""
                )
        except SQLAlchemyError as exc:
            raise DsgwError(f"audit: reading the recorded registries failed: {exc}") from exc
        if not registry_address:
            raise ChainConfigError(
                f"chain: this database records no AnchorRegistry on chain {chain_id}; "
                "pass --contract ADDRESS"
            )
    registry = AnchorRegistry(backend, registry_address)
    if not await registry.deployed():
        raise ChainConfigError(
            f"chain: no AnchorRegistry at {registry.address} on {backend.node}: wrong "
            "address or wrong chain (a reset dev chain loses its registry)"
        )
    return registry


async def chain_evidence(
    engine: AsyncEngine, registry: AnchorRegistry, stream: str, *, algorithm: HashAlgorithm
) -> ChainEvidence:
    """Every root ``registry`` anchored for ``stream``, and the anchors this database
    records as final on it that the chain does not hold."""
    events = await registry.anchored_events(stream)
    checked = proof_checked_on_chain(algorithm)
    findings: list[Finding] = []
    anchored: list[AnchoredRoot] = []
    for event in events:
        where = f"block {event.block_number}, transaction 0x{event.tx_hash.hex()}"
        anchored.append(AnchoredRoot(event.size, event.root, where))
        if event.proof_checked != checked:
            findings.append(
                Finding(
                    stream,
                    event.size,
                    "anchor",
                    f"the registry anchored size {event.size} "
                    f"{'without' if checked else 'with'} a consistency proof ({where}), "
                    f"but this log hashes with {algorithm.upper()}",
                )
            )
    on_chain = {(root.size, root.root) for root in anchored}
    chain_id = await registry.chain_id()
    try:
        async with engine.connect() as conn:
            recorded = (
                await conn.execute(
                    select(AnchorRow.size, AnchorRow.root, AnchorRow.tx_hash)
                    .where(
                        AnchorRow.chain_id == chain_id,
                        AnchorRow.contract == registry.address,
                        AnchorRow.stream == stream,
                        AnchorRow.status == "final",
                    )
                    .order_by(AnchorRow.size)
                )
            ).all()
    except SQLAlchemyError as exc:
        raise DsgwError(f"audit: reading the recorded anchors failed: {exc}") from exc
    for size, root, tx_hash in recorded:
        if (int(size), bytes(root)) not in on_chain:
            tx = f"0x{bytes(tx_hash).hex()}" if tx_hash else "no transaction"
            findings.append(
                Finding(
                    stream,
                    int(size),
                    "anchor",
                    f"the database records a final anchor of size {size} ({tx}) that "
                    f"registry {registry.address} on chain {chain_id} does not hold: the "
                    "chain lost it (a reset chain; a running gateway re-anchors it) or the "
                    "record is forged",
                )
            )
    return ChainEvidence(stream, tuple(anchored), tuple(findings))
