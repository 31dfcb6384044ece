"""``dsgw`` verbs of the authorization workflows: the exclusion list, merchant onboarding,
scenario plans and evaluations, subjects' authorizations of an agreement, and tasks (use
applications are in :mod:`gateway.cli.applications`).

They act as the local administrator, who may act for any role: for a source department's
review name the department, for a merchant's application name the merchant. Listed in
:data:`gateway.cli.commands.COMMANDS` (``scenario plan|evaluate`` and ``agreement
authorize-subjects`` in their groups' lazy tables) and imported when one of them runs.
``exclusions check`` and ``onboarding list`` read through :class:`WorkflowReader` over the
engine and the working-day calendar alone (:func:`~gateway.cli.common.with_store`);
``tasks`` opens the gateway, because it first records the deadlines that passed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table

from gateway.authorization.roles import parse_role
from gateway.cli.common import (
    console,
    emit,
    load_json,
    run,
    settings_of,
    with_gateway,
    with_store,
    working_calendar,
)
from gateway.cli.workdays import due_text
from gateway.clock import SystemClock
from gateway.errors import ValidationError
from gateway.governance.actor import LOCAL_ADMIN, Actor
from gateway.workflows.exclusions import parse_exclusions_file
from gateway.workflows.onboarding import OnboardingApplication, OnboardingStatus
from gateway.workflows.reading import WorkflowReader

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from gateway.runtime import Gateway

__all__ = [
    "FILE",
    "agreement_authorize_subjects",
    "checked_reasons",
    "exclusions",
    "onboarding",
    "scenario_evaluate",
    "scenario_plan",
    "tasks",
]

FILE = click.Path(path_type=Path, dir_okay=False, exists=True)


def _digest(file: Path | None, sha256: str | None) -> str:
    """The SHA-256 of a document: computed from the file, or given."""
    if (file is None) == (sha256 is None):
        raise click.UsageError("give the document as --file PATH or its --sha256, not both")
    if file is not None:
        return hashlib.sha256(file.read_bytes()).hexdigest()
    assert sha256 is not None
    return sha256


def checked_reasons(approve: bool, reasons: tuple[str, ...]) -> list[str]:
    """The ``--reason`` options of a decision: they go with a rejection only."""
    if approve and reasons:
        raise click.UsageError("--reason goes with --reject")
    return list(reasons)


# -- exclusion list -----------------------------------------------------------------------


@click.group()
def exclusions() -> None:
    """Entities that may not become merchants (CS23 art. 18)."""


@exclusions.command("import")
@click.argument("file", type=FILE)
@click.option("--source", default="", help="Where the list comes from (kept in the log).")
@click.pass_context
def exclusions_import(ctx: click.Context, file: Path, source: str) -> None:
    """Import a CSV or XLSX: credit_code,name,category,source,listed_on[,lifted_on] (or
    统一社会信用代码,名称,类别,来源,列入日期[,移出日期]; UTF-8, GB18030 or XLSX)."""

    async def act(g: Gateway) -> tuple[int, Any]:
        entries = parse_exclusions_file(file)  # a bad line refuses the whole file
        report = await g.workflows.import_exclusions(
            LOCAL_ADMIN, entries, source_name=source or file.name
        )
        return len(entries), report

    count, report = run(with_gateway(settings_of(ctx), act))
    console.print(
        f"{count} entries: {report.added} added, {report.updated} updated, "
        f"{report.unchanged} unchanged"
    )


@exclusions.command("check")
@click.argument("credit_code")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def exclusions_check(ctx: click.Context, credit_code: str, as_json: bool) -> None:
    """Entries in force today for a unified social credit code."""

    settings = settings_of(ctx)

    async def act(engine: AsyncEngine) -> list[dict[str, Any]]:
        workflows = WorkflowReader(engine, await working_calendar(settings, engine))
        found = await workflows.exclusions_of(credit_code, SystemClock().now().date())
        return [e.to_dict() for e in found]

    data = run(with_store(settings, act))
    table = Table("category", "name", "source", "listed on")
    for e in data:
        table.add_row(e["category"], e["name"], e["source"], e["listed_on"])
    emit(data, as_json, table)


# -- merchant onboarding ------------------------------------------------------------------


@click.group()
def onboarding() -> None:
    """Companies applying to become merchants (answered within 5 working days)."""


def _onboarding_row(a: OnboardingApplication, now: dt.datetime) -> list[str]:
    return [
        a.id,
        a.merchant_id,
        a.name,
        a.status.value,
        due_text(a.due_at, a.provisional),
        "overdue" if a.overdue(now) else "",
        "EXCLUDED" if a.exclusion_hits else "",
    ]


@onboarding.command("submit")
@click.argument("file", type=FILE)
@click.pass_context
def onboarding_submit(ctx: click.Context, file: Path) -> None:
    """Record an application from JSON (merchant_id, name, credit_code, licence, contacts)."""
    data = load_json(file)
    application = run(
        with_gateway(settings_of(ctx), lambda g: g.workflows.submit_onboarding(LOCAL_ADMIN, data))
    )
    console.print(
        f"application [bold]{application.id}[/] submitted; the operator answers by "
        f"{due_text(application.due_at, application.provisional, settings_of(ctx).zone)}"
    )
    if application.exclusion_hits:
        console.print("[yellow]the company is on the exclusion list[/]")


@onboarding.command("list")
@click.option("--status", type=click.Choice([s.value for s in OnboardingStatus]), default=None)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def onboarding_list(ctx: click.Context, status: str | None, as_json: bool) -> None:
    """Onboarding applications, oldest first."""

    settings = settings_of(ctx)

    async def act(engine: AsyncEngine) -> tuple[list[OnboardingApplication], dt.datetime]:
        workflows = WorkflowReader(engine, await working_calendar(settings, engine))
        wanted = OnboardingStatus(status) if status else None
        return await workflows.list_onboarding(LOCAL_ADMIN, wanted), SystemClock().now()

    found, now = run(with_store(settings, act))
    table = Table("id", "merchant", "name", "status", "due", "", "")
    for a in found:
        table.add_row(*_onboarding_row(a, now))
    emit([a.to_dict(now=now) for a in found], as_json, table)


def _onboarding_decision(approve: bool) -> None:
    name = "approve" if approve else "reject"

    @onboarding.command(name)
    @click.argument("application_id")
    @click.option("--reason", "reasons", multiple=True, help="A reason (repeat for several).")
    @click.pass_context
    def command(ctx: click.Context, application_id: str, reasons: tuple[str, ...]) -> None:
        listed = checked_reasons(approve, reasons)
        application, merchant = run(
            with_gateway(
                settings_of(ctx),
                lambda g: g.workflows.decide_onboarding(
                    LOCAL_ADMIN, application_id, approve=approve, reasons=listed
                ),
            )
        )
        console.print(f"application [bold]{application.id}[/] {application.status.value}")
        if merchant is not None:
            console.print(
                f"merchant [bold]{merchant.id}[/] registered; issue its credentials with "
                f"`dsgw client issue --merchant {merchant.id}`"
            )

    command.__doc__ = (
        "Approve an application: the company becomes a merchant."
        if approve
        else "Reject an application, with its reasons (--reason, at least one)."
    )


_onboarding_decision(True)
_onboarding_decision(False)


# -- scenario plan and evaluation ---------------------------------------------------------


@click.command("plan")
@click.argument("scenario_id")
@click.option("--title", required=True)
@click.option("--reference", required=True, help="The plan's document number.")
@click.option("--file", type=FILE, default=None, help="The plan document (hashed, not stored).")
@click.option("--sha256", default=None, help="The document's SHA-256, instead of --file.")
@click.pass_context
def scenario_plan(
    ctx: click.Context,
    scenario_id: str,
    title: str,
    reference: str,
    file: Path | None,
    sha256: str | None,
) -> None:
    """Record a draft scenario's plan (one scenario, one plan, one evaluation)."""
    plan = {"title": title, "reference": reference, "sha256": _digest(file, sha256)}
    run(
        with_gateway(
            settings_of(ctx),
            lambda g: g.governance.scenarios.record_scenario_plan(LOCAL_ADMIN, scenario_id, plan),
        )
    )
    console.print(f"plan of scenario [bold]{scenario_id}[/] recorded ({plan['sha256'][:16]}...)")


