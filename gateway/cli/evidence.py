"""Evidence bundles: ``dsgw bundle`` writes one, ``dsgw verify`` checks one with no store."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from gateway.cli.common import console, emit, err_console, run, settings_of
from gateway.cli.exits import ExitCode
from gateway.errors import DsgwError, ValidationError
from gateway.ledger.log import STREAMS
from gateway.tabular import read_text_file

__all__ = ["bundle", "verify"]


@click.command()
@click.argument("stream", type=click.Choice(list(STREAMS)))
@click.argument("seq", type=click.IntRange(min=0))
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write the bundle here instead of standard output.",
)
@click.pass_context
def bundle(ctx: click.Context, stream: str, seq: int, out: Path | None) -> None:
    """Write the evidence bundle of record STREAM/SEQ, with its anchor once final on chain."""
    from gateway.runtime import Gateway

    async def act() -> dict[str, Any]:
        # No anchoring worker here, but the chain settings stay: an anchor that became
        # final after the store last heard of it is confirmed on chain (gateway.chain.lookup).
        gateway = await Gateway.open(settings_of(ctx), anchoring=False)
        try:
            return await gateway.evidence.bundle(stream, seq)
        finally:
            await gateway.close()

    document = run(act())
    text = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        err_console.print(f"bundle of {stream}/{seq} written to {out}")


@click.command()
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option(
    "--key",
    "trusted_keys",
    multiple=True,
    help="Verifier key you trust (name+keyid+base64), e.g. from the operator; repeat it for "
    "the operator's retired keys: the one the checkpoint names is used "
    "(`dsgw keys verifiers` lists them).",
)
@click.option(
    "--rpc",
    "rpc_url",
    default=None,
    help="Ethereum JSON-RPC URL: also check the anchor transaction on chain.",
)
@click.option("--json", "as_json", is_flag=True)
def verify(file: Path, trusted_keys: tuple[str, ...], rpc_url: str | None, as_json: bool) -> None:
    """Verify an evidence bundle with no database and no gateway (and the chain, --rpc)."""
    from gateway.ledger.bundles import verify_bundle

    try:
        document = json.loads(read_text_file(file))
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{file}: cannot read JSON: {exc}") from exc
    try:
        if not isinstance(document, dict):
            raise ValidationError("bundle: the document is not a JSON object")
        check = verify_bundle(document, trusted_key=trusted_keys or None)
        if rpc_url is not None:
            anchor = document.get("anchor")
            if not isinstance(anchor, dict) or check.checkpoint is None:
                raise DsgwError("the bundle has no anchor to check on chain (not anchored yet)")
            from gateway.chain.verify import verify_anchor

            check.steps += asyncio.run(verify_anchor(anchor, check.checkpoint, rpc_url))
            check.warnings.append(
                "registry address taken from the bundle; compare it with the address the "
                "operator publishes"
            )
    except DsgwError as error:
        if as_json:
            emit({"verified": False, "error": error.detail}, True)
        else:
            err_console.print(f"[bold red]NOT VERIFIED:[/] {escape(error.detail)}")
        sys.exit(ExitCode.NOT_VERIFIED)
    if as_json:
        emit(
            {
                "verified": True,
                "steps": check.steps,
                "warnings": check.warnings,
                "record": check.record,
            },
            True,
        )
        return
    for step in check.steps:
        console.print(f"[green]ok[/]   {step}")
    for warning in check.warnings:
        console.print(f"[yellow]note[/] {escape(warning)}")
    console.print("[bold green]verified[/]")
