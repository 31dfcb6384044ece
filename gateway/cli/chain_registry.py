"""The AnchorRegistry's owner at work: ``dsgw chain deploy``, ``authorize`` (``--revoke``),
``transfer-ownership`` and ``accept-ownership``.

Each signs with a private key kept in a file only its owner can read, against any JSON-RPC
node; none needs the data directory. Joined to the ``chain`` group lazily
(:mod:`gateway.cli.chain`).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click
from web3.types import TxReceipt

from gateway.chain.backends import RpcBackend
from gateway.chain.contract import AnchorRegistry, RegistryArtifact
from gateway.chain.errors import ChainError
from gateway.chain.owner import (
    call_data,
    owner_call,
    pending_owner,
    read_owner_key,
    registry_at,
    transact,
)
from gateway.chain.qbft import parse_address
from gateway.cli.chain import note
from gateway.cli.common import console, emit, run
from gateway.errors import ForbiddenError

__all__ = ["accept_ownership", "authorize", "deploy", "transfer_ownership"]

T = TypeVar("T")


def _with_backend(
    rpc_url: str, action: Callable[[RpcBackend], Coroutine[Any, Any, T]]
) -> Coroutine[Any, Any, T]:
    async def go() -> T:
        backend = RpcBackend(rpc_url, request_timeout=30.0)
        async with backend:
            return await action(backend)

    return go()


def _tx_report(receipt: TxReceipt) -> dict[str, Any]:
    return {
        "tx_hash": receipt["transactionHash"].to_0x_hex(),
        "block_number": int(receipt["blockNumber"]),
    }


_rpc_url = click.option(
    "--rpc-url", required=True, help="JSON-RPC URL of a node of the chain (http or https)."
)
_owner_key_file = click.option(
    "--owner-key-file",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="File holding the owner's private key (hex); must be mode 0600.",
)
_timeout = click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=120.0,
    show_default=True,
    help="Seconds to wait for the transaction to be mined.",
)
_as_json = click.option("--json", "as_json", is_flag=True)


@click.command("deploy")
@_rpc_url
@_owner_key_file
@_timeout
@_as_json
def deploy(rpc_url: str, owner_key_file: Path, timeout: float, as_json: bool) -> None:
    """Deploy the AnchorRegistry, owned by the key in --owner-key-file; print its address."""
    owner = read_owner_key(owner_key_file)
    artifact = RegistryArtifact.from_file()

    async def act(backend: RpcBackend) -> dict[str, Any]:
        receipt = await transact(
            backend,
            owner,
            to=None,
            data=artifact.bytecode,
            what="deploying the AnchorRegistry",
            artifact=artifact,
            timeout=timeout,
        )
        address = receipt["contractAddress"]
        if address is None:
            raise ChainError("chain: deploying the AnchorRegistry produced no contract")
        registry = AnchorRegistry(backend, address, artifact)
        if not await registry.deployed() or await registry.owner() != owner.address:
            raise ChainError(
                f"chain: the contract at {address} is not an AnchorRegistry owned by "
                f"{owner.address}"
            )
        return {
            "contract": registry.address,
            "owner": owner.address,
            "chain_id": await registry.chain_id(),
            **_tx_report(receipt),
        }

    report = run(_with_backend(rpc_url, act))
    if as_json:
        emit(report, True)
        return
    click.echo(report["contract"])
    note(
        f"AnchorRegistry deployed on chain {report['chain_id']} in block "
        f"{report['block_number']} (tx {report['tx_hash']}), owned by {report['owner']}. "
        "Set DSGW_CHAIN_CONTRACT to its address and authorize the gateway's anchoring "
        "account (`dsgw chain authorize`)."
    )


@click.command("authorize")
@_rpc_url
@click.option("--contract", required=True, help="The AnchorRegistry's address.")
@_owner_key_file
@click.option(
    "--account",
    "anchoring_account",
    required=True,
    help="The anchoring account (`dsgw chain account` prints the gateway's).",
)
@click.option("--revoke", is_flag=True, help="Withdraw the account's permission instead.")
@_timeout
@_as_json
def authorize(
    rpc_url: str,
    contract: str,
    owner_key_file: Path,
    anchoring_account: str,
    revoke: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """Let an account anchor on the registry (or, with --revoke, stop it), as its owner."""
    owner = read_owner_key(owner_key_file)
    target = parse_address(anchoring_account, "anchoring account")
    verb = "revoke" if revoke else "authorize"

    async def act(backend: RpcBackend) -> dict[str, Any]:
        registry = await registry_at(backend, contract)
        wanted = not revoke
        report: dict[str, Any] = {
            "contract": registry.address,
            "account": target,
            "authorized": wanted,
            "changed": False,
        }
        if await registry.authorized(target) == wanted:
            return report
        receipt = await owner_call(
            backend,
            registry,
            owner,
            f"{verb}(address)",
            target,
            f"{verb} {target} on the registry",
            timeout,
        )
        if await registry.authorized(target) != wanted:
            raise ChainError(f"chain: {verb} {target} was mined but the registry disagrees")
        return {**report, "changed": True, **_tx_report(receipt)}

    report = run(_with_backend(rpc_url, act))
    if as_json:
        emit(report, True)
        return
    state = "may anchor" if report["authorized"] else "may not anchor"
    if report["changed"]:
        console.print(
            f"{report['account']} {state} on {report['contract']} "
            f"(tx {report['tx_hash']}, block {report['block_number']})"
        )
    else:
        console.print(f"{report['account']} already {state} on {report['contract']}; no change")


@click.command("transfer-ownership")
@_rpc_url
@click.option("--contract", required=True, help="The AnchorRegistry's address.")
@_owner_key_file
@click.option(
    "--new-owner",
    required=True,
    help="The account to offer ownership to; it takes over with `accept-ownership`.",
)
@_timeout
@_as_json
def transfer_ownership(
    rpc_url: str,
    contract: str,
    owner_key_file: Path,
    new_owner: str,
    timeout: float,
    as_json: bool,
) -> None:
    """Offer the registry's ownership to another account (step 1 of 2)."""
    owner = read_owner_key(owner_key_file)
    offered = parse_address(new_owner, "new owner")

    async def act(backend: RpcBackend) -> dict[str, Any]:
        registry = await registry_at(backend, contract)
        receipt = await owner_call(
            backend,
            registry,
            owner,
            "transferOwnership(address)",
            offered,
            f"offer the registry's ownership to {offered}",
            timeout,
        )
        return {
            "contract": registry.address,
            "owner": owner.address,
            "pending_owner": await pending_owner(registry),
            **_tx_report(receipt),
        }

    report = run(_with_backend(rpc_url, act))
    if as_json:
        emit(report, True)
        return
    console.print(
        f"ownership of {report['contract']} offered to {report['pending_owner']} "
        f"(tx {report['tx_hash']}); {report['owner']} stays owner until it runs "
        "`dsgw chain accept-ownership`"
    )


