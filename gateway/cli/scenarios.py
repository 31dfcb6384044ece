"""``dsgw scenario``: authorized scenarios (listing reads the store alone).

The scenario's privacy check (:mod:`gateway.cli.privacy`) and its plan and evaluation
(:mod:`gateway.cli.workflows`) are defined with their domains and joined here lazily.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape
from rich.table import Table

from gateway.cli.common import (
    console,
    emit,
    load_json,
    local_admin,
    read_store,
    run,
    settings_of,
    with_gateway,
)
from gateway.cli.lazy import Lazy, LazyGroup
from gateway.cli.status_changes import StatusChange
from gateway.clock import local_date
from gateway.governance.models import ScenarioStatus

if TYPE_CHECKING:
    from gateway.runtime import Gateway

__all__ = ["scenario"]


@click.group(
    cls=LazyGroup,
    lazy={
        "check": Lazy(
            "gateway.cli.privacy:scenario_check",
            "Warn where a scenario's grants combine quasi-identifiers that single out subjects.",
        ),
        "evaluate": Lazy(
            "gateway.cli.workflows:scenario_evaluate",
            "Record a draft scenario's evaluation; only a passing one allows publication.",
        ),
        "plan": Lazy(
            "gateway.cli.workflows:scenario_plan",
            "Record a draft scenario's plan (one scenario, one plan, one evaluation).",
        ),
    },
)
def scenario() -> None:
    """Authorized scenarios."""


@scenario.command("create")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--publish", is_flag=True, help="Publish right after creating.")
@click.pass_context
def scenario_create(ctx: click.Context, file: Path, publish: bool) -> None:
    """Create a draft scenario from JSON."""
    data = load_json(file)

    async def act(g: Gateway) -> tuple[Any, list[Any]]:
        created = await g.governance.scenarios.create_scenario(local_admin(), data)
        warnings = await g.scenario_warnings(created)
        if publish:
            created = await g.governance.scenarios.set_scenario_status(
                local_admin(), created.id, ScenarioStatus.PUBLISHED
            )
        return created, warnings

    result, warnings = run(with_gateway(settings_of(ctx), act))
    console.print(f"scenario [bold]{result.id}[/] is {result.status.value}")
    for warning in warnings:
        console.print(f"[yellow]warning:[/] {escape(warning.message)}")


_SCENARIO_STATUS = StatusChange(
    "scenario",
    lambda gov: gov.scenarios.set_scenario_status,
    "Mark a scenario {status}.",
    reason_help="Why (kept in the governance log).",
)
_SCENARIO_STATUS.command(scenario, "publish", ScenarioStatus.PUBLISHED)
_SCENARIO_STATUS.command(scenario, "suspend", ScenarioStatus.SUSPENDED)
_SCENARIO_STATUS.command(scenario, "retire", ScenarioStatus.RETIRED)


@scenario.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def scenario_list(ctx: click.Context, as_json: bool) -> None:
    from gateway.governance.listings import list_scenarios

    scenarios = read_store(settings_of(ctx), list_scenarios)
    table = Table("id", "name", "status", "datasets", "valid until")
    data = []
    for s in scenarios:
        data.append(s.to_dict())
        table.add_row(
            s.id,
            s.name,
            s.status.value,
            ", ".join(g.dataset_id for g in s.grants),
            local_date(s.valid_until, settings_of(ctx).zone).isoformat(),
        )
    emit(data, as_json, table)
