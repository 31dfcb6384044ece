"""``dsgw report``: the quarterly security report and the periodic operations report, as
Markdown or self-contained HTML. Listed in :data:`gateway.cli.commands.COMMANDS` and
imported when it runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.progress import Progress

from gateway.cli.common import err_console, run, settings_of, with_gateway
from gateway.governance.actor import LOCAL_ADMIN
from gateway.reports.periods import Period, parse_period, parse_quarter
from gateway.reports.render import Format, render_operations, render_security
from gateway.reports.service import chain_for_command_line, operations_report, security_report

if TYPE_CHECKING:
    from gateway.runtime import Gateway

__all__ = ["report"]

_FORMATS = {".html": "html", ".htm": "html", ".md": "md", ".markdown": "md"}


def _format(fmt: str | None, out: Path | None) -> Format:
    """``--format`` if given, else the output file's extension, else Markdown."""
    chosen = fmt or (_FORMATS.get(out.suffix.lower()) if out is not None else None) or "md"
    return "html" if chosen == "html" else "md"


def _period(parse: Callable[[str], Period], text: str) -> Period:
    return parse(text)  # a DsgwError reaches the one handler, gateway.cli.exits.run_cli


def _write(text: str, out: Path | None, what: str) -> None:
    if out is None:
        click.echo(text, nl=False)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise click.FileError(str(out), hint=str(exc)) from exc
    err_console.print(f"{what} written to {out}")


_OUTPUT = click.option(
    "-o",
    "--output",
    "out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write to this file (default: standard output); .html picks HTML.",
)
_FORMAT = click.option(
    "--format",
    "fmt",
    type=click.Choice(["md", "html"]),
    default=None,
    help="Markdown (default) or self-contained HTML with charts.",
)


@click.group()
def report() -> None:
    """Supervision reports: quarterly security, periodic operations."""


@report.command("security")
@click.option("--quarter", required=True, help="Calendar quarter in Beijing time, e.g. 2026Q3.")
@_FORMAT
@_OUTPUT
@click.option("--no-chain", is_flag=True, help="Skip the chain audit (database audit only).")
@click.pass_context
def report_security(
    ctx: click.Context, quarter: str, fmt: str | None, out: Path | None, no_chain: bool
) -> None:
    """The quarterly security report to the data bureau (CS23 art. 24): log and chain
    audit, permission changes, alerts and their handling, supervision measures, anchoring
    health. Re-audits every log stream, which takes a while on a large log."""
    period = _period(parse_quarter, quarter)
    settings = settings_of(ctx)
    chain = chain_for_command_line(settings, skip=no_chain)

    async def act(g: Gateway) -> str:
        with Progress(console=err_console, transient=True) as bar:

            def on_stream(stream: str, total: int) -> Callable[[int], None]:
                task = bar.add_task(f"auditing {stream}", total=total or None)
                return lambda count: bar.advance(task, count)

            made = await security_report(
                g, period, actor=LOCAL_ADMIN, chain=chain, progress=on_stream
            )
        return render_security(made, _format(fmt, out))

    _write(run(with_gateway(settings, act)), out, f"security report {period.label}")


@report.command("operations")
@click.option(
    "--period",
    "period_text",
    required=True,
    help="2026-07, 2026Q3, 2026 or 2026-07-01..2026-09-30 (Beijing time).",
)
@_FORMAT
@_OUTPUT
@click.pass_context
def report_operations(
    ctx: click.Context, period_text: str, fmt: str | None, out: Path | None
) -> None:
    """The operations report of a period (CS23 art. 23; ZW art. 31-33): calls per
    scenario and merchant, review timeliness, products, trades and revenue."""
    period = _period(parse_period, period_text)

    async def act(g: Gateway) -> str:
        made = await operations_report(g, period, actor=LOCAL_ADMIN)
        return render_operations(made, _format(fmt, out))

    _write(run(with_gateway(settings_of(ctx), act)), out, f"operations report {period.label}")