@click.command("accept-ownership")
@_rpc_url
@click.option("--contract", required=True, help="The AnchorRegistry's address.")
@click.option(
    "--owner-key-file",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="File holding the new owner's private key (hex); must be mode 0600.",
)
@_timeout
@_as_json
def accept_ownership(
    rpc_url: str, contract: str, owner_key_file: Path, timeout: float, as_json: bool
) -> None:
    """Take over the registry's ownership offered to this key (step 2 of 2)."""
    new_owner = read_owner_key(owner_key_file)

    async def act(backend: RpcBackend) -> dict[str, Any]:
        registry = await registry_at(backend, contract)
        pending = await pending_owner(registry)
        if pending != new_owner.address:
            raise ForbiddenError(
                f"chain: ownership of {registry.address} is offered to "
                f"{pending if int(pending, 16) else 'nobody'}, not to {new_owner.address}"
            )
        receipt = await transact(
            backend,
            new_owner,
            to=registry.address,
            data=call_data("acceptOwnership()"),
            what="accept the registry's ownership",
            artifact=registry.artifact,
            timeout=timeout,
        )
        owner = await registry.owner()
        if owner != new_owner.address:
            raise ChainError("chain: acceptOwnership was mined but the owner did not change")
        return {"contract": registry.address, "owner": owner, **_tx_report(receipt)}

    report = run(_with_backend(rpc_url, act))
    if as_json:
        emit(report, True)
        return
    console.print(f"{report['owner']} now owns {report['contract']} (tx {report['tx_hash']})")
