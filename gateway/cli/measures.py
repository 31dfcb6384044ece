"""``dsgw measure``: impose, lift, list and show supervision measures as the local
administrator. A measure imposed here commits with its ``governance`` record and bumps the
policy epoch, so a gateway serving from the same data directory refuses the very next call
it stops. Listed in :data:`gateway.cli.commands.COMMANDS`, imported when it runs.
``list`` and ``show`` read through :class:`MeasureReader` over the engine alone
(:func:`~gateway.cli.common.with_store`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table

from gateway.cli.common import console, emit, run, settings_of, with_gateway, with_store
from gateway.governance.actor import LOCAL_ADMIN
from gateway.supervision.measures import Measure, MeasureKind, MeasureReader

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["measure"]


@click.group()
def measure() -> None:
    """Supervision measures: suspend a dataset's supply, close a merchant's data channel,
    suspend a scenario, delist a product; and lift them."""


def _when(value: Any) -> str:
    return value.isoformat(timespec="seconds") if value is not None else ""


@measure.command("impose")
@click.argument("kind", type=click.Choice([k.value for k in MeasureKind]))
@click.argument("target")
@click.option("--reason", required=True, help="Why (required; shown to refused callers).")
@click.option("--basis", default=None, help="Legal basis, e.g. 'ZW art. 27'.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def measure_impose(
    ctx: click.Context, kind: str, target: str, reason: str, basis: str | None, as_json: bool
) -> None:
    """Impose a measure of KIND on TARGET (a dataset, merchant, scenario or product id).

    It takes effect on the next call in every gateway process sharing this data directory.
    """
    found = run(
        with_gateway(
            settings_of(ctx), lambda g: g.measures.impose(LOCAL_ADMIN, kind, target, reason, basis)
        )
    )
    if as_json:
        emit(found.to_dict(), True)
    else:
        console.print(f"supervision measure [bold]{found.id}[/] imposed: {found.stopped}")
        console.print(f"[dim]{found.to_dict()['effect']}; lift with `dsgw measure lift {found.id}`")


@measure.command("lift")
@click.argument("measure_id")
@click.option("--reason", required=True, help="Why the measure is no longer needed.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def measure_lift(ctx: click.Context, measure_id: str, reason: str, as_json: bool) -> None:
    """Lift an active measure; what it stopped works again on the next call."""
    found = run(
        with_gateway(settings_of(ctx), lambda g: g.measures.lift(LOCAL_ADMIN, measure_id, reason))
    )
    if as_json:
        emit(found.to_dict(), True)
    else:
        console.print(
            f"supervision measure [bold]{found.id}[/] lifted: {found.kind.value} "
            f"{found.target_id} restored"
        )


@measure.command("list")
@click.option("--all", "show_all", is_flag=True, help="Active and lifted measures.")
@click.option("--lifted", is_flag=True, help="Only lifted measures.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def measure_list(ctx: click.Context, show_all: bool, lifted: bool, as_json: bool) -> None:
    """Measures in force (``--lifted``, ``--all`` for the history), oldest first."""
    if show_all and lifted:
        raise click.UsageError("give at most one of --all and --lifted")
    status = "all" if show_all else "lifted" if lifted else "active"
    found: Sequence[Measure] = run(
        with_store(settings_of(ctx), lambda engine: MeasureReader(engine).list(LOCAL_ADMIN, status))
    )
    table = Table("id", "kind", "target", "status", "imposed", "by", "reason", title=status)
    for m in found:
        table.add_row(
            m.id,
            m.kind.value,
            m.target_id,
            m.status.value,
            _when(m.imposed_at),
            m.imposed_by,
            m.reason if m.active else f"{m.reason} (lifted: {m.lift_reason})",
        )
    if not found and not as_json:
        console.print(f"no supervision measures ({status})")
        return
    emit([m.to_dict() for m in found], as_json, table)


@measure.command("show")
@click.argument("measure_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def measure_show(ctx: click.Context, measure_id: str, as_json: bool) -> None:
    """One measure with its governance records (ask `dsgw bundle governance SEQ` for the
    evidence bundle of each)."""

    async def act(engine: AsyncEngine) -> dict[str, Any]:
        measures = MeasureReader(engine)
        found = await measures.get(LOCAL_ADMIN, measure_id)
        return {**found.to_dict(), "records": list(await measures.records(found.id))}

    document = run(with_store(settings_of(ctx), act))
    if as_json:
        emit(document, True)
        return
    table = Table(show_header=False, title=f"supervision measure {document['id']}")
    table.add_column("field", style="bold")
    table.add_column("value")
    for key in (
        "kind",
        "target",
        "status",
        "effect",
        "reason",
        "basis",
        "imposed_by",
        "imposed_at",
        "lifted_by",
        "lifted_at",
        "lift_reason",
    ):
        if document[key] is not None:
            table.add_row(key, str(document[key]))
    table.add_row("records", ", ".join(document["records"]))
    console.print(table)
