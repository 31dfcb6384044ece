"""``dsgw``: the command line, a thin shell over the same services as the HTTP API.

This module is the shell alone: the root group, its options, the settings, and the one
error handler (:func:`gateway.cli.exits.run_cli`, which maps every outcome to an
:class:`~gateway.cli.exits.ExitCode`). The commands live in modules of their own, listed in
:data:`gateway.cli.commands.COMMANDS` and imported only when one of them runs, so
``dsgw --help`` imports none of them and ``dsgw merchant list`` does not import web3.

Admin verbs act as the local administrator (whoever holds the data directory and the
keystore passphrase); staff elsewhere use the admin HTTP API with role credentials.
"""

from __future__ import annotations

from pathlib import Path

import click

from gateway.cli.commands import COMMANDS
from gateway.cli.exits import ExitCode, HandledGroup, exit_code
from gateway.cli.lazy import LazyGroup

__all__ = ["ExitCode", "cli", "exit_code", "main"]


class RootGroup(LazyGroup, HandledGroup):
    """The ``dsgw`` group: lazy commands, and every outcome through the one error handler."""


@click.group(cls=RootGroup, lazy=COMMANDS)
@click.option(
    "--config",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="TOML settings file (also DSGW_CONFIG).",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Data directory (default ./dsgw-data, also DSGW_DATA_DIR).",
)
@click.option(
    "--database-url",
    default=None,
    help="SQLAlchemy URL of the gateway store (default SQLite in the data dir).",
)
@click.option(
    "--debug", is_flag=True, help="On an error, also print its traceback (for bug reports)."
)
@click.version_option(package_name="dsgw")
@click.pass_context
def cli(
    ctx: click.Context,
    config: Path | None,
    data_dir: Path | None,
    database_url: str | None,
    debug: bool,
) -> None:
    """dsgw: the trusted data-space gateway.

    Exit codes: 0 done, 1 failed, 2 invalid input, 3 not found, 4 conflict or forbidden,
    5 audit findings, 6 not verified, 7 reconciliation discrepancies, 8 nobody named by a
    trace, 70 internal error (please report), 130 interrupted.
    """
    from gateway.logs import configure_logging
    from gateway.settings import load_settings

    ctx.obj = load_settings(config, data_dir=data_dir, database_url=database_url)
    configure_logging(ctx.obj)


def main() -> None:
    """The ``dsgw`` entry point: every outcome is a message and an :class:`ExitCode`."""
    cli.main(prog_name="dsgw")  # a HandledGroup: exits through run_cli
