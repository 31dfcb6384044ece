"""``dsgw secrets``: the named secrets of the keystore, the passwords source databases need.

A dataset names one as ``"credentials": "keystore:NAME"``; the gateway resolves it when it
opens the source, so the password is never in the catalog, a record or a listing. Values
are read from standard input or a hidden prompt, never from the command line (which
``ps`` and shell histories show). Listed in :data:`gateway.cli.commands.COMMANDS` and
imported when one of them runs.
"""

from __future__ import annotations

import sys

import click
from rich.table import Table

from gateway.cli.common import console, emit, run, settings_of
from gateway.clock import SystemClock
from gateway.errors import KeystoreError
from gateway.passphrase import keystore_passphrase
from keys.keystore import Keystore, SecretInfo

__all__ = ["secrets_group"]


def _read_value() -> bytes:
    """The secret from a hidden prompt (asked twice) on a terminal, else all of standard
    input without its final line break."""
    if sys.stdin.isatty():
        text = click.prompt("secret", hide_input=True, confirmation_prompt=True, err=True)
    else:
        text = sys.stdin.read()
        if text.endswith("\n"):
            text = text[:-1]
            if text.endswith("\r"):
                text = text[:-1]
    if not text:
        raise click.BadParameter("the secret is empty")
    return text.encode("utf-8")


def _info(info: SecretInfo) -> dict[str, str | None]:
    return {
        "name": info.name,
        "reference": f"keystore:{info.name}",
        "provider": info.provider,
        "created_at": info.created_at.isoformat(timespec="seconds"),
    }


@click.group("secrets")
def secrets_group() -> None:
    """Named secrets (source passwords) in the encrypted keystore."""


@secrets_group.command("set")
@click.argument("name")
@click.option(
    "--provider",
    default=None,
    help="The one dataset provider (source department) whose sources may use it; without "
    "it, only datasets registered by the authority or the local administrator may.",
)
@click.pass_context
def secrets_set(ctx: click.Context, name: str, provider: str | None) -> None:
    """Put secret NAME, read from standard input or a hidden prompt (never an argument).

    An existing secret of that name is replaced; sources using it pick the new value up
    when they are next opened (after a restart of the gateway, or a change of the dataset).
    """
    settings = settings_of(ctx)
    value = _read_value()

    async def act() -> SecretInfo:
        store = Keystore.open(settings.keystore_path, keystore_passphrase(settings))
        return store.put_secret(name, value, provider=provider, now=SystemClock().now())

    info = run(act())
    bound = f" for provider {info.provider}" if info.provider else ""
    console.print(f'secret [bold]{info.name}[/] stored{bound}; name it as "keystore:{info.name}"')


@secrets_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def secrets_list(ctx: click.Context, as_json: bool) -> None:
    """Names, providers and times of the stored secrets; never their values."""
    settings = settings_of(ctx)

    async def act() -> list[SecretInfo]:
        return Keystore.open(settings.keystore_path, keystore_passphrase(settings)).named_secrets()

    infos = run(act())
    table = Table("name", "reference", "provider", "created")
    for info in infos:
        row = _info(info)
        table.add_row(
            info.name, row["reference"], info.provider or "(any, staff only)", row["created_at"]
        )
    emit([_info(info) for info in infos], as_json, table)


@secrets_group.command("delete")
@click.argument("name")
@click.pass_context
def secrets_delete(ctx: click.Context, name: str) -> None:
    """Remove secret NAME; sources naming it become unavailable when next opened."""
    settings = settings_of(ctx)

    async def act() -> bool:
        store = Keystore.open(settings.keystore_path, keystore_passphrase(settings))
        if not store.delete_secret(name):
            raise KeystoreError(f"keystore: no secret named {name!r}")
        return True

    run(act())
    console.print(f"secret [bold]{name}[/] deleted")
