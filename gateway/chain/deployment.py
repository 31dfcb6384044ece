"""Finding, and on dev chains deploying, the AnchorRegistry that anchors go to.

On a dev chain (``embedded``, ``anvil``) the gateway deploys the registry on first use from
the node's funded dev account, authorizes the anchoring account and funds it, and records
the registry in ``anchor_registries``. On later starts it checks that the recorded registry
is still on the chain; if the chain lost it (a reset or deleted anvil state, or the
ephemeral embedded chain) it deploys a new one and says so at ERROR level; the anchoring
worker's reconcile then re-anchors what the chain lost.

On a production chain (``rpc``) nothing is deployed: the operator deploys the contract,
authorizes the gateway's account, and configures the address.
"""

from __future__ import annotations

import logging
from typing import Final

from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address
from sqlalchemy import insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from web3.types import Wei

from gateway.chain.backends import ChainBackend
from gateway.chain.contract import AnchorRegistry, RegistryArtifact
from gateway.chain.errors import ChainConfigError, rpc_errors
from gateway.clock import Clock, SystemClock
from gateway.db.schema import AnchorRegistryRow
from gateway.errors import DsgwError

__all__ = ["DEV_FUNDING_WEI", "ensure_registry"]

log = logging.getLogger(__name__)

DEV_FUNDING_WEI: Final = 10**19
"""What a dev chain's anchoring account is topped up to (10 ether: thousands of anchors)."""


async def ensure_registry(
    engine: AsyncEngine,
    backend: ChainBackend,
    *,
    anchoring_account: str,
    address: str | None = None,
    artifact: RegistryArtifact | None = None,
    clock: Clock | None = None,
) -> AnchorRegistry:
    """The registry to anchor on, ready for ``anchoring_account``.

    With ``address``: that registry, which must be deployed and must have authorized the
    account (on a dev chain the account is authorized and funded if needed). Without it, on
    a dev chain: the registry recorded for this chain, or a newly deployed one. Records the
    registry in ``anchor_registries``.

    Raises :class:`ChainConfigError` when no usable registry can be had (production chain
    without an address, no contract at the address, account not authorized),
    :class:`ChainUnavailableError` when the node does not answer.
    """
    clock = clock or SystemClock()
    artifact = artifact or RegistryArtifact.from_file()
    account = to_checksum_address(anchoring_account)
    dev = await backend.dev_account()
    if address is None and dev is None:
        raise ChainConfigError(
            f"chain: {backend.node} is not a dev chain, so the gateway does not deploy the "
            "registry itself; deploy contracts/src/AnchorRegistry.sol, authorize the "
            f"anchoring account {account}, and configure the registry's address"
        )
    with rpc_errors("reading the chain id", backend.node):
        chain_id = int(await backend.w3.eth.chain_id)
    deployed_block: int | None = None
    deploy_tx: bytes | None = None

    if address is not None:
        registry = AnchorRegistry(backend, address, artifact)
        if not await registry.deployed():
            raise ChainConfigError(
                f"chain: no AnchorRegistry at {registry.address} on chain {chain_id} "
                f"({backend.node}); check the configured address, or deploy "
                "contracts/src/AnchorRegistry.sol there"
            )
    else:
        assert dev is not None
        recorded = await _recorded(engine, chain_id)
        found = None
        for row_address in recorded:
            candidate = AnchorRegistry(backend, row_address, artifact)
            if await candidate.deployed():
                found = candidate
                break
        if found is not None:
            registry = found
        else:
            registry, receipt = await AnchorRegistry.deploy(backend, dev, artifact)
            deployed_block = int(receipt["blockNumber"])
            deploy_tx = bytes(receipt["transactionHash"])
            if recorded:
                log.error(
                    "chain: the AnchorRegistry recorded for chain %d (%s) is gone from %s: "
                    "the chain was reset or its state lost; deployed a new registry at %s; "
                    "checkpoints anchored before will be anchored again",
                    chain_id,
                    ", ".join(recorded),
                    backend.node,
                    registry.address,
                )
            else:
                log.info(
                    "chain: deployed the AnchorRegistry at %s on %s", registry.address, backend.node
                )

    if not await registry.authorized(account):
        owner = await registry.owner()
        if dev is None or owner != dev:
            raise ChainConfigError(
                f"chain: the anchoring account {account} is not authorized on registry "
                f"{registry.address}; the registry's owner must call authorize({account})"
            )
        await registry.authorize(account, owner=dev)
        log.info("chain: authorized %s on registry %s", account, registry.address)
    if dev is not None:
        await _fund(backend, dev, account)
    await _record(
        engine, chain_id, registry.address, backend.kind, deployed_block, deploy_tx, clock
    )
    return registry


async def _fund(backend: ChainBackend, dev: ChecksumAddress, account: ChecksumAddress) -> None:
    with rpc_errors("reading the anchoring account's balance", backend.node):
        balance = int(await backend.w3.eth.get_balance(account))
    if balance >= DEV_FUNDING_WEI // 2:
        return
    await backend.send_unlocked(
        {"from": dev, "to": account, "value": Wei(DEV_FUNDING_WEI - balance)},
        f"fund the anchoring account {account}",
    )
    log.info("chain: funded the anchoring account %s on %s", account, backend.node)


async def _recorded(engine: AsyncEngine, chain_id: int) -> list[str]:
    try:
        async with engine.connect() as conn:
            rows = await conn.scalars(
                select(AnchorRegistryRow.address)
                .where(AnchorRegistryRow.chain_id == chain_id)
                .order_by(AnchorRegistryRow.updated_at.desc())
            )
            return [str(address) for address in rows]
    except SQLAlchemyError as exc:
        raise DsgwError(f"chain: reading the recorded registries failed: {exc}") from exc


async def _record(
    engine: AsyncEngine,
    chain_id: int,
    address: str,
    backend: str,
    deployed_block: int | None,
    deploy_tx: bytes | None,
    clock: Clock,
) -> None:
    now = clock.now()
    key = (AnchorRegistryRow.chain_id == chain_id, AnchorRegistryRow.address == address)
    try:
        async with engine.begin() as conn:
            exists = await conn.scalar(select(AnchorRegistryRow.address).where(*key))
            if exists is None:
                await conn.execute(
                    insert(AnchorRegistryRow).values(
                        chain_id=chain_id,
                        address=address,
                        backend=backend,
                        deployed_block=deployed_block,
                        deploy_tx_hash=deploy_tx,
                        created_at=now,
                        updated_at=now,
                    )
                )
            else:
                values: dict[str, object] = {"updated_at": now, "backend": backend}
                if deploy_tx is not None:
                    values.update(deployed_block=deployed_block, deploy_tx_hash=deploy_tx)
                await conn.execute(update(AnchorRegistryRow).where(*key).values(values))
    except SQLAlchemyError as exc:
        raise DsgwError(f"chain: recording registry {address} failed: {exc}") from exc
