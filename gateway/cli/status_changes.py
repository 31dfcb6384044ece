"""One shape for the commands that move a governed thing to a status, e.g. ``dsgw merchant
suspend MERCHANT_ID [--reason TEXT]``: merchants, agreements and scenarios declare theirs
in a line each with :meth:`StatusChange.command`.

Every such command acts as the local administrator through its concern's service (the
service checks the role and records the change) and prints ``<noun> <id> is <status>``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Generic, TypeVar

import click

from gateway.cli.common import console, local_admin, run, settings_of, with_gateway

if TYPE_CHECKING:
    from gateway.governance.actor import Actor
    from gateway.governance.service import GovernanceService

__all__ = ["StatusChange"]

S = TypeVar("S", bound=Enum)

# A concern service's status setter: (actor, id, status, reason) -> the changed thing.
Setter = Callable[["Actor", str, S, str], Awaitable[object]]


@dataclass(frozen=True)
class StatusChange(Generic[S]):
    """The status commands of one kind of governed thing."""

    # What the thing is called: the argument is ``<noun>_id``, the output names it.
    noun: str
    # Its setter on the governance service, e.g. ``lambda gov: gov.merchants.set_...``.
    setter: Callable[[GovernanceService], Setter[S]]
    # The command's help; ``{status}`` is replaced by the status it sets.
    help: str
    reason_help: str | None = None

    def command(self, group: click.Group, name: str, status: S) -> click.Command:
        """Add the command ``name`` to ``group``: it moves one thing to ``status``."""
        key = f"{self.noun}_id"

        @group.command(name, help=self.help.format(status=status.value))
        @click.argument(key)
        @click.option("--reason", default="", help=self.reason_help)
        @click.pass_context
        def command(ctx: click.Context, /, reason: str, **ids: str) -> None:
            thing_id = ids[key]
            run(
                with_gateway(
                    settings_of(ctx),
                    lambda g: self.setter(g.governance)(local_admin(), thing_id, status, reason),
                )
            )
            console.print(f"{self.noun} [bold]{thing_id}[/] is {status.value}")

        return command
