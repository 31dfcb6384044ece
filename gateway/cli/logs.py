"""Reading the log: newest records, checkpoints, anchoring status, anchors and proofs.

Every verb but ``checkpoint`` (which folds the trees and signs) reads over the engine alone
(:func:`~gateway.cli.common.with_store`)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table

from gateway.cli.common import console, emit, run, settings_of, with_gateway, with_store
from gateway.ledger.log import STREAMS

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from gateway.runtime import Gateway

__all__ = ["anchors", "calls", "checkpoint", "proof", "status"]


@click.command()
@click.option("--merchant", "merchant_id", default=None)
@click.option(
    "--stream", type=click.Choice(["calls", "governance"]), default="calls", show_default=True
)
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def calls(
    ctx: click.Context, merchant_id: str | None, stream: str, limit: int, as_json: bool
) -> None:
    """Show the newest log records."""
    from gateway.ledger.log import read_entries

    entries = run(
        with_store(
            settings_of(ctx),
            lambda engine: read_entries(engine, stream, merchant_id=merchant_id, limit=limit),
        )
    )
    table = Table("record", "time", "kind", "merchant", "what", "decision", "status", "rows")
    data = []
    for e in entries:
        record = json.loads(e.payload)
        data.append(
            {"record_id": f"{e.stream}/{e.seq}", "leaf_hash": e.leaf_hash.hex(), "record": record}
        )
        what = " ".join(str(record.get(k) or "") for k in ("scenario", "dataset", "mode")).strip()
        table.add_row(
            f"{e.stream}/{e.seq}",
            record.get("time", "")[:19],
            e.kind,
            str(record.get("merchant") or record.get("actor", {}).get("id", "")),
            what or str(record.get("path", "")),
            str(record.get("decision", "")),
            str(record.get("status", "")),
            str(record.get("rows", "")),
        )
    emit(data, as_json, table)


@click.command()
@click.option(
    "--stream", type=click.Choice(list(STREAMS)), default=None, help="One stream (default: all)."
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def checkpoint(ctx: click.Context, stream: str | None, as_json: bool) -> None:
    """Fold the log into its Merkle trees and sign a checkpoint of every stream that grew."""

    from gateway.errors import NotFoundError
    from gateway.ledger.checkpoints import latest_checkpoint

    async def act(g: Gateway) -> list[dict[str, object]]:
        out = []
        for name in [stream] if stream else STREAMS:
            await g.checkpointer.checkpoint(name)
            try:
                out.append((await latest_checkpoint(g.engine, name)).to_dict())
            except NotFoundError:
                continue
        return out

    heads = run(with_gateway(settings_of(ctx), act))
    table = Table("stream", "size", "root", "algorithm")
    for head in heads:
        table.add_row(
            str(head["stream"]), str(head["size"]), str(head["root"]), str(head["algorithm"])
        )
    emit(heads, as_json, table)


@click.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Log sizes, newest checkpoints and the anchoring backlog, from the database."""
    from gateway.chain.status import anchoring_status
    from gateway.ledger.log import stream_size

    async def act(engine: AsyncEngine) -> dict[str, Any]:
        sizes = {name: await stream_size(engine, name) for name in STREAMS}
        anchoring = await anchoring_status(engine)
        return {"records": sizes, "anchoring": anchoring.to_dict()}

    report = run(with_store(settings_of(ctx), act))
    report = {"chain": settings_of(ctx).chain, **report}
    if as_json:
        emit(report, True)
        return
    table = Table(
        "stream",
        "records",
        "checkpoint",
        "anchored (final)",
        "in flight",
        "unanchored records",
        "oldest unanchored",
    )
    for item in report["anchoring"]["streams"]:
        table.add_row(
            item["stream"],
            str(report["records"][item["stream"]]),
            str(item.get("checkpoint_size") or "-"),
            str(item.get("final_size") or "-"),
            str(len(item.get("in_flight") or [])),
            str(item.get("unanchored_entries", 0)),
            str(item.get("oldest_unanchored_at") or "-"),
        )
    console.print(f"anchoring backend: {report['chain']}")
    console.print(table)


@click.command()
@click.option("--stream", type=click.Choice(list(STREAMS)), default=None)
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def anchors(ctx: click.Context, stream: str | None, limit: int, as_json: bool) -> None:
    """The newest anchors: stream, size, root, block, transaction, confirmations, status."""
    from sqlalchemy import select

    from gateway.db.schema import AnchorRow

    async def act(engine: AsyncEngine) -> list[dict[str, Any]]:
        query = select(AnchorRow.__table__).order_by(AnchorRow.id.desc()).limit(limit)
        if stream:
            query = query.where(AnchorRow.stream == stream)
        async with engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            {
                "stream": r.stream,
                "size": r.size,
                "root": bytes(r.root).hex(),
                "chain_id": r.chain_id,
                "contract": r.contract,
                "block": r.block_number,
                "tx_hash": "0x" + bytes(r.tx_hash).hex() if r.tx_hash else None,
                "confirmations": r.confirmations,
                "status": r.status,
            }
            for r in rows
        ]

    data = run(with_store(settings_of(ctx), act))
    table = Table("stream", "size", "root", "block", "transaction", "confirmations", "status")
    for a in data:
        table.add_row(
            a["stream"],
            str(a["size"]),
            a["root"][:16] + "...",
            str(a["block"] or "-"),
            (a["tx_hash"] or "-")[:18] + "...",
            str(a["confirmations"]),
            a["status"],
        )
    emit(data, as_json, table)


@click.group()
def proof() -> None:
    """RFC 9162 proofs from the stored trees."""


@proof.command("inclusion")
@click.argument("stream", type=click.Choice(list(STREAMS)))
@click.argument("index", type=click.IntRange(min=0))
@click.option(
    "--size",
    type=click.IntRange(min=1),
    default=None,
    help="Tree size (default: the newest checkpoint's).",
)
@click.pass_context
def proof_inclusion(ctx: click.Context, stream: str, index: int, size: int | None) -> None:
    """Print the inclusion proof of record INDEX as JSON."""
    from gateway.ledger.checkpoints import latest_checkpoint
    from gateway.ledger.tree import MerkleTree

    settings = settings_of(ctx)

    async def act(engine: AsyncEngine) -> dict[str, object]:
        tree = MerkleTree(engine, stream, algorithm=settings.hash_algorithm)
        at = size or (await latest_checkpoint(engine, stream)).size
        return {"stream": stream, **(await tree.inclusion_proof(index, at)).to_dict()}

    emit(run(with_store(settings, act)), True)


@proof.command("consistency")
@click.argument("stream", type=click.Choice(list(STREAMS)))
@click.argument("first", type=click.IntRange(min=1))
@click.argument("second", type=click.IntRange(min=1))
@click.pass_context
def proof_consistency(ctx: click.Context, stream: str, first: int, second: int) -> None:
    """Print the consistency proof between tree sizes FIRST and SECOND as JSON."""
    from gateway.ledger.tree import MerkleTree

    settings = settings_of(ctx)

    async def act(engine: AsyncEngine) -> dict[str, object]:
        tree = MerkleTree(engine, stream, algorithm=settings.hash_algorithm)
        return {"stream": stream, **(await tree.consistency_proof(first, second)).to_dict()}

    emit(run(with_store(settings, act)), True)
