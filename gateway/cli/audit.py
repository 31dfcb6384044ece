"""``dsgw audit``: recompute every stream, and with ``--chain`` compare the anchored roots."""

from __future__ import annotations

import dataclasses
import sys
from typing import TYPE_CHECKING

import click
from rich.markup import escape
from rich.table import Table

from gateway.cli.common import console, emit, err_console, run, settings_of, with_gateway
from gateway.cli.exits import ExitCode
from gateway.errors import DsgwError
from gateway.ledger.log import STREAMS, stream_size

if TYPE_CHECKING:
    from gateway.ledger.audit import AuditReport
    from gateway.runtime import Gateway

__all__ = ["audit"]


@click.command()
@click.option(
    "--stream", type=click.Choice(list(STREAMS)), default=None, help="One stream (default: all)."
)
@click.option(
    "--chain",
    "use_chain",
    is_flag=True,
    help="Also compare every root anchored on the configured chain with the rebuilt trees.",
)
@click.option(
    "--rpc", default="", help="Read the anchors from this JSON-RPC node (implies --chain)."
)
@click.option(
    "--contract",
    default="",
    help="The AnchorRegistry's address (default: the one this database recorded for the chain).",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def audit(
    ctx: click.Context, stream: str | None, use_chain: bool, rpc: str, contract: str, as_json: bool
) -> None:
    """Recompute every stream from the database; report tampered records by position.

    With --chain (or --rpc) every root the chain anchored must be the rebuilt tree's root at
    its size, and every anchor recorded as final must be on chain.

    Exit code 0 when clean, 5 when anything was found.
    """
    from rich.progress import Progress, TaskID

    from gateway.chain.audit import chain_evidence, chain_reader, registry_for_audit
    from gateway.ledger.audit import audit_stream

    settings = settings_of(ctx)
    names = [stream] if stream else list(STREAMS)

    async def act(g: Gateway) -> list[AuditReport]:
        # Every checkpoint key, retired ones too: each checkpoint names the key that signed it.
        keys = g.evidence.keys()
        evidence = {}
        if use_chain or rpc:
            async with chain_reader(
                settings.chain.kind,
                state_dir=settings.data_dir / "chain",
                rpc_url=rpc or settings.chain.rpc_url,
            ) as backend:
                registry = await registry_for_audit(
                    g.engine, backend, contract or settings.chain.contract
                )
                for name in names:
                    evidence[name] = await chain_evidence(
                        g.engine, registry, name, algorithm=g.settings.hash_algorithm
                    )
        reports = []
        with Progress(console=err_console, transient=True, disable=as_json) as bar:
            for name in names:
                total = await stream_size(g.engine, name)
                task = bar.add_task(f"auditing {name}", total=total or None)

                def advance(count: int, task: TaskID = task) -> None:
                    bar.advance(task, count)

                report = await audit_stream(
                    g.engine,
                    name,
                    algorithm=g.settings.hash_algorithm,
                    checkpoint_key=keys,
                    anchored=evidence[name].anchored if name in evidence else (),
                    progress=advance,
                )
                if name in evidence:
                    report = dataclasses.replace(
                        report, findings=evidence[name].findings + report.findings
                    )
                reports.append(report)
        found = [f for r in reports for f in r.findings]
        if found:
            from sqlalchemy.exc import SQLAlchemyError

            # Supervisors learn of a divergence from a critical alert too, not only from this
            # output; failing to raise it must not change the audit's own result.
            try:
                await g.alerts.raise_audit_divergence(found, chain=use_chain or bool(rpc))
            except (DsgwError, SQLAlchemyError, OSError) as exc:
                err_console.print(
                    f"[yellow]warning:[/] could not raise the audit alert: {escape(str(exc))}"
                )
        return reports

    reports = run(with_gateway(settings, act))
    chained = use_chain or bool(rpc)
    findings = [f for r in reports for f in r.findings]
    if as_json:
        emit(
            {
                "streams": [
                    {
                        "stream": r.stream,
                        "records": r.records,
                        "checkpoints": r.checkpoints,
                        "anchors": r.anchors if chained else None,
                    }
                    for r in reports
                ],
                "findings": [f.to_dict() for f in findings],
            },
            True,
        )
    else:
        summary = Table("stream", "records", "checkpoints", *(["anchors"] * chained), "findings")
        for r in reports:
            summary.add_row(
                r.stream,
                str(r.records),
                str(r.checkpoints),
                *([str(r.anchors)] * chained),
                str(len(r.findings)),
            )
        console.print(summary)
        if findings:
            table = Table("record", "finding", "detail", title="tampering found")
            for f in findings:
                table.add_row(f"{f.stream}/{f.seq}", f.kind, escape(f.detail))
            console.print(table)
        else:
            what = (
                "record, link, checkpoint and anchor" if chained else "record, link and checkpoint"
            )
            console.print(f"[green]every {what} verifies[/]")
    if findings:
        sys.exit(ExitCode.AUDIT_FINDINGS)
