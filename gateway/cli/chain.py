"""``dsgw chain``: the consortium chain from the operator's desk (``docs/deployment.md``).

* ``genesis``: a Besu QBFT genesis from the validators' addresses (:mod:`gateway.chain.qbft`);
* ``account``: the gateway's anchoring account, from the keystore (created if missing;
  ``--rotate`` makes a new one);
* ``deploy``, ``authorize`` (``--revoke``), ``transfer-ownership``, ``accept-ownership``: the
  AnchorRegistry's owner at work, signing with a private key kept in a file only its owner can
  read, against any JSON-RPC node.

Listed in :data:`gateway.cli.commands.COMMANDS` and imported when one of them runs.
This is the one command module that imports web3 at load time.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click
from eth_account import Account
from eth_account.signers.local import LocalAccount
from rich.markup import escape
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
from gateway.chain.qbft import (
    DEFAULT_BLOCK_PERIOD,
    DEFAULT_EPOCH_LENGTH,
    DEFAULT_GAS_LIMIT,
    QbftGenesis,
    parse_address,
)
from gateway.cli.common import console, emit, err_console, run, settings_of
from gateway.cli.exits import exit_code
from gateway.clock import SystemClock
from gateway.errors import DsgwError, ForbiddenError, KeystoreError, ValidationError
from gateway.passphrase import keystore_passphrase
from keys.keystore import KeyPurpose, Keystore

__all__ = ["chain"]

T = TypeVar("T")


def _checked(action: Callable[[], T]) -> T:
    """Run a synchronous step, reporting a :class:`DsgwError` as every verb does."""
    try:
        return action()
    except DsgwError as error:
        err_console.print(f"[bold red]error:[/] {escape(error.detail)}")
        sys.exit(exit_code(error))


def _note(message: str) -> None:
    """Progress and explanations go to stderr, so stdout carries only the result."""
    err_console.print(message)


@click.group()
def chain() -> None:
    """The consortium chain: QBFT genesis, anchoring account, AnchorRegistry owner's verbs
    (docs/deployment.md)."""


# -- genesis ----------------------------------------------------------------------------


def _allocation(text: str) -> tuple[str, int]:
    address, sep, amount = text.partition("=")
    if not sep or not amount.strip().isdigit():
        raise ValidationError(f"qbft: --alloc {text!r} must be ADDRESS=WEI (a whole number)")
    return address.strip(), int(amount.strip())


def _write_public_file(path: Path, data: bytes, *, force: bool) -> None:
    """Write ``data`` to ``path`` atomically (mode 0644: a genesis is public)."""
    if path.exists() and not force:
        raise ValidationError(
            f"qbft: {path} exists; a running network's genesis must never change. Pass "
            "--force to overwrite it (for a network that has not started yet)"
        )
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except OSError as exc:
        raise ValidationError(f"qbft: cannot write {path}: {exc.strerror}") from exc


@chain.command("genesis")
@click.option(
    "--validator",
    "validators",
    multiple=True,
    required=True,
    metavar="ADDRESS",
    help="A validator's address (`besu public-key export-address`); repeat for each, at least 4.",
)
@click.option("--chain-id", type=click.IntRange(min=1), required=True, help="The network's id.")
@click.option(
    "--block-period",
    type=click.IntRange(min=1),
    default=DEFAULT_BLOCK_PERIOD,
    show_default=True,
    help="Seconds between blocks (blockperiodseconds).",
)
@click.option(
    "--request-timeout",
    type=click.IntRange(min=1),
    default=None,
    help="Seconds before a round change (requesttimeoutseconds; default twice the block period).",
)
@click.option(
    "--epoch-length",
    type=click.IntRange(min=1),
    default=DEFAULT_EPOCH_LENGTH,
    show_default=True,
    help="Blocks after which pending validator votes are reset.",
)
@click.option(
    "--gas-limit",
    type=click.IntRange(min=5000),
    default=DEFAULT_GAS_LIMIT,
    show_default=True,
    help="Gas per block.",
)
@click.option(
    "--free-gas/--priced-gas",
    default=True,
    show_default=True,
    help="Free gas sets zeroBaseFee (validators run --min-gas-price=0); priced gas needs "
    "funded accounts (--alloc).",
)
@click.option(
    "--alloc",
    "allocations",
    multiple=True,
    metavar="ADDRESS=WEI",
    help="Give an account a starting balance (repeatable).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="Where to write the genesis file ('-' for standard output).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def genesis(
    validators: tuple[str, ...],
    chain_id: int,
    block_period: int,
    request_timeout: int | None,
    epoch_length: int,
    gas_limit: int,
    free_gas: bool,
    allocations: tuple[str, ...],
    out: Path,
    force: bool,
    as_json: bool,
) -> None:
    """Write a Besu QBFT genesis for the given validators.

    The same addresses and options give the same file, byte for byte, on every machine:
    each party builds it and compares the printed SHA-256 before starting its node.
    """

    def build() -> QbftGenesis:
        alloc: dict[str, int] = {}
        for text in allocations:
            address, wei = _allocation(text)
            if address in alloc:
                raise ValidationError(f"qbft: account {address} is allocated twice")
            alloc[address] = wei
        document = QbftGenesis.create(
            validators=validators,
            chain_id=chain_id,
            block_period_seconds=block_period,
            request_timeout_seconds=request_timeout,
            epoch_length=epoch_length,
            gas_limit=gas_limit,
            zero_base_fee=free_gas,
            alloc=alloc,
        )
        if str(out) == "-":
            click.echo(document.to_json().decode("utf-8"), nl=False)
        else:
            _write_public_file(out, document.to_json(), force=force)
        return document

    document = _checked(build)
    summary = {
        "out": str(out),
        "chain_id": document.chain_id,
        "validators": list(document.validators),
        "tolerated_faults": document.tolerated_faults,
        "block_period_seconds": document.block_period_seconds,
        "request_timeout_seconds": document.request_timeout_seconds,
        "zero_base_fee": document.zero_base_fee,
        "sha256": document.sha256,
    }
    if as_json and str(out) != "-":
        emit(summary, True)
        return
    _note(
        f"QBFT genesis for chain {document.chain_id}: {len(document.validators)} validators "
        f"(tolerates {document.tolerated_faults} faulty), a block every "
        f"{document.block_period_seconds} s, "
        + ("free gas (run validators with --min-gas-price=0)" if free_gas else "priced gas")
    )
    for address in document.validators:
        _note(f"  validator {address}")
    _note(f"sha256 {document.sha256}  (every party's file must have the same)")
    if str(out) != "-":
        _note(f"wrote {out}")


# -- the anchoring account --------------------------------------------------------------


@chain.command("account")
@click.option(
    "--rotate",
    is_flag=True,
    help="Make a new anchoring account; the old one is kept (retired). Authorize the new "
    "one before restarting the gateways, revoke the old one after (docs/deployment.md).",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def account(ctx: click.Context, rotate: bool, as_json: bool) -> None:
    """Print the address of the gateway's anchoring account (created if missing).

    Only the address goes to standard output: `ADDRESS=$(dsgw chain account)`.
    """
    settings = settings_of(ctx)

    def act() -> dict[str, Any]:
        if not settings.keystore_path.exists():
            raise KeystoreError(
                f"keystore: {settings.keystore_path} does not exist; run `dsgw init` first"
            )
        store = Keystore.open(settings.keystore_path, keystore_passphrase(settings))
        now = SystemClock().now()
        previous: str | None = None
        try:
            current = store.active(KeyPurpose.CHAIN_ACCOUNT)
            created = False
        except KeystoreError:
            current = store.generate(KeyPurpose.CHAIN_ACCOUNT, now=now)
            created = True
        if rotate and not created:
            previous = _address_of(store, current.kid)
            current = store.rotate(KeyPurpose.CHAIN_ACCOUNT, now=now)
            created = True
        retired = [
            _address_of(store, e.kid)
            for e in store.entries()
            if e.purpose == KeyPurpose.CHAIN_ACCOUNT and not e.is_active
        ]
        return {
            "address": _address_of(store, current.kid),
            "kid": current.kid,
            "created": created,
            "previous": previous,
            "retired": retired,
        }

    report = _checked(act)
    if as_json:
        emit(report, True)
        return
    click.echo(report["address"])
    if report["previous"]:
        _note(
            f"new anchoring account (the previous one, {report['previous']}, is retired but "
            "kept): have the registry's owner authorize the new one, restart the gateways, "
            "and revoke the old one once `dsgw status` shows nothing in flight"
        )
    elif report["created"]:
        _note(
            "new anchoring account: the AnchorRegistry's owner must authorize it "
            "(`dsgw chain authorize --account ...`) before the gateway can anchor"
        )


def _address_of(store: Keystore, kid: str) -> str:
    key: LocalAccount = Account.from_key(store.chain_account_private_key(kid))
    return str(key.address)


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


@chain.command("deploy")
@_rpc_url
@_owner_key_file
@_timeout
@_as_json
def deploy(rpc_url: str, owner_key_file: Path, timeout: float, as_json: bool) -> None:
    """Deploy the AnchorRegistry, owned by the key in --owner-key-file; print its address."""
    owner = _checked(lambda: read_owner_key(owner_key_file))
    artifact = _checked(RegistryArtifact.from_file)

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
    _note(
        f"AnchorRegistry deployed on chain {report['chain_id']} in block "
        f"{report['block_number']} (tx {report['tx_hash']}), owned by {report['owner']}. "
        "Set DSGW_CHAIN_CONTRACT to its address and authorize the gateway's anchoring "
        "account (`dsgw chain authorize`)."
    )


@chain.command("authorize")
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
    owner = _checked(lambda: read_owner_key(owner_key_file))
    target = _checked(lambda: parse_address(anchoring_account, "anchoring account"))
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


@chain.command("transfer-ownership")
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
    owner = _checked(lambda: read_owner_key(owner_key_file))
    offered = _checked(lambda: parse_address(new_owner, "new owner"))

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


@chain.command("accept-ownership")
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
    new_owner = _checked(lambda: read_owner_key(owner_key_file))

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
