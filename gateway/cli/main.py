"""``dsgw``: the command line, a thin shell over the same services as the HTTP API.

Admin verbs here act as the local administrator (whoever holds the data directory and the
keystore passphrase); staff elsewhere use the admin HTTP API with role credentials.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gateway.authorization.roles import parse_role
from gateway.cli.exits import ExitCode, HandledGroup, exit_code
from gateway.clock import SystemClock, local_date
from gateway.errors import (
    DsgwError,
    NotFoundError,
    ValidationError,
)
from gateway.governance.models import AgreementStatus, MerchantStatus, ScenarioStatus
from gateway.governance.service import LOCAL_ADMIN
from gateway.ledger.audit import AuditReport, audit_stream
from gateway.ledger.bundles import verify_bundle
from gateway.ledger.checkpoints import NoteVerifier, latest_checkpoint
from gateway.ledger.log import STREAMS, stream_size
from gateway.ledger.tree import MerkleTree
from gateway.logs import configure_logging
from gateway.runtime import Gateway, initialise, keystore_passphrase
from gateway.settings import Settings, check_workers, load_settings
from gateway.tabular import read_text_file
from keys.keystore import KeyPurpose, Keystore

__all__ = ["ExitCode", "cli", "exit_code", "main"]

T = TypeVar("T")
console = Console()
err_console = Console(stderr=True)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a verb's coroutine; its errors reach the one handler in :func:`main`."""
    return asyncio.run(coro)


def settings_of(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj
    return settings


async def with_gateway(settings: Settings, action: Callable[[Gateway], Awaitable[T]]) -> T:
    # Admin verbs work on the database; only `serve` and `demo` run the chain connection.
    gateway = await Gateway.open(dataclasses.replace(settings, chain="none"))
    try:
        return await action(gateway)
    finally:
        await gateway.close()


def emit(data: Any, as_json: bool, table: Table | None = None) -> None:
    if as_json or table is None:
        click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))
    else:
        console.print(table)


@click.group(cls=HandledGroup)
@click.option(
    "--config",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="TOML settings file (also DSGW_CONFIG).",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Data directory (default ./dsgw-data, also DSGW_DATA_DIR).",
)
@click.option(
    "--database-url",
    default=None,
    help="SQLAlchemy URL of the gateway store (default SQLite in the data dir).",
)
@click.option(
    "--debug", is_flag=True, help="On an error, also print its traceback (for bug reports)."
)
@click.version_option(package_name="dsgw")
@click.pass_context
def cli(
    ctx: click.Context,
    config: Path | None,
    data_dir: Path | None,
    database_url: str | None,
    debug: bool,
) -> None:
    """dsgw: the trusted data-space gateway.

    Exit codes: 0 done, 1 failed, 2 invalid input, 3 not found, 4 conflict or forbidden,
    5 audit findings, 6 not verified, 7 reconciliation discrepancies, 8 nobody named by a
    trace, 70 internal error (please report), 130 interrupted.
    """
    ctx.obj = load_settings(config, data_dir=data_dir, database_url=database_url)
    configure_logging(ctx.obj)


@cli.command()
@click.pass_context
def init(ctx: click.Context) -> None:
    """Create the data directory, encrypted keystore and database schema."""
    settings = settings_of(ctx)
    report = run(initialise(settings))
    console.print(f"data directory: {report.data_dir}")
    console.print(f"database:       {report.database_url}")
    console.print(
        f"keystore:       {settings.keystore_path}"
        + (" (created)" if report.created_keystore else " (kept)")
    )
    if report.created_passphrase_file:
        console.print(
            f"[yellow]keystore passphrase written to {report.created_passphrase_file} "
            "(mode 0600). In production, supply DSGW_KEYSTORE_PASSPHRASE from your secret "
            "store and delete this file.[/]"
        )


@cli.command()
@click.option("--host", default=None, help="Listen address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Listen port (default 8080).")
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="Worker processes (default: one per core when redis_url is set, else 1).",
)
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, workers: int | None) -> None:
    """Run the gateway until interrupted."""
    from gateway.cli.server import WorkerPool, serve_forever

    settings = _with(settings_of(ctx), host=host, port=port, workers=workers)
    check_workers(settings)
    pool = WorkerPool(settings, settings.worker_count) if settings.worker_count > 1 else None
    run(initialise(settings))
    if pool is None:
        run(serve_forever(settings))
    else:
        sys.exit(pool.run())