@click.command("evaluate")
@click.argument("scenario_id")
@click.option("--evaluator", required=True)
@click.option("--conclusion", type=click.Choice(["pass", "fail"]), required=True)
@click.option("--date", "evaluated_on", required=True, help="YYYY-MM-DD")
@click.option("--title", required=True, help="The evaluation report's title.")
@click.option("--reference", required=True, help="The report's document number.")
@click.option("--file", type=FILE, default=None, help="The report (hashed, not stored).")
@click.option("--sha256", default=None, help="The report's SHA-256, instead of --file.")
@click.pass_context
def scenario_evaluate(
    ctx: click.Context,
    scenario_id: str,
    evaluator: str,
    conclusion: str,
    evaluated_on: str,
    title: str,
    reference: str,
    file: Path | None,
    sha256: str | None,
) -> None:
    """Record a draft scenario's evaluation; only a passing one allows publication."""
    evaluation = {
        "evaluator": evaluator,
        "conclusion": conclusion,
        "evaluated_on": evaluated_on,
        "report": {"title": title, "reference": reference, "sha256": _digest(file, sha256)},
    }
    run(
        with_gateway(
            settings_of(ctx),
            lambda g: g.governance.scenarios.record_scenario_evaluation(
                LOCAL_ADMIN, scenario_id, evaluation
            ),
        )
    )
    console.print(f"evaluation of scenario [bold]{scenario_id}[/] recorded: {conclusion}")


