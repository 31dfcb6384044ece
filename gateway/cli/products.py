"""``dsgw`` verbs for data products, the exchange's trades and settlements, revenue
statements and reconciliation with the exchange's ledger. They act as the local
administrator. Listed in :data:`gateway.cli.commands.COMMANDS`, imported when one runs.
``product list`` and ``revenue`` read through :class:`ProductReader` over the engine alone
(:func:`~gateway.cli.common.with_store`)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table
from rich.text import Text

from gateway.cli.common import (
    console,
    emit,
    err_console,
    load_json,
    run,
    settings_of,
    with_gateway,
    with_store,
)
from gateway.cli.exits import ExitCode
from gateway.governance.actor import LOCAL_ADMIN
from gateway.products.models import ProductStatus
from gateway.products.reading import ProductReader
from gateway.tabular import read_text_file

if TYPE_CHECKING:
    from gateway.runtime import Gateway

__all__ = ["exchange", "product", "reconcile_command", "revenue"]

FILE = click.Path(path_type=Path, dir_okay=False, exists=True)
RECONCILE_EXIT = ExitCode.DISCREPANCIES
"""Exit code of ``dsgw reconcile`` when it finds discrepancies."""


@click.group()
def product() -> None:
    """Data products: registration, export check, filing, listing."""


@product.command("register")
@click.argument("file", type=FILE)
@click.option("--merchant", "merchant_id", required=True)
@click.pass_context
def product_register(ctx: click.Context, file: Path, merchant_id: str) -> None:
    """Register a product from JSON, built on the merchant's agreement."""
    data = load_json(file)
    result = run(
        with_gateway(
            settings_of(ctx), lambda g: g.products.register(LOCAL_ADMIN, merchant_id, data)
        )
    )
    console.print(f"product [bold]{result.id}[/] registered ({result.status.value})")


@product.command("check")
@click.argument("product_id")
@click.option("--approve", is_flag=True)
@click.option("--reject", is_flag=True)
@click.option("--reason", "reasons", multiple=True)
@click.pass_context
def product_check(
    ctx: click.Context, product_id: str, approve: bool, reject: bool, reasons: tuple[str, ...]
) -> None:
    """The operator's export (出域) compliance check."""
    if approve == reject:
        raise click.UsageError("give exactly one of --approve and --reject")
    result = run(
        with_gateway(
            settings_of(ctx),
            lambda g: g.products.check_export(
                LOCAL_ADMIN, product_id, approve=approve, reasons=list(reasons)
            ),
        )
    )
    console.print(f"product [bold]{result.id}[/] is {result.status.value}")


@product.command("file")
@click.argument("product_id")
@click.option("--number", required=True, help="The authority's filing number.")
@click.pass_context
def product_file(ctx: click.Context, product_id: str, number: str) -> None:
    """Record the authority's filing (备案); only filed products can be listed."""
    result = run(
        with_gateway(settings_of(ctx), lambda g: g.products.file(LOCAL_ADMIN, product_id, number))
    )
    console.print(f"product [bold]{result.id}[/] is {result.status.value} ({number})")


@product.command("list-on-exchange")
@click.argument("product_id")
@click.option("--listing", "listing_id", required=True, help="The exchange's listing id.")
@click.pass_context
def product_list_on_exchange(ctx: click.Context, product_id: str, listing_id: str) -> None:
    """Record the exchange's listing of a filed product."""
    result = run(
        with_gateway(
            settings_of(ctx),
            lambda g: g.products.list_on_exchange(LOCAL_ADMIN, product_id, listing_id),
        )
    )
    console.print(f"product [bold]{result.id}[/] is {result.status.value} as {listing_id}")


@product.command("delist")
@click.argument("product_id")
@click.option("--reason", required=True)
@click.pass_context
def product_delist(ctx: click.Context, product_id: str, reason: str) -> None:
    """Delist a product: no trade or delivery afterwards."""
    result = run(
        with_gateway(settings_of(ctx), lambda g: g.products.delist(LOCAL_ADMIN, product_id, reason))
    )
    console.print(f"product [bold]{result.id}[/] is {result.status.value}")


@product.command("list")
@click.option("--status", type=click.Choice([s.value for s in ProductStatus]), default=None)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def product_list(ctx: click.Context, status: str | None, as_json: bool) -> None:
    """Products and where they stand."""
    wanted = ProductStatus(status) if status else None
    found = run(
        with_store(
            settings_of(ctx),
            lambda engine: ProductReader(engine).find(LOCAL_ADMIN, status=wanted),
        )
    )
    table = Table("id", "merchant", "name", "status", "price", "filing", "listing")
    for p in found:
        table.add_row(
            p.id,
            p.merchant_id,
            p.definition.name,
            p.status.value,
            f"{p.definition.unit_price}/{p.definition.unit}",
            p.filing_number or "",
            p.listing_id or "",
        )
    emit([p.to_dict() for p in found], as_json, table)


@click.group()
def exchange() -> None:
    """The exchange's trades and settlements, as it reports them."""


