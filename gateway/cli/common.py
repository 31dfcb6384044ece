"""What every ``dsgw`` command module shares: output, the event loop and opening the gateway.

This module imports no command module and no heavy library at import time (no web3, no
runtime, no SQLAlchemy): a command pays for what it opens, when it opens it.
:func:`with_gateway` opens every service (keystore, migrations, the log writer), for a
verb that changes something; :func:`with_store` opens the database alone, for a verb that
only reads: it builds the one reader it reads through over the engine (``AlertStore(engine,
clock)``, ``MeasureReader(engine)``, with :func:`working_calendar` where deadlines are
shown), so it never imports :mod:`gateway.runtime`; :func:`read_store` opens it without the
ORM, for the policy listings (merchants, agreements, datasets, scenarios).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from gateway.settings import Settings
from gateway.tabular import read_text_file

if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlalchemy.ext.asyncio import AsyncEngine

    from gateway.governance.actor import Actor
    from gateway.runtime import Gateway
    from gateway.workdays.store import LiveCalendar

__all__ = [
    "console",
    "emit",
    "err_console",
    "load_json",
    "local_admin",
    "read_store",
    "run",
    "settings_of",
    "with_changes",
    "with_gateway",
    "with_store",
    "working_calendar",
]

T = TypeVar("T")
console = Console()
err_console = Console(stderr=True)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a verb's coroutine; its errors reach the one handler in :mod:`gateway.cli.exits`."""
    return asyncio.run(coro)


def settings_of(ctx: click.Context) -> Settings:
    """The settings the root group loaded (``ctx.obj``)."""
    settings: Settings = ctx.obj
    return settings


def with_changes(settings: Settings, **changes: Any) -> Settings:
    """``settings`` with the options the user gave on the command line (``None``: not given)."""
    return settings.replace(**{k: v for k, v in changes.items() if v is not None})


def local_admin() -> Actor:
    """The local administrator, as whom admin verbs act (imported when a verb runs: the
    governance service is heavy, and listings do not need it)."""
    from gateway.governance.actor import LOCAL_ADMIN

    return LOCAL_ADMIN


async def with_gateway(settings: Settings, action: Callable[[Gateway], Awaitable[T]]) -> T:
    """Run ``action`` on a fully opened gateway (keystore, migrated store, log writer).

    Admin verbs work on the database; only ``serve`` and ``demo`` run the chain connection.
    """
    from gateway.runtime import Gateway

    gateway = await Gateway.open(settings.replace(chain="none"))
    try:
        return await action(gateway)
    finally:
        await gateway.close()


async def with_store(settings: Settings, action: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """Run the read-only ``action`` on the store's engine alone.

    No services, no log writer, no chain, no web3: a listing needs none of them. The
    keystore is still opened (one scrypt), because the CLI acts as the local administrator,
    whoever holds the passphrase: a wrong one is refused here as by :func:`with_gateway`.
    The schema is migrated only if reading fails, so a store left behind by an older release
    is brought up to date as :func:`with_gateway` would, and a current one costs nothing.

    Raises :class:`gateway.errors.KeystoreError` when the data directory was never
    initialised or the passphrase is wrong, as :func:`with_gateway` does.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from gateway.db.engines import engine_for, migrate
    from gateway.passphrase import open_keystore

    open_keystore(settings)
    engine = engine_for(settings)
    try:
        try:
            return await action(engine)
        except SQLAlchemyError:
            await migrate(engine, timezone=settings.timezone)
            return await action(engine)
    finally:
        await engine.dispose()


def read_store(settings: Settings, action: Callable[[Connection], T]) -> T:
    """Run the read-only ``action`` on one synchronous connection to the store.

    For the policy listings (:mod:`gateway.governance.listings`): SQLAlchemy Core and the
    dialect's synchronous driver, no ORM, no schema (:mod:`gateway.db.reading` says why).
    Otherwise as :func:`with_store`: the keystore is opened first (a wrong passphrase is
    refused), and a store left behind by an older release is migrated when the read fails,
    then read again.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from gateway.db.reading import read_engine
    from gateway.passphrase import open_keystore

    open_keystore(settings)
    engine = read_engine(settings)
    try:
        try:
            with engine.connect() as conn:
                return action(conn)
        except SQLAlchemyError:
            run(_migrate(settings))
            with engine.connect() as conn:
                return action(conn)
    finally:
        engine.dispose()


async def _migrate(settings: Settings) -> None:
    from gateway.db.engines import engine_for, migrate

    engine = engine_for(settings)
    try:
        await migrate(engine, timezone=settings.timezone)
    finally:
        await engine.dispose()


async def working_calendar(settings: Settings, engine: AsyncEngine) -> LiveCalendar:
    """The working-day calendar, as ``Gateway.open`` builds it, from the engine alone: a
    reader that shows whether a deadline is provisional counts on the same days."""
    from gateway.workdays.store import open_calendar

    return await open_calendar(engine, *settings.workdays.calendars, zone=settings.zone)


def emit(data: Any, as_json: bool, table: Table | None = None) -> None:
    """``data`` as JSON (``--json``, or when there is no table), else ``table``."""
    if as_json or table is None:
        click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))
    else:
        console.print(table)


def load_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; a file that is not one is invalid input (exit 2)."""
    try:
        data = json.loads(read_text_file(path))
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{path}: cannot read JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise click.BadParameter(f"{path}: expected a JSON object")
    return data
