"""A click group whose commands are imported only when one of them runs.

Each ``dsgw`` command group lives in its own module, and some of those modules import heavy
libraries (web3, the whole runtime). Importing them all to print ``dsgw --help`` or to run
``dsgw merchant list`` cost seconds; :class:`LazyGroup` keeps, for each command, the
``"module:attribute"`` that defines it and its one-line help, so listing the commands imports
nothing and running one imports its module alone.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import click

__all__ = ["Lazy", "LazyGroup"]


@dataclass(frozen=True, slots=True)
class Lazy:
    """Where a command is defined, and the help ``--help`` lists for it without importing it.

    ``help`` is the first paragraph of the command's docstring (``""`` when it has none);
    ``tests/test_cli_layout.py`` checks that it matches the command once imported.
    """

    target: str
    help: str = ""

    def short_help(self, limit: int) -> str:
        """The line ``--help`` lists, cut to ``limit`` as click cuts a command's docstring."""
        return click.Command(None, help=self.help).get_short_help_str(limit)

    def load(self) -> click.Command:
        module_name, _, attribute = self.target.partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.target} is not a click command")
        return command


class LazyGroup(click.Group):
    """A group with eager commands (added as usual) and lazy ones (imported on first use)."""

    def __init__(self, *args: Any, lazy: Mapping[str, Lazy] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy: dict[str, Lazy] = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            self.add_command(self.lazy[cmd_name].load(), cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """As :meth:`click.Group.format_commands`, but a command not imported yet is listed
        with its :attr:`Lazy.help` instead of being imported for its docstring."""
        listed = [
            (name, self.commands.get(name))
            for name in self.list_commands(ctx)
            if name not in self.commands or not self.commands[name].hidden
        ]
        if not listed:
            return
        limit = formatter.width - 6 - max(len(name) for name, _ in listed)
        rows = [
            (
                name,
                command.get_short_help_str(limit)
                if command is not None
                else self.lazy[name].short_help(limit),
            )
            for name, command in listed
        ]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