@click.command("authorize-subjects")
@click.argument("agreement_id")
@click.option("--dataset", required=True)
@click.option("--title", required=True, help="The letter of authorization's title.")
@click.option("--reference", required=True)
@click.option("--file", type=FILE, default=None, help="The letter (hashed, not stored).")
@click.option("--sha256", default=None, help="The letter's SHA-256, instead of --file.")
@click.pass_context
def agreement_authorize_subjects(
    ctx: click.Context,
    agreement_id: str,
    dataset: str,
    title: str,
    reference: str,
    file: Path | None,
    sha256: str | None,
) -> None:
    """Attach the data subjects' letter of authorization for one dataset."""
    letter = {
        "dataset": dataset,
        "letter": {"title": title, "reference": reference, "sha256": _digest(file, sha256)},
    }
    result = run(
        with_gateway(
            settings_of(ctx),
            lambda g: g.applications.add_subject_authorization(LOCAL_ADMIN, agreement_id, letter),
        )
    )
    console.print(
        f"agreement [bold]{result.id}[/]: subjects authorized for "
        f"{', '.join(sorted(result.subject_authorized))}"
    )


# -- tasks ----------------------------------------------------------------------------------


@click.command()
@click.option("--role", default=None, help="Only this role's tasks (default: everyone's).")
@click.option(
    "--department", default=None, help="With --role source or district: its department or district."
)
@click.option("--merchant", "merchant_id", default=None, help="Only this merchant's tasks.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def tasks(
    ctx: click.Context,
    role: str | None,
    department: str | None,
    merchant_id: str | None,
    as_json: bool,
) -> None:
    """Pending tasks and their deadlines, soonest first."""
    # Imported here: the task list reads every workflow, which no other verb here needs.
    from gateway.workflows.tasks import tasks_for

    if role and merchant_id:
        raise click.UsageError("give --role or --merchant, not both")
    actor = LOCAL_ADMIN
    if role:
        try:
            actor = Actor("cli", parse_role(role), department=department)
        except ValidationError as exc:
            raise click.UsageError(exc.detail) from None
    elif merchant_id:
        actor = Actor("cli", merchant_id=merchant_id)

    async def act(g: Gateway) -> list[dict[str, Any]]:
        await g.applications.sweep()
        found = await tasks_for(actor, g.engine, g.workflows, g.applications, g.clock.now())
        return [t.to_dict() for t in found]

    data = run(with_gateway(settings_of(ctx), act))
    table = Table("due", "", "who", "task", "id")
    for t in data:
        table.add_row(
            due_text(
                dt.datetime.fromisoformat(t["due_at"]) if t["due_at"] else None,
                t["provisional"],
                settings_of(ctx).zone,
            ),
            "OVERDUE" if t["overdue"] else "",
            t["role"],
            t["title"],
            t["subject"],
        )
    emit(data, as_json, table)
