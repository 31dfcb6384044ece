"""``dsgw scenario check``: the quasi-identifier check of a scenario, stored or drafted.

Joined to the ``scenario`` group lazily (:mod:`gateway.cli.scenarios`). It prints
warnings and exits 0 whatever they say: combining quasi-identifiers is the authority's call
(docs/privacy.md); a scenario document that is not valid exits 2 like ``scenario create``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape

from gateway.cli.common import console, emit, load_json, run, settings_of, with_gateway
from gateway.errors import NotFoundError
from gateway.governance.models import Scenario

if TYPE_CHECKING:
    from gateway.runtime import Gateway

__all__ = ["scenario_check"]


@click.command("check")
@click.argument("file_or_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def scenario_check(ctx: click.Context, file_or_id: str, as_json: bool) -> None:
    """Warn where a scenario's grants combine quasi-identifiers that single out subjects.

    FILE_OR_ID is a scenario document (JSON, as for `scenario create`) or the id of a
    stored scenario. Combinations are measured on the sources this machine can reach."""
    path = Path(file_or_id)
    draft = load_json(path) if path.is_file() else None
    settings = settings_of(ctx)

    async def act(g: Gateway) -> tuple[str, list[Any]]:
        snapshot = await g.governance.snapshot()
        if draft is not None:
            found = Scenario.from_dict(draft, settings.zone)
            for grant in found.grants:
                dataset = snapshot.datasets.get(grant.dataset_id)
                if dataset is None:
                    raise NotFoundError(
                        f"scenario {found.id}: dataset {grant.dataset_id} is not in the catalog"
                    )
                grant.check_against(dataset)
        else:
            stored = snapshot.scenarios.get(file_or_id)
            if stored is None:
                raise NotFoundError(
                    f"{file_or_id} is neither a scenario document nor a stored scenario id "
                    "(dsgw scenario list)"
                )
            found = stored
        return found.id, await g.scenario_warnings(found)

    scenario_id, warnings = run(with_gateway(settings, act))
    if as_json:
        emit({"scenario": scenario_id, "warnings": [w.to_dict() for w in warnings]}, True)
        return
    if not warnings:
        console.print(f"scenario [bold]{scenario_id}[/]: no quasi-identifier combination found")
        return
    console.print(f"scenario [bold]{escape(scenario_id)}[/]: {len(warnings)} warning(s)")
    for warning in warnings:
        console.print(f"[yellow]warning:[/] {escape(warning.message)}")
