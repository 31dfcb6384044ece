"""``dsgw trace``: which recipients received the rows of a leaked file, and which one the
marks and canaries single out. Listed in :data:`gateway.cli.commands.COMMANDS` and
imported when it runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.progress import Progress, TaskID
from rich.table import Table

from gateway.cli.common import console, emit, err_console, run, settings_of, with_gateway
from gateway.governance.actor import LOCAL_ADMIN
from gateway.tracing.files import read_leaked_file

if TYPE_CHECKING:
    from gateway.runtime import Gateway

__all__ = ["TRACE_EXIT_NOBODY", "trace_command"]

TRACE_EXIT_NOBODY = 8
"""Exit code of ``dsgw trace`` when the evidence names nobody."""

_STAGES = {
    "columns": "finding identifying columns",
    "rows": "matching rows to deliveries",
    "deliveries": "reading delivery records",
    "evidence": "weighing marks and canaries",
}


def _probability(value: float) -> str:
    return "1" if value >= 1.0 else f"{value:.2e}"


@click.command("trace")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--dataset", "dataset_id", default=None, help="Only this dataset (default: any).")
@click.option("--sheet", default=None, help="XLSX worksheet (default: the first).")
@click.option(
    "--header/--no-header",
    default=None,
    help="Whether the first row holds column titles (default: decided from the row).",
)
@click.option(
    "--bundles",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Write the evidence bundle of every delivery of each named recipient here.",
)
@click.option(
    "--top", type=click.IntRange(min=1), default=10, show_default=True, help="Candidates shown."
)
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON.")
@click.pass_context
def trace_command(
    ctx: click.Context,
    file: Path,
    dataset_id: str | None,
    sheet: str | None,
    header: bool | None,
    bundles: Path | None,
    top: int,
    as_json: bool,
) -> None:
    """Trace a leaked FILE (CSV, XLSX or JSON) to the recipients of its rows.

    A recipient is named only when its keyed marks or canary rows are in the file: receiving
    the same public rows as others never names anyone. Exit code 0 when someone is named,
    8 when nobody is, 2 when the file cannot be read.
    """
    settings = settings_of(ctx)

    async def act(g: Gateway) -> dict[str, Any]:
        table = read_leaked_file(
            file, sheet=sheet, header=header, max_rows=g.settings.trace.max_rows
        )
        with Progress(console=err_console, transient=True, disable=as_json) as bar:
            tasks: dict[str, TaskID] = {}

            def progress(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(_STAGES.get(stage, stage), total=total or None)
                bar.update(tasks[stage], completed=done, total=total or None)

            report = await g.tracer.trace(
                LOCAL_ADMIN, table, dataset_id=dataset_id, progress=progress
            )
        document = report.to_dict()
        if bundles is not None:
            bundles.mkdir(parents=True, exist_ok=True)
            for candidate in document["candidates"]:
                if candidate["verdict"] != "named":
                    continue
                for delivery in candidate["deliveries"]:
                    path = bundles / f"calls-{delivery['seq']}.json"
                    if not path.exists():
                        bundle = await g.evidence.bundle("calls", int(delivery["seq"]))
                        path.write_text(
                            json.dumps(bundle, ensure_ascii=False, indent=2) + "\n",
                            encoding="utf-8",
                        )
                    delivery["bundle"] = str(path)
        return document

    document = run(with_gateway(settings, act))
    named = [c for c in document["candidates"] if c["verdict"] == "named"]
    if as_json:
        emit(document, True)
    else:
        _print(document, top)
    if not named:
        sys.exit(TRACE_EXIT_NOBODY)


def _print(document: dict[str, Any], top: int) -> None:
    console.print(
        f"{document['source']}: {document['rows_total']} rows, "
        f"{document['rows_matched']} matched to deliveries"
        + (f" of dataset [bold]{document['dataset_id']}[/]" if document["dataset_id"] else "")
    )
    if document["columns"]:
        columns = Table("leaked column", "field", "recognised by", "hit rate", title="columns")
        for c in document["columns"]:
            rate = c.get("hit_rate")
            columns.add_row(
                c["header"], c["field"], c["how"], "" if rate is None else f"{rate:.0%}"
            )
        console.print(columns)
    candidates = document["candidates"]
    if candidates:
        table = Table(
            "merchant",
            "verdict",
            "guilt",
            "false attribution",
            "rows received",
            "exclusive",
            "mark cells",
            "matches",
            "canaries",
            "deliveries",
            title="candidate recipients",
        )
        styles = {"named": "bold red", "possible": "yellow", "not-indicated": "dim"}
        for c in candidates[:top]:
            marks = c["marks"] or {}
            deliveries = [d.get("bundle") or d["record_id"] for d in c["deliveries"]]
            shown = ", ".join(deliveries[:3]) + (
                f" (+{len(deliveries) - 3})" if len(deliveries) > 3 else ""
            )
            table.add_row(
                c["merchant_id"],
                f"[{styles.get(c['verdict'], '')}]{c['verdict']}[/]",
                f"{c['guilt']:.3f}",
                _probability(c["false_attribution_probability"]),
                str(c["rows_received"]),
                str(c["rows_exclusive"]),
                str(marks.get("cells", "-")),
                str(marks.get("matches", "-")),
                str(len(c["canaries"])),
                shown,
            )
        console.print(table)
        if len(candidates) > top:
            console.print(f"... {len(candidates) - top} more candidates (--top, --json)")
    for note in document["notes"]:
        console.print(f"[yellow]note[/] {note}")
    named = [c["merchant_id"] for c in candidates if c["verdict"] == "named"]
    if named:
        console.print(f"[bold red]named:[/] {', '.join(named)}")
    else:
        console.print("[green]nobody is named[/]: no mark or canary singles out a recipient")