def _with(settings: Settings, **changes: Any) -> Settings:
    """``settings`` with the options the user gave on the command line."""
    return dataclasses.replace(settings, **{k: v for k, v in changes.items() if v is not None})


@cli.command()
@click.option("--port", type=int, default=8080, show_default=True)
@click.option(
    "--rows", type=int, default=2000, show_default=True, help="Synthetic enterprises to generate."
)
@click.option(
    "--serve/--no-serve", default=True, show_default=True, help="Keep serving after the demo calls."
)
@click.pass_context
def demo(ctx: click.Context, port: int, rows: int, serve: bool) -> None:
    """Set up a demo deployment, make allowed and refused calls, then keep serving."""
    from gateway.cli.demo import run_demo

    settings = _with(settings_of(ctx), port=port)
    run(run_demo(settings, rows=rows, keep_serving=serve, console=console))


@cli.command()
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True)
@click.option("--rows", type=int, default=10_000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def synth(out: Path, rows: int, seed: int) -> None:
    """Generate synthetic source data (SQLite registry + vehicles CSV) for development."""
    from connectors import synthetic

    out.mkdir(parents=True, exist_ok=True)
    synthetic.write_sqlite(
        out / "registry.sqlite3", {"enterprises": rows, "social_insurance": rows * 3}, seed=seed
    )
    synthetic.write_csv(out / "vehicles.csv", "vehicles", rows, seed=seed)
    console.print(f"wrote {out / 'registry.sqlite3'} and {out / 'vehicles.csv'}")


# -- catalog ------------------------------------------------------------------------------


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(read_text_file(path))
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{path}: cannot read JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise click.BadParameter(f"{path}: expected a JSON object")
    return data


@cli.group()
def dataset() -> None:
    """Catalog entries."""


@dataset.command("register")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--replace", is_flag=True, help="Replace an existing entry with the same id.")
@click.pass_context
def dataset_register(ctx: click.Context, file: Path, replace: bool) -> None:
    """Register a dataset from a JSON catalog entry."""
    data = _load_json(file)
    result = run(
        with_gateway(
            settings_of(ctx),
            lambda g: g.governance.register_dataset(LOCAL_ADMIN, data, replace_existing=replace),
        )
    )
    console.print(f"registered dataset [bold]{result.id}[/] ({result.name})")


@dataset.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def dataset_list(ctx: click.Context, as_json: bool) -> None:
    snapshot = run(with_gateway(settings_of(ctx), lambda g: g.governance.snapshot()))
    table = Table("id", "name", "provider", "open", "negative list", "sensitive fields")
    data = []
    for d in snapshot.datasets.values():
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


# -- scenarios ----------------------------------------------------------------------------


@cli.group()
def scenario() -> None:
    """Authorized scenarios."""


@scenario.command("create")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--publish", is_flag=True, help="Publish right after creating.")
@click.pass_context
def scenario_create(ctx: click.Context, file: Path, publish: bool) -> None:
    """Create a draft scenario from JSON."""
    data = _load_json(file)

    async def act(g: Gateway) -> tuple[Any, list[Any]]:
        created = await g.governance.create_scenario(LOCAL_ADMIN, data)
        warnings = await g.scenario_warnings(created)
        if publish:
            created = await g.governance.set_scenario_status(
                LOCAL_ADMIN, created.id, ScenarioStatus.PUBLISHED
            )
        return created, warnings

    result, warnings = run(with_gateway(settings_of(ctx), act))
    console.print(f"scenario [bold]{result.id}[/] is {result.status.value}")
    for warning in warnings:
        console.print(f"[yellow]warning:[/] {escape(warning.message)}")


def _scenario_transition(name: str, status: ScenarioStatus) -> None:
    @scenario.command(name)
    @click.argument("scenario_id")
    @click.option("--reason", default="", help="Why (kept in the governance log).")
    @click.pass_context
    def command(ctx: click.Context, scenario_id: str, reason: str) -> None:
        result = run(
            with_gateway(
                settings_of(ctx),
                lambda g: g.governance.set_scenario_status(
                    LOCAL_ADMIN, scenario_id, status, reason
                ),
            )
        )
        console.print(f"scenario [bold]{result.id}[/] is {result.status.value}")

    command.__doc__ = f"Mark a scenario {status.value}."


for _name, _status in (
    ("publish", ScenarioStatus.PUBLISHED),
    ("suspend", ScenarioStatus.SUSPENDED),
    ("retire", ScenarioStatus.RETIRED),
):
    _scenario_transition(_name, _status)


@scenario.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def scenario_list(ctx: click.Context, as_json: bool) -> None:
    snapshot = run(with_gateway(settings_of(ctx), lambda g: g.governance.snapshot()))
    table = Table("id", "name", "status", "datasets", "valid until")
    data = []
    for s in snapshot.scenarios.values():
        data.append(s.to_dict())
        table.add_row(
            s.id,
            s.name,
            s.status.value,
            ", ".join(g.dataset_id for g in s.grants),
            local_date(s.valid_until, settings_of(ctx).zone).isoformat(),
        )
    emit(data, as_json, table)


# -- merchants, agreements, clients, tokens ------------------------------------------------


@cli.group()
def merchant() -> None:
    """Data merchants."""


@merchant.command("register")
@click.argument("merchant_id")
@click.option("--name", required=True)
@click.option("--credit-code", required=True, help="Unified social credit code (18 chars).")
@click.pass_context
def merchant_register(ctx: click.Context, merchant_id: str, name: str, credit_code: str) -> None:
    result = run(
        with_gateway(
            settings_of(ctx),
            lambda g: g.governance.register_merchant(LOCAL_ADMIN, merchant_id, name, credit_code),
        )
    )
    console.print(f"merchant [bold]{result.id}[/] registered ({result.credit_code})")


def _merchant_transition(name: str, status: MerchantStatus) -> None:
    @merchant.command(name)
    @click.argument("merchant_id")
    @click.option("--reason", default="")
    @click.pass_context
    def command(ctx: click.Context, merchant_id: str, reason: str) -> None:
        result = run(
            with_gateway(
                settings_of(ctx),
                lambda g: g.governance.set_merchant_status(
                    LOCAL_ADMIN, merchant_id, status, reason
                ),
            )
        )
        console.print(f"merchant [bold]{result.id}[/] is {result.status.value}")

    command.__doc__ = f"Mark a merchant {status.value} (effective on its next call)."


_merchant_transition("suspend", MerchantStatus.SUSPENDED)
_merchant_transition("reinstate", MerchantStatus.ACTIVE)


@merchant.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def merchant_list(ctx: click.Context, as_json: bool) -> None:
    snapshot = run(with_gateway(settings_of(ctx), lambda g: g.governance.snapshot()))
    table = Table("id", "name", "credit code", "status")
    data = []
    for m in snapshot.merchants.values():
        data.append(
            {"id": m.id, "name": m.name, "credit_code": m.credit_code, "status": m.status.value}
        )
        table.add_row(m.id, m.name, m.credit_code, m.status.value)
    emit(data, as_json, table)


@cli.group()
def agreement() -> None:
    """Authorization agreements between a merchant and a scenario."""


@agreement.command("grant")
@click.option("--merchant", "merchant_id", required=True)
@click.option("--scenario", "scenario_id", required=True)
@click.option("--start", required=True, help="YYYY-MM-DD or RFC 3339.")
@click.option("--end", required=True, help="YYYY-MM-DD or RFC 3339; at most 3 years on.")
@click.option(
    "--shares",
    required=True,
    help="Revenue split owner,operator,processor in percent, e.g. 40,30,30.",
)
@click.option("--id", "agreement_id", default=None)
@click.pass_context
def agreement_grant(
    ctx: click.Context,
    merchant_id: str,
    scenario_id: str,
    start: str,
    end: str,
    shares: str,
    agreement_id: str | None,
) -> None:
    parts = shares.split(",")
    if len(parts) != 3:
        raise click.BadParameter("give three percentages: owner,operator,processor")
    result = run(
        with_gateway(
            settings_of(ctx),
            lambda g: g.governance.grant_agreement(
                LOCAL_ADMIN,
                merchant_id=merchant_id,
                scenario_id=scenario_id,
                starts_at=start,
                ends_at=end,
                shares=(parts[0], parts[1], parts[2]),
                agreement_id=agreement_id,
            ),
        )
    )
    console.print(
        f"agreement [bold]{result.id}[/] granted until "
        f"{local_date(result.ends_at, settings_of(ctx).zone)} (exclusive)"
    )


def _agreement_transition(name: str, status: AgreementStatus) -> None:
    @agreement.command(name)
    @click.argument("agreement_id")
    @click.option("--reason", default="")
    @click.pass_context
    def command(ctx: click.Context, agreement_id: str, reason: str) -> None:
        run(
            with_gateway(
                settings_of(ctx),
                lambda g: g.governance.set_agreement_status(
                    LOCAL_ADMIN, agreement_id, status, reason
                ),
            )
        )
        console.print(f"agreement [bold]{agreement_id}[/] is {status.value}")

    command.__doc__ = f"Mark an agreement {status.value}."


_agreement_transition("suspend", AgreementStatus.SUSPENDED)
_agreement_transition("reinstate", AgreementStatus.ACTIVE)
_agreement_transition("terminate", AgreementStatus.TERMINATED)


@agreement.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def agreement_list(ctx: click.Context, as_json: bool) -> None:
    snapshot = run(with_gateway(settings_of(ctx), lambda g: g.governance.snapshot()))
    table = Table("id", "merchant", "scenario", "from", "until", "status")
    data = []
    for a in snapshot.agreements.values():
        data.append(
            {
                "id": a.id,
                "merchant_id": a.merchant_id,
                "scenario_id": a.scenario_id,
                "starts_at": a.starts_at.isoformat(),
                "ends_at": a.ends_at.isoformat(),
                "status": a.status.value,
            }
        )
        table.add_row(
            a.id,
            a.merchant_id,
            a.scenario_id,
            local_date(a.starts_at, settings_of(ctx).zone).isoformat(),
            local_date(a.ends_at, settings_of(ctx).zone).isoformat(),
            a.status.value,
        )
    emit(data, as_json, table)


@cli.group()
def client() -> None:
    """OAuth client credentials."""


@client.command("issue")
@click.option("--merchant", "merchant_id", default=None, help="Merchant the client acts for.")
@click.option(
    "--role",
    default=None,
    help="Staff role instead: operator, authority, supervisor, source, exchange.",
)
@click.option(
    "--jwk",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="Public JWK for private_key_jwt authentication.",
)
@click.option("--no-secret", is_flag=True, help="Key-only client (needs --jwk).")
@click.option(
    "--department",
    default=None,
    help="With --role source: the department (the datasets' provider) it reviews for.",
)
@click.option(
    "--buyer",
    "buyer_code",
    default=None,
    help="A buyer's client instead, by its credit code: product deliveries it bought.",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def client_issue(
    ctx: click.Context,
    merchant_id: str | None,
    role: str | None,
    jwk: Path | None,
    no_secret: bool,
    department: str | None,
    buyer_code: str | None,
    as_json: bool,
) -> None:
    """Issue client credentials; the secret is shown once and stored only as a hash."""
    public_jwk = _load_json(jwk) if jwk else None
    parsed_role = parse_role(role) if role else None
    issued = run(
        with_gateway(
            settings_of(ctx),
            lambda g: g.governance.issue_client(
                LOCAL_ADMIN,
                merchant_id=merchant_id,
                role=parsed_role,
                public_jwk=public_jwk,
                with_secret=not no_secret,
                department=department,
                buyer_code=buyer_code,
            ),
        )
    )
    data = {
        "client_id": issued.client.client_id,
        "client_secret": issued.secret,
        "merchant_id": issued.client.merchant_id,
        "role": issued.client.role,
    }
    if as_json:
        emit(data, True)
        return
    console.print(f"client_id:     {issued.client.client_id}")
    if issued.secret:
        console.print(f"client_secret: {issued.secret}")
        console.print("[yellow]Store the secret now: it is not kept and cannot be shown again.[/]")


@cli.group()
def token() -> None:
    """Access tokens."""


@token.command("revoke")
@click.argument("jti")
@click.option("--reason", required=True)
@click.pass_context
def token_revoke(ctx: click.Context, jti: str, reason: str) -> None:
    """Revoke one token by its id (effective on the next call)."""
    run(
        with_gateway(
            settings_of(ctx), lambda g: g.governance.revoke_token(LOCAL_ADMIN, jti, reason)
        )
    )
    console.print(f"token {jti} revoked")


@token.command("revoke-merchant")
@click.argument("merchant_id")
@click.option("--reason", required=True)
@click.pass_context
def token_revoke_merchant(ctx: click.Context, merchant_id: str, reason: str) -> None:
    """Revoke every unexpired token of a merchant."""
    count = run(
        with_gateway(
            settings_of(ctx),
            lambda g: g.governance.revoke_merchant_tokens(LOCAL_ADMIN, merchant_id, reason),
        )
    )
    console.print(f"{count} token(s) of {merchant_id} revoked")


@cli.command()
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
        with_gateway(
            settings_of(ctx),
            lambda g: read_entries(g.engine, stream, merchant_id=merchant_id, limit=limit),
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


@cli.command()
@click.option(
    "--stream", type=click.Choice(list(STREAMS)), default=None, help="One stream (default: all)."
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def checkpoint(ctx: click.Context, stream: str | None, as_json: bool) -> None:
    """Fold the log into its Merkle trees and sign a checkpoint of every stream that grew."""

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


@cli.command()
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

    settings = settings_of(ctx)
    names = [stream] if stream else list(STREAMS)

    async def act(g: Gateway) -> list[AuditReport]:
        # Every checkpoint key, retired ones too: each checkpoint names the key that signed it.
        keys = g.checkpoint_keys()
        evidence = {}
        if use_chain or rpc:
            async with chain_reader(
                settings.chain,
                state_dir=settings.data_dir / "chain",
                rpc_url=rpc or settings.chain_rpc_url,
            ) as backend:
                registry = await registry_for_audit(
                    g.engine, backend, contract or settings.chain_contract
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
                table.add_row(f"{f.stream}/{f.seq}", f.kind, f.detail)
            console.print(table)
        else:
            what = (
                "record, link, checkpoint and anchor" if chained else "record, link and checkpoint"
            )
            console.print(f"[green]every {what} verifies[/]")
    if findings:
        sys.exit(ExitCode.AUDIT_FINDINGS)


@cli.command()
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

    async def act() -> dict[str, Any]:
        # No anchoring worker here, but the chain settings stay: an anchor that became
        # final after the store last heard of it is confirmed on chain (gateway.chain.lookup).
        gateway = await Gateway.open(settings_of(ctx), anchoring=False)
        try:
            return await gateway.bundle(stream, seq)
        finally:
            await gateway.close()

    document = run(act())
    text = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        err_console.print(f"bundle of {stream}/{seq} written to {out}")


@cli.command()
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
        console.print(f"[yellow]note[/] {warning}")
    console.print("[bold green]verified[/]")


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Log sizes, newest checkpoints and the anchoring backlog, from the database."""
    from gateway.chain.status import anchoring_status

    async def act(g: Gateway) -> dict[str, Any]:
        sizes = {name: await stream_size(g.engine, name) for name in STREAMS}
        anchoring = await anchoring_status(g.engine)
        return {"chain": g.settings.chain, "records": sizes, "anchoring": anchoring.to_dict()}

    report = run(with_gateway(settings_of(ctx), act))
    report["chain"] = settings_of(ctx).chain
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


@cli.command()
@click.option("--stream", type=click.Choice(list(STREAMS)), default=None)
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def anchors(ctx: click.Context, stream: str | None, limit: int, as_json: bool) -> None:
    """The newest anchors: stream, size, root, block, transaction, confirmations, status."""
    from sqlalchemy import select

    from gateway.db.schema import AnchorRow

    async def act(g: Gateway) -> list[dict[str, Any]]:
        query = select(AnchorRow.__table__).order_by(AnchorRow.id.desc()).limit(limit)
        if stream:
            query = query.where(AnchorRow.stream == stream)
        async with g.engine.connect() as conn:
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

    data = run(with_gateway(settings_of(ctx), act))
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


@cli.group()
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

    async def act(g: Gateway) -> dict[str, object]:
        tree = MerkleTree(g.engine, stream, algorithm=g.settings.hash_algorithm)
        at = size or (await latest_checkpoint(g.engine, stream)).size
        return {"stream": stream, **(await tree.inclusion_proof(index, at)).to_dict()}

    emit(run(with_gateway(settings_of(ctx), act)), True)


@proof.command("consistency")
@click.argument("stream", type=click.Choice(list(STREAMS)))
@click.argument("first", type=click.IntRange(min=1))
@click.argument("second", type=click.IntRange(min=1))
@click.pass_context
def proof_consistency(ctx: click.Context, stream: str, first: int, second: int) -> None:
    """Print the consistency proof between tree sizes FIRST and SECOND as JSON."""

    async def act(g: Gateway) -> dict[str, object]:
        tree = MerkleTree(g.engine, stream, algorithm=g.settings.hash_algorithm)
        return {"stream": stream, **(await tree.consistency_proof(first, second)).to_dict()}

    emit(run(with_gateway(settings_of(ctx), act)), True)


@cli.group()
def keys() -> None:
    """Keystore keys."""


@keys.command("rotate")
@click.argument("purpose", type=click.Choice(["token-signing", "checkpoint"]))
@click.pass_context
def keys_rotate(ctx: click.Context, purpose: str) -> None:
    """Make a new active key; the old one keeps verifying until its last token expires."""
    from keys.keystore import Keystore

    settings = settings_of(ctx)

    async def act() -> Any:
        store = Keystore.open(settings.keystore_path, keystore_passphrase(settings))
        return store.rotate(KeyPurpose(purpose), now=SystemClock().now())

    info = run(act())
    console.print(f"new {purpose} key {info.kid} is active")


@keys.command("verifiers")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def keys_verifiers(ctx: click.Context, as_json: bool) -> None:
    """The checkpoint verifier keys (C2SP), active first, then every retired one.

    Checkpoint keys are never pruned: after a rotation, older checkpoints and bundles
    still name the retired key that signed them, and `dsgw verify --key` accepts it.
    """
    settings = settings_of(ctx)

    async def act() -> list[dict[str, Any]]:
        store = Keystore.open(settings.keystore_path, keystore_passphrase(settings))
        out = []
        for info in store.keys_of(KeyPurpose.CHECKPOINT):
            verifier = NoteVerifier(settings.deployment, store.public_key(info.kid))
            out.append(
                {
                    "kid": info.kid,
                    "key_id": verifier.key_id.hex(),
                    "verifier_key": verifier.to_text(),
                    "created_at": info.created_at.isoformat(),
                    "retired_at": info.retired_at.isoformat() if info.retired_at else None,
                }
            )
        return out

    data = run(act())
    if as_json:
        emit(data, True)
        return
    for item in data:
        state = f"retired {item['retired_at'][:19]}" if item["retired_at"] else "active"
        click.echo(f"{item['verifier_key']}  ({state})")


@keys.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def keys_list(ctx: click.Context, as_json: bool) -> None:
    settings = settings_of(ctx)

    async def act() -> Any:
        return Keystore.open(settings.keystore_path, keystore_passphrase(settings)).entries()

    entries = run(act())
    table = Table("kid", "purpose", "algorithm", "created", "retired")
    data = []
    for e in entries:
        data.append(
            {
                "kid": e.kid,
                "purpose": str(e.purpose),
                "algorithm": e.algorithm,
                "created_at": e.created_at.isoformat(),
                "retired_at": e.retired_at.isoformat() if e.retired_at else None,
            }
        )
        table.add_row(
            e.kid,
            str(e.purpose),
            e.algorithm,
            e.created_at.isoformat()[:19],
            e.retired_at.isoformat()[:19] if e.retired_at else "",
        )
    emit(data, as_json, table)


def main() -> None:
    """The ``dsgw`` entry point: every outcome is a message and an :class:`ExitCode`."""
    cli.main(prog_name="dsgw")  # a HandledGroup: exits through run_cli


# The workflow, product and supervision verbs register themselves on the groups above.
from gateway.cli import alerts as _alerts  # noqa: E402, F401
from gateway.cli import chain as _chain  # noqa: E402, F401
from gateway.cli import measures as _measures  # noqa: E402, F401
from gateway.cli import objections as _objections  # noqa: E402, F401
from gateway.cli import privacy as _privacy  # noqa: E402, F401
from gateway.cli import products as _products  # noqa: E402, F401
from gateway.cli import reports as _reports  # noqa: E402, F401
from gateway.cli import secrets as _secrets  # noqa: E402, F401
from gateway.cli import trace as _trace  # noqa: E402, F401
from gateway.cli import workdays as _workdays  # noqa: E402, F401
from gateway.cli import workflows as _workflows  # noqa: E402, F401
