"""``dsgw dataset``: the catalog entries (listing reads the store alone)."""

from __future__ import annotations

from pathlib import Path

import click
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

__all__ = ["dataset"]


@click.group()
def dataset() -> None:
    """Catalog entries."""


@dataset.command("register")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--replace", is_flag=True, help="Replace an existing entry with the same id.")
@click.pass_context
def dataset_register(ctx: click.Context, file: Path, replace: bool) -> None:
    """Register a dataset from a JSON catalog entry."""
    data = load_json(file)
    result = run(
        with_gateway(
            settings_of(ctx),
            lambda g: g.governance.catalog.register_dataset(
                local_admin(), data, replace_existing=replace
            ),
        )
    )
    console.print(f"registered dataset [bold]{result.id}[/] ({result.name})")


@dataset.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def dataset_list(ctx: click.Context, as_json: bool) -> None:
    from gateway.governance.listings import list_datasets

    datasets = read_store(settings_of(ctx), list_datasets)
    table = Table("id", "name", "provider", "open", "negative list", "sensitive fields")
    data = []
    for d in datasets:
        data.append(d.to_dict())
        table.add_row(
            d.id,
            d.name,
            d.provider,
            d.open_attribute.value,
            "yes" if d.negative_list else "no",
            ", ".join(f.name for f in d.fields if f.sensitive),
        )
    emit(data, as_json, table)
