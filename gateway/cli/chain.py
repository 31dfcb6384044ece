"""``dsgw chain``: the consortium chain from the operator's desk (``docs/deployment.md``).

* ``genesis``: a Besu QBFT genesis from the validators' addresses (:mod:`gateway.chain.qbft`);
* ``account``: the gateway's anchoring account, from the keystore (created if missing;
  ``--rotate`` makes a new one);
* ``deploy``, ``authorize`` (``--revoke``), ``transfer-ownership``, ``accept-ownership``: the
  AnchorRegistry's owner at work (:mod:`gateway.cli.chain_registry`, imported when one runs).

Listed in :data:`gateway.cli.commands.COMMANDS` and imported when one of them runs.
This is the one command module that imports web3 at load time.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import click
from eth_account import Account
from eth_account.signers.local import LocalAccount

from gateway.chain.qbft import (
    DEFAULT_BLOCK_PERIOD,
    DEFAULT_EPOCH_LENGTH,
    DEFAULT_GAS_LIMIT,
    QbftGenesis,
)
from gateway.cli.common import emit, err_console, settings_of
from gateway.cli.lazy import Lazy, LazyGroup
from gateway.clock import SystemClock
from gateway.errors import KeystoreError, ValidationError
from gateway.passphrase import keystore_passphrase
from keys.keystore import KeyPurpose, Keystore

__all__ = ["chain", "note"]


def note(message: str) -> None:
    """Progress and explanations go to stderr, so stdout carries only the result."""
    err_console.print(message)


# The registry owner's verbs need web3 and a node, never the data directory.
_REGISTRY_VERBS = {
    "accept-ownership": Lazy(
        "gateway.cli.chain_registry:accept_ownership",
        "Take over the registry's ownership offered to this key (step 2 of 2).",
    ),
    "authorize": Lazy(
        "gateway.cli.chain_registry:authorize",
        "Let an account anchor on the registry (or, with --revoke, stop it), as its owner.",
    ),
    "deploy": Lazy(
        "gateway.cli.chain_registry:deploy",
        "Deploy the AnchorRegistry, owned by the key in --owner-key-file; print its address.",
    ),
    "transfer-ownership": Lazy(
        "gateway.cli.chain_registry:transfer_ownership",
        "Offer the registry's ownership to another account (step 1 of 2).",
    ),
}


@click.group(cls=LazyGroup, lazy=_REGISTRY_VERBS)
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

    document = build()
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
    note(
        f"QBFT genesis for chain {document.chain_id}: {len(document.validators)} validators "
        f"(tolerates {document.tolerated_faults} faulty), a block every "
        f"{document.block_period_seconds} s, "
        + ("free gas (run validators with --min-gas-price=0)" if free_gas else "priced gas")
    )
    for address in document.validators:
        note(f"  validator {address}")
    note(f"sha256 {document.sha256}  (every party's file must have the same)")
    if str(out) != "-":
        note(f"wrote {out}")


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

    report = act()
    if as_json:
        emit(report, True)
        return
    click.echo(report["address"])
    if report["previous"]:
        note(
            f"new anchoring account (the previous one, {report['previous']}, is retired but "
            "kept): have the registry's owner authorize the new one, restart the gateways, "
            "and revoke the old one once `dsgw status` shows nothing in flight"
        )
    elif report["created"]:
        note(
            "new anchoring account: the AnchorRegistry's owner must authorize it "
            "(`dsgw chain authorize --account ...`) before the gateway can anchor"
        )


def _address_of(store: Keystore, kid: str) -> str:
    key: LocalAccount = Account.from_key(store.chain_account_private_key(kid))
    return str(key.address)
