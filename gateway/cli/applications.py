"""``dsgw application``: merchants' applications to use data in a scenario (ZW art. 20-21).

From submission through the operator's compliance check and the source departments'
reviews (with one extension each) to the agreement concluded from an approved application.
The verbs act as the local administrator, who may act for any role: a department's review
names the department. Listed in :data:`gateway.cli.commands.COMMANDS`, imported when it runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.table import Table

from gateway.cli.common import console, emit, load_json, run, settings_of, with_gateway
from gateway.cli.workdays import due_text
from gateway.cli.workflows import FILE, checked_reasons
from gateway.clock import local_date
from gateway.governance.actor import LOCAL_ADMIN
from gateway.workflows.applications import ApplicationStatus, UseApplication

__all__ = ["application"]


@click.group()
def application() -> None:
    """Merchants' applications to use data in a scenario (ZW art. 20-21)."""


def _application_table(found: list[UseApplication]) -> Table:
    table = Table("id", "merchant", "scenario", "status", "reviews", "agreement")
    for a in found:
        reviews = ", ".join(f"{r.department}: {r.to_dict()['label']}" for r in a.reviews)
        table.add_row(
            a.id, a.merchant_id, a.scenario_id, a.status.value, reviews, a.agreement_id or ""
        )
    return table


@application.command("submit")
@click.argument("file", type=FILE)
@click.option("--merchant", "merchant_id", required=True, help="The applying merchant.")
@click.pass_context
def application_submit(ctx: click.Context, file: Path, merchant_id: str) -> None:
    """Submit an application from JSON (scenario, requirements, purpose, period, safeguards)."""
    data = load_json(file)
    result = run(
        with_gateway(
            settings_of(ctx),
            lambda g: g.applications.submit(LOCAL_ADMIN, merchant_id, data),
        )
    )
    console.print(
        f"application [bold]{result.id}[/] submitted; compliance check due by "
        f"{due_text(result.compliance_due_at, result.provisional, settings_of(ctx).zone)}"
    )


@application.command("list")
@click.option("--status", type=click.Choice([s.value for s in ApplicationStatus]), default=None)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def application_list(ctx: click.Context, status: str | None, as_json: bool) -> None:
    """Use applications, oldest first (deemed approvals are recorded first)."""
    wanted = ApplicationStatus(status) if status else None
    found = run(with_gateway(settings_of(ctx), lambda g: g.applications.list(LOCAL_ADMIN, wanted)))
    emit([a.to_dict() for a in found], as_json, _application_table(found))


@application.command("show")
@click.argument("application_id")
@click.pass_context
def application_show(ctx: click.Context, application_id: str) -> None:
    """One application with its reviews and reasons, as JSON."""
    found = run(
        with_gateway(settings_of(ctx), lambda g: g.applications.get(LOCAL_ADMIN, application_id))
    )
    emit(found.to_dict(), True)


def _decision_options(command: Any) -> Any:
    command = click.option("--reason", "reasons", multiple=True, help="Repeatable.")(command)
    command = click.option("--reject", "reject", is_flag=True)(command)
    return click.option("--approve", "approve", is_flag=True)(command)


def _approve(approve: bool, reject: bool) -> bool:
    if approve == reject:
        raise click.UsageError("give exactly one of --approve and --reject")
    return approve


@application.command("check")
@click.argument("application_id")
@_decision_options
@click.pass_context
def application_check(
    ctx: click.Context, application_id: str, approve: bool, reject: bool, reasons: tuple[str, ...]
) -> None:
    """The operator's compliance check (5 working days): --approve, or --reject --reason."""
    ok = _approve(approve, reject)
    listed = checked_reasons(ok, reasons)
    result = run(
        with_gateway(
            settings_of(ctx),
            lambda g: g.applications.check_compliance(
                LOCAL_ADMIN, application_id, approve=ok, reasons=listed
            ),
        )
    )
    console.print(f"application [bold]{result.id}[/] is {result.status.value}")
    for review in result.reviews:
        due = due_text(review.due_at, review.provisional, settings_of(ctx).zone)
        console.print(f"  review by {review.department} due {due}")


@application.command("review")
@click.argument("application_id")
@click.option("--department", required=True, help="The reviewing source department.")
@_decision_options
@click.pass_context
def application_review(
    ctx: click.Context,
    application_id: str,
    department: str,
    approve: bool,
    reject: bool,
    reasons: tuple[str, ...],
) -> None:
    """A source department's review (10 working days): --approve, or --reject --reason."""
    ok = _approve(approve, reject)
    listed = checked_reasons(ok, reasons)
    result = run(
        with_gateway(
            settings_of(ctx),
            lambda g: g.applications.review(
                LOCAL_ADMIN, application_id, approve=ok, reasons=listed, department=department
            ),
        )
    )
    console.print(f"application [bold]{result.id}[/] is {result.status.value}")


@application.command("extend")
@click.argument("application_id")
@click.option("--department", required=True)
@click.option("--days", type=click.IntRange(1, 10), required=True, help="Working days.")
@click.option("--reason", required=True)
@click.pass_context
def application_extend(
    ctx: click.Context, application_id: str, department: str, days: int, reason: str
) -> None:
    """File a department's one extension of its review, before the deadline."""
    result = run(
        with_gateway(
            settings_of(ctx),
            lambda g: g.applications.extend_review(
                LOCAL_ADMIN,
                application_id,
                working_days=days,
                reason=reason,
                department=department,
            ),
        )
    )
    review = result.review_of(department)
    console.print(f"review by {department} now due {review.extended_until}")


@application.command("agree")
@click.argument("application_id")
@click.option("--shares", required=True, help="owner,operator,processor percentages.")
@click.option("--fees", required=True, help="The fees, as agreed.")
@click.option("--termination", required=True, help="The termination conditions.")
@click.option("--id", "agreement_id", default=None)
@click.pass_context
def application_agree(
    ctx: click.Context,
    application_id: str,
    shares: str,
    fees: str,
    termination: str,
    agreement_id: str | None,
) -> None:
    """Conclude the agreement of an approved application (scope: its requirement list)."""
    parts = tuple(shares.split(","))
    if len(parts) != 3:
        raise click.UsageError("--shares takes three percentages: owner,operator,processor")
    result = run(
        with_gateway(
            settings_of(ctx),
            lambda g: g.applications.conclude_agreement(
                LOCAL_ADMIN,
                application_id,
                shares=(parts[0], parts[1], parts[2]),
                fees=fees,
                termination=termination,
                agreement_id=agreement_id,
            ),
        )
    )
    console.print(
        f"agreement [bold]{result.id}[/] for {result.merchant_id} in scenario "
        f"{result.scenario_id}, {local_date(result.starts_at, settings_of(ctx).zone)} to "
        f"{local_date(result.ends_at, settings_of(ctx).zone)} (exclusive)"
    )
