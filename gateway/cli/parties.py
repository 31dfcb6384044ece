"""Who may call: merchants, their agreements, OAuth clients and tokens.

Listings read the store alone; every change goes through the governance service.
"""

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
from gateway.cli.lazy import Lazy, LazyGroup
from gateway.cli.status_changes import StatusChange
from gateway.clock import local_date
from gateway.governance.statuses import AgreementStatus, MerchantStatus

__all__ = ["agreement", "client", "merchant", "token"]


@click.group()
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
            lambda g: g.governance.merchants.register_merchant(
                local_admin(), merchant_id, name, credit_code
            ),
        )
    )
    console.print(f"merchant [bold]{result.id}[/] registered ({result.credit_code})")


_MERCHANT_STATUS = StatusChange(
    "merchant",
    lambda gov: gov.merchants.set_merchant_status,
    "Mark a merchant {status} (effective on its next call).",
)
_MERCHANT_STATUS.command(merchant, "suspend", MerchantStatus.SUSPENDED)
_MERCHANT_STATUS.command(merchant, "reinstate", MerchantStatus.ACTIVE)


@merchant.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def merchant_list(ctx: click.Context, as_json: bool) -> None:
    from gateway.governance.listings import list_merchants

    merchants = read_store(settings_of(ctx), list_merchants)
    table = Table("id", "name", "credit code", "status")
    data = []
    for m in merchants:
        data.append(
            {"id": m.id, "name": m.name, "credit_code": m.credit_code, "status": m.status.value}
        )
        table.add_row(m.id, m.name, m.credit_code, m.status.value)
    emit(data, as_json, table)


@click.group(
    cls=LazyGroup,
    lazy={
        "authorize-subjects": Lazy(
            "gateway.cli.workflows:agreement_authorize_subjects",
            "Attach the data subjects' letter of authorization for one dataset.",
        )
    },
)
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
            lambda g: g.governance.agreements.grant_agreement(
                local_admin(),
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


_AGREEMENT_STATUS = StatusChange(
    "agreement",
    lambda gov: gov.agreements.set_agreement_status,
    "Mark an agreement {status}.",
)
_AGREEMENT_STATUS.command(agreement, "suspend", AgreementStatus.SUSPENDED)
_AGREEMENT_STATUS.command(agreement, "reinstate", AgreementStatus.ACTIVE)
_AGREEMENT_STATUS.command(agreement, "terminate", AgreementStatus.TERMINATED)


@agreement.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def agreement_list(ctx: click.Context, as_json: bool) -> None:
    from gateway.governance.listings import list_agreements

    agreements = read_store(settings_of(ctx), list_agreements)
    table = Table("id", "merchant", "scenario", "from", "until", "status")
    data = []
    for a in agreements:
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


@click.group()
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
    from gateway.authorization.roles import parse_role

    public_jwk = load_json(jwk) if jwk else None
    parsed_role = parse_role(role) if role else None
    issued = run(
        with_gateway(
            settings_of(ctx),
            lambda g: g.governance.clients.issue_client(
                local_admin(),
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


@click.group()
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
            settings_of(ctx),
            lambda g: g.governance.clients.revoke_token(local_admin(), jti, reason),
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
            lambda g: g.governance.clients.revoke_merchant_tokens(
                local_admin(), merchant_id, reason
            ),
        )
    )
    console.print(f"{count} token(s) of {merchant_id} revoked")
