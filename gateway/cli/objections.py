"""``dsgw objection`` and ``dsgw rating``: data-quality objections and the yearly ratings.

They act as the local administrator, who may act for any role: the operator files
objections (or records a merchant's, received on paper, with ``--merchant``); a department's
answer is recorded for the department the objection was routed to; a rating received on
paper names its rater. Listed in :data:`gateway.cli.commands.COMMANDS` and imported
when one of them runs. ``objection show``, ``rating list`` and ``rating forms`` read over
the engine alone (:func:`~gateway.cli.common.with_store`); ``objection list`` opens the
gateway, because it first records the objections that became overdue.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table

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
from gateway.evaluation.models import RaterKind, Rating, RatingForm
from gateway.evaluation.service import RatingReader
from gateway.governance.actor import LOCAL_ADMIN
from gateway.objections.models import AnswerKind, Objection, ObjectionStatus, View
from gateway.objections.reading import ObjectionLookup

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from gateway.runtime import Gateway

__all__ = ["objection", "rating"]

FILE = click.Path(path_type=Path, dir_okay=False, exists=True)


# -- objections ---------------------------------------------------------------------------


@click.group()
def objection() -> None:
    """Data-quality objections (ZW art. 11): filed, routed to the source department,
    answered within working days, never deemed answered."""


def _row(o: Objection, now: dt.datetime) -> list[str]:
    return [
        o.id,
        o.dataset_id + "." + o.field,
        o.answering_party,
        o.filer_kind.value + (f" {o.merchant_id}" if o.merchant_id else ""),
        o.status.value,
        due_text(o.due_at, o.provisional),
        "OVERDUE" if o.overdue(now) else ("late" if o.in_time is False else ""),
    ]


@objection.command("file")
@click.argument("file", type=FILE)
@click.option(
    "--merchant",
    "merchant_id",
    default=None,
    help="Record this merchant's objection (received on paper); its record is checked.",
)
@click.pass_context
def objection_file(ctx: click.Context, file: Path, merchant_id: str | None) -> None:
    """File an objection from JSON: record (calls/N), dataset, field, subject_key,
    category (wrong|stale|missing|other), description, evidence, documents. Without
    --merchant the operator files it."""
    data = load_json(file)
    found = run(
        with_gateway(
            settings_of(ctx),
            lambda g: g.objections.file(LOCAL_ADMIN, data, merchant_id=merchant_id),
        )
    )
    console.print(
        f"objection [bold]{found.id}[/] routed to {found.answering_party}; answer due by "
        f"{due_text(found.due_at, found.provisional, settings_of(ctx).zone)}"
        + ("" if found.subject_checked or not found.subject_key else " (subject not checked)")
    )


@objection.command("list")
@click.option("--status", type=click.Choice([s.value for s in ObjectionStatus]), default=None)
@click.option("--overdue", is_flag=True, help="Only those unanswered past their deadline.")
@click.option("--department", default=None)
@click.option("--dataset", "dataset_id", default=None)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def objection_list(
    ctx: click.Context,
    status: str | None,
    overdue: bool,
    department: str | None,
    dataset_id: str | None,
    as_json: bool,
) -> None:
    """Objections, oldest first (overdue ones are recorded first)."""

    async def act(g: Gateway) -> tuple[list[Objection], dt.datetime]:
        found = await g.objections.list(
            LOCAL_ADMIN,
            status=ObjectionStatus(status) if status else None,
            overdue=overdue,
            department=department,
            dataset_id=dataset_id,
        )
        return [o for o, _view in found], g.clock.now()

    found, now = run(with_gateway(settings_of(ctx), act))
    table = Table("id", "dataset.field", "answered by", "filer", "status", "due", "")
    for o in found:
        table.add_row(*_row(o, now))
    emit([o.to_dict(View.STAFF, now=now) for o in found], as_json, table)


@objection.command("show")
@click.argument("objection_id")
@click.pass_context
def objection_show(ctx: click.Context, objection_id: str) -> None:
    """One objection with its answer, as JSON."""

    settings = settings_of(ctx)

    async def act(engine: AsyncEngine) -> dict[str, Any]:
        objections = ObjectionLookup(engine, await working_calendar(settings, engine))
        found, view = await objections.get(LOCAL_ADMIN, objection_id)
        return found.to_dict(view, now=SystemClock().now())

    emit(run(with_store(settings, act)), True)


@objection.command("answer")
@click.argument("objection_id")
@click.option("--answer", "kind", type=click.Choice([k.value for k in AnswerKind]), required=True)
@click.option("--reason", "reasons", multiple=True, help="Required to reject; repeatable.")
@click.option("--version", default=None, help="With corrected: the dataset version fixed.")
@click.option("--fixed-on", default=None, help="With corrected: the date of the fix.")
@click.option("--department", default=None, help="The department answering (checked).")
@click.pass_context
def objection_answer(
    ctx: click.Context,
    objection_id: str,
    kind: str,
    reasons: tuple[str, ...],
    version: str | None,
    fixed_on: str | None,
    department: str | None,
) -> None:
    """Record the department's answer: accepted, rejected (--reason) or corrected
    (--version and/or --fixed-on YYYY-MM-DD)."""
    data: dict[str, Any] = {"answer": kind}
    if reasons:
        data["reasons"] = list(reasons)
    if version is not None:
        data["version"] = version
    if fixed_on is not None:
        data["fixed_on"] = fixed_on
    found = run(
        with_gateway(
            settings_of(ctx),
            lambda g: g.objections.answer(LOCAL_ADMIN, objection_id, data, department=department),
        )
    )
    timing = "in time" if found.in_time else "late"
    console.print(f"objection [bold]{found.id}[/] {found.status.value} ({timing})")


@objection.command("acknowledge")
@click.argument("objection_id")
@click.pass_context
def objection_acknowledge(ctx: click.Context, objection_id: str) -> None:
    """The filer has read the answer."""
    found = run(
        with_gateway(
            settings_of(ctx), lambda g: g.objections.acknowledge(LOCAL_ADMIN, objection_id)
        )
    )
    console.print(f"objection [bold]{found.id}[/]: answer acknowledged")


# -- the yearly ratings -------------------------------------------------------------------


@click.group()
def rating() -> None:
    """The operator's yearly evaluation (ZW art. 33): the bureau's rating forms and the
    ratings by source departments, district bureaus and merchants."""


@rating.command("form")
@click.argument("file", type=FILE)
@click.pass_context
def rating_form(ctx: click.Context, file: Path) -> None:
    """Set a year's form for one kind of rater from JSON: year, rater_kind
    (source|district|merchant), criteria [{id, title, max}], closes_on."""
    data = load_json(file)
    form = run(with_gateway(settings_of(ctx), lambda g: g.evaluation.set_form(LOCAL_ADMIN, data)))
    console.print(
        f"{form.year} form for {form.rater_kind.value} raters: {len(form.criteria)} criteria, "
        f"open until {form.closes_on.isoformat()}"
    )


@rating.command("forms")
@click.option("--year", type=click.IntRange(2000, 2099), default=None)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def rating_forms(ctx: click.Context, year: int | None, as_json: bool) -> None:
    """The rating forms, by year and kind of rater."""
    found: list[RatingForm] = run(
        with_store(
            settings_of(ctx), lambda engine: RatingReader(engine).forms(LOCAL_ADMIN, year=year)
        )
    )
    table = Table("year", "raters", "criteria", "closes on")
    for f in found:
        criteria = ", ".join(f"{c.id} (0-{c.max})" for c in f.criteria)
        table.add_row(str(f.year), f.rater_kind.value, criteria, f.closes_on.isoformat())
    emit([f.to_dict() for f in found], as_json, table)


@rating.command("submit")
@click.option("--year", type=click.IntRange(2000, 2099), required=True)
@click.option("--rater-kind", type=click.Choice([k.value for k in RaterKind]), required=True)
@click.option("--rater", required=True, help="Department or district name, or merchant id.")
@click.option("--score", "scores", multiple=True, required=True, help="CRITERION=N, repeat.")
@click.option("--comment", default="")
@click.pass_context
def rating_submit(
    ctx: click.Context,
    year: int,
    rater_kind: str,
    rater: str,
    scores: tuple[str, ...],
    comment: str,
) -> None:
    """Record a rater's rating received on paper (one per rater and year)."""
    parsed: dict[str, int] = {}
    for item in scores:
        name, _, value = item.partition("=")
        if not name or not value.isascii() or not value.isdigit():
            raise click.UsageError(f"--score {item!r}: write CRITERION=N")
        parsed[name] = int(value)
    data = {"year": year, "scores": parsed, "comment": comment}
    found = run(
        with_gateway(
            settings_of(ctx),
            lambda g: g.evaluation.submit(
                LOCAL_ADMIN, data, rater_kind=RaterKind(rater_kind), rater=rater
            ),
        )
    )
    console.print(f"{found.rater} ({found.rater_kind.value}) rated the operator for {found.year}")


@rating.command("list")
@click.option("--year", type=click.IntRange(2000, 2099), default=None)
@click.option("--rater-kind", type=click.Choice([k.value for k in RaterKind]), default=None)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def rating_list(
    ctx: click.Context, year: int | None, rater_kind: str | None, as_json: bool
) -> None:
    """Every rating (the bureau's view)."""
    kind = RaterKind(rater_kind) if rater_kind else None
    found: list[Rating] = run(
        with_store(
            settings_of(ctx),
            lambda engine: RatingReader(engine).ratings(LOCAL_ADMIN, year=year, rater_kind=kind),
        )
    )
    table = Table("year", "kind", "rater", "scores", "submitted")
    for r in found:
        table.add_row(
            str(r.year),
            r.rater_kind.value,
            r.rater,
            ", ".join(f"{k}={v}" for k, v in r.scores.items()),
            r.submitted_at.isoformat()[:16],
        )
    emit([r.to_dict() for r in found], as_json, table)