@exchange.command("trade")
@click.argument("file", type=FILE)
@click.pass_context
def exchange_trade(ctx: click.Context, file: Path) -> None:
    """Record trades from JSON (one trade object, or a list)."""
    try:
        data = json.loads(read_text_file(file))
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{file}: cannot read JSON: {exc}") from exc
    items = data if isinstance(data, list) else [data]

    async def act(g: Gateway) -> int:
        for item in items:
            await g.products.record_trade(LOCAL_ADMIN, item)
        return len(items)

    console.print(f"{run(with_gateway(settings_of(ctx), act))} trade(s) recorded")


@exchange.command("settle")
@click.argument("file", type=FILE)
@click.pass_context
def exchange_settle(ctx: click.Context, file: Path) -> None:
    """Record a settlement from JSON (settlement_id, period, trades, settled_at, amount)."""
    data = load_json(file)
    result = run(
        with_gateway(settings_of(ctx), lambda g: g.products.record_settlement(LOCAL_ADMIN, data))
    )
    console.print(
        f"settlement [bold]{result['settlement_id']}[/] of {result['period']}: "
        f"{result['trades']} trades, {result['amount']} yuan"
    )


@click.command()
@click.option("--period", required=True, help="Settlement period, YYYY-MM.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def revenue(ctx: click.Context, period: str, as_json: bool) -> None:
    """Revenue statements of a settlement period, per party, exact to the cent."""
    statements = run(
        with_store(
            settings_of(ctx), lambda engine: ProductReader(engine).revenue(LOCAL_ADMIN, period)
        )
    )
    data = [s.to_dict() for s in statements]
    if as_json:
        emit({"period": period, "statements": data}, True)
        return
    table = Table("role", "party", "trades", "total (yuan)", title=f"revenue {period}")
    for s in statements:
        table.add_row(s.role, s.party, str(len(s.lines)), str(s.total))
    table.add_row("", "all parties", "", str(sum((s.total for s in statements), Decimal(0))))
    console.print(table)
    console.print(
        "[dim]each trade: shares rounded down to the cent, the cents left go to the largest "
        "remainders (ties: owner, operator, processor); --json lists every line[/]"
    )


@click.command("reconcile")
@click.argument("ledger", type=FILE)
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--bundles",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Write the evidence bundle of each discrepancy's record into this directory.",
)
@click.pass_context
def reconcile_command(
    ctx: click.Context, ledger: Path, as_json: bool, bundles: Path | None
) -> None:
    """Compare the exchange's trade ledger with the products stream and the deliveries.

    The ledger is CSV (UTF-8 with or without BOM, or GB18030), XLSX or JSON, with English or
    Chinese column titles (交易编号, 产品编号, 买方统一社会信用代码, 数量, 单价, 金额, 成交时间;
    see docs/products.md). Every discrepancy is reported in one run. Exit code 0 when they
    agree, 7 when anything differs, 2 when the file cannot be read."""
    # Imported here: the reconciliation reads the ledger, the chain status and the evidence,
    # which no other verb of this module needs.
    from rich.progress import Progress

    from gateway.products.reconcile import read_exchange_ledger, reconcile

    settings = settings_of(ctx)

    async def act(g: Gateway) -> dict[str, Any]:
        with Progress(console=err_console, transient=True, disable=as_json) as bar:
            tasks: dict[str, Any] = {}

            def advance(what: str, count: int) -> None:
                if what not in tasks:
                    tasks[what] = bar.add_task(what, total=None)
                bar.advance(tasks[what], count)

            report = await reconcile(
                g.engine,
                read_exchange_ledger(ledger),
                algorithm=g.settings.hash_algorithm,
                progress=advance,
            )
        document = report.to_dict()
        if bundles is not None:
            bundles.mkdir(parents=True, exist_ok=True)
            for item in document["discrepancies"]:
                record_id = item["record_id"]
                if not record_id:
                    continue
                stream, seq = record_id.split("/")
                path = bundles / f"{stream}-{seq}.json"
                if not path.exists():
                    bundle = await g.evidence.bundle(stream, int(seq))
                    path.write_text(json.dumps(bundle, ensure_ascii=False, indent=2) + "\n")
                item["bundle"] = str(path)
        return document

    document = run(with_gateway(settings, act))
    if as_json:
        emit(document, True)
    else:
        summary = Table("exchange trades", "gateway trades", "deliveries", "discrepancies")
        summary.add_row(
            str(document["exchange_trades"]),
            str(document["gateway_trades"]),
            str(document["deliveries"]),
            str(len(document["discrepancies"])),
        )
        console.print(summary)
        if document["discrepancies"]:
            table = Table("kind", "trade", "detail", "evidence", title="discrepancies")
            for item in document["discrepancies"][:500]:
                # Text, not markup: a trade id or detail may hold "[x]" from the ledger.
                table.add_row(
                    Text(item["kind"]),
                    Text(item["trade_id"]),
                    Text(item["detail"]),
                    Text(item.get("bundle") or item["record_id"] or ""),
                )
            console.print(table)
            if len(document["discrepancies"]) > 500:
                console.print(f"... {len(document['discrepancies']) - 500} more (use --json)")
        else:
            console.print("[green]the exchange ledger, the products stream and usage agree[/]")
    if document["discrepancies"]:
        raise SystemExit(RECONCILE_EXIT)
