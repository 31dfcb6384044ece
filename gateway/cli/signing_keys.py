"""``dsgw keys``: the keystore's signing keys (opens the keystore, not the store)."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from gateway.cli.common import console, emit, run, settings_of

__all__ = ["keys"]


@click.group()
def keys() -> None:
    """Keystore keys."""


@keys.command("rotate")
@click.argument("purpose", type=click.Choice(["token-signing", "checkpoint"]))
@click.pass_context
def keys_rotate(ctx: click.Context, purpose: str) -> None:
    """Make a new active key; the old one keeps verifying until its last token expires."""
    from gateway.clock import SystemClock
    from gateway.passphrase import keystore_passphrase
    from keys.keystore import KeyPurpose, Keystore

    settings = settings_of(ctx)

    async def act() -> Any:
        store = Keystore.open(settings.keystore_path, keystore_passphrase(settings))
        return store.rotate(KeyPurpose(purpose), now=SystemClock().now())

    info = run(act())
    console.print(f"new {purpose} key {info.kid} is active")


@keys.command("verifiers")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def keys_verifiers(ctx: click.Context, as_json: bool) -> None:
    """The checkpoint verifier keys (C2SP), active first, then every retired one.

    Checkpoint keys are never pruned: after a rotation, older checkpoints and bundles
    still name the retired key that signed them, and `dsgw verify --key` accepts it.
    """
    from gateway.ledger.checkpoints import NoteVerifier
    from gateway.passphrase import keystore_passphrase
    from keys.keystore import KeyPurpose, Keystore

    settings = settings_of(ctx)

    async def act() -> list[dict[str, Any]]:
        store = Keystore.open(settings.keystore_path, keystore_passphrase(settings))
        out = []
        for info in store.keys_of(KeyPurpose.CHECKPOINT):
            verifier = NoteVerifier(settings.deployment, store.public_key(info.kid))
            out.append(
                {
                    "kid": info.kid,
                    "key_id": verifier.key_id.hex(),
                    "verifier_key": verifier.to_text(),
                    "created_at": info.created_at.isoformat(),
                    "retired_at": info.retired_at.isoformat() if info.retired_at else None,
                }
            )
        return out

    data = run(act())
    if as_json:
        emit(data, True)
        return
    for item in data:
        state = f"retired {item['retired_at'][:19]}" if item["retired_at"] else "active"
        click.echo(f"{item['verifier_key']}  ({state})")


@keys.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def keys_list(ctx: click.Context, as_json: bool) -> None:
    from gateway.passphrase import keystore_passphrase
    from keys.keystore import Keystore

    settings = settings_of(ctx)

    async def act() -> Any:
        return Keystore.open(settings.keystore_path, keystore_passphrase(settings)).entries()

    entries = run(act())
    table = Table("kid", "purpose", "algorithm", "created", "retired")
    data = []
    for e in entries:
        data.append(
            {
                "kid": e.kid,
                "purpose": str(e.purpose),
                "algorithm": e.algorithm,
                "created_at": e.created_at.isoformat(),
                "retired_at": e.retired_at.isoformat() if e.retired_at else None,
            }
        )
        table.add_row(
            e.kid,
            str(e.purpose),
            e.algorithm,
            e.created_at.isoformat()[:19],
            e.retired_at.isoformat()[:19] if e.retired_at else "",
        )
    emit(data, as_json, table)
