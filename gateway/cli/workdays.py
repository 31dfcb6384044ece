"""``dsgw workdays``: load the State Council's yearly holiday notice, see what is loaded.

Listed in :data:`gateway.cli.commands.COMMANDS` and imported when one of them runs.
``show`` reads the calendar over the engine alone (:func:`~gateway.cli.common.with_store`).
"""

from __future__ import annotations

import datetime as dt
import getpass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape
from rich.table import Table

from gateway.cli.common import (
    console,
    emit,
    run,
    settings_of,
    with_gateway,
    with_store,
    working_calendar,
)
from gateway.cli.exits import ExitCode
from gateway.clock import DEFAULT_ZONE, SystemClock, utc
from gateway.governance.actor import LOCAL_ADMIN
from gateway.workdays import CalendarError, YearSchedule
from gateway.workdays.notice import parse_notice
from gateway.workdays.store import LoadedSchedule, stored_schedules

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from gateway.runtime import Gateway

__all__ = ["due_text", "workdays"]


def due_text(value: dt.datetime | None, provisional: bool, zone: dt.tzinfo = DEFAULT_ZONE) -> str:
    """A deadline as staff read it: local time in the deployment zone, and "provisional"
    when it was counted without next year's holiday schedule (docs/workdays.md)."""
    if value is None:
        return ""
    text = utc(value).astimezone(zone).strftime("%Y-%m-%d %H:%M")
    return f"{text} (provisional)" if provisional else text


FILE = click.Path(path_type=Path, dir_okay=False, exists=True)


@click.group()
def workdays() -> None:
    """Working-day calendar: the State Council's holiday schedules (docs/workdays.md)."""


def _read_notice(path: Path) -> str:
    """The notice as saved from a browser or Word: UTF-8 (with or without BOM) or GB18030
    (Notepad on Chinese Windows)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CalendarError(f"workdays: cannot read {path}: {exc.strerror}") from exc
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise CalendarError(f"workdays: {path} is neither UTF-8 nor GB18030 text")


async def _parse(path: Path) -> YearSchedule:
    return parse_notice(_read_notice(path), str(path))


def _schedule_table(schedule: YearSchedule) -> Table:
    table = Table("holiday 节假日", "days off 放假", "days", "make-up working days 调休上班")
    makeup = sorted(schedule.workdays)
    for holiday in schedule.holidays:
        first, last = holiday.days[0], holiday.days[-1]
        # A make-up day belongs to the holiday it is next to (within three weeks).
        near = [d for d in makeup if abs((d - first).days) <= 21 or abs((d - last).days) <= 21]
        makeup = [d for d in makeup if d not in near]
        table.add_row(
            escape(holiday.name),
            f"{first.isoformat()} – {last.isoformat()}" if first != last else first.isoformat(),
            str(len(holiday.days)),
            ", ".join(d.isoformat() for d in near),
        )
    if makeup:
        table.add_row("", "", "", ", ".join(d.isoformat() for d in makeup))
    return table


@workdays.command("import")
@click.argument("file", type=FILE)
@click.option("--yes", is_flag=True, help="Load without asking for confirmation.")
@click.option(
    "--by",
    "loaded_by",
    default=None,
    help="Who loads it, recorded with the schedule (default: the login name).",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def workdays_import(
    ctx: click.Context, file: Path, yes: bool, loaded_by: str | None, as_json: bool
) -> None:
    """Load a year's holiday schedule from the text of the State Council's notice
    (国务院办公厅关于YYYY年部分节假日安排的通知), shown first for confirmation."""
    settings = settings_of(ctx)
    schedule = run(_parse(file))
    who = (loaded_by or getpass.getuser()).strip()
    if not as_json:
        console.print(
            f"[bold]{schedule.year}[/]: {escape(schedule.source)}", highlight=False, soft_wrap=True
        )
        console.print(_schedule_table(schedule))
    if not yes and not click.confirm(f"Load the {schedule.year} schedule as {who}?", err=True):
        # Declining is an answer, not an interruption (Ctrl-C exits 130): nothing is loaded.
        click.echo("Not loaded.", err=True)
        ctx.exit(ExitCode.FAILED)

    async def act(g: Gateway) -> tuple[LoadedSchedule | None, list[str]]:
        return await g.schedules.load(LOCAL_ADMIN, schedule, loaded_by=who)

    loaded, moved = run(with_gateway(settings, act))
    data: dict[str, Any] = {
        **schedule.to_dict(),
        "loaded": loaded is not None,
        "loaded_by": loaded.loaded_by if loaded else None,
        "replaced": bool(loaded and loaded.replaced),
        "recomputed": moved,
    }
    if as_json:
        emit(data, True)
        return
    if loaded is None:
        console.print(f"the {schedule.year} schedule is already loaded with these days")
        return
    verb = "replaced" if loaded.replaced else "loaded"
    console.print(f"{schedule.year} schedule {verb} by {escape(who)}")
    if moved:
        console.print(f"provisional deadlines counted again: {', '.join(sorted(set(moved)))}")


@workdays.command("show")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def workdays_show(ctx: click.Context, as_json: bool) -> None:
    """The years the working-day calendar covers, and where each schedule came from."""
    settings = settings_of(ctx)

    async def act(engine: AsyncEngine) -> list[dict[str, Any]]:
        calendar = await working_calendar(settings, engine)
        async with engine.connect() as conn:
            stored = {item.schedule.year: item for item in await stored_schedules(conn)}
        now = SystemClock().now().astimezone(calendar.current.zone)
        out = []
        for schedule in calendar.current.schedules:
            item = stored.get(schedule.year)
            out.append(
                {
                    "year": schedule.year,
                    "source": schedule.source,
                    "origin": "store" if item else schedule.origin,
                    "loaded_by": item.loaded_by if item else None,
                    "loaded_at": item.loaded_at.isoformat() if item else None,
                }
            )
        if not calendar.current.covers(now.year + 1):
            out.append({"year": now.year + 1, "source": None, "origin": None})
        return out

    rows = run(with_store(settings, act))
    table = Table("year", "notice", "from", "loaded by")
    for row in rows:
        if row["source"] is None:
            table.add_row(
                str(row["year"]),
                "not loaded: deadlines reaching into it are provisional",
                "",
                "",
            )
            continue
        table.add_row(
            str(row["year"]),
            escape(row["source"]),
            escape(row["origin"]),
            escape(row["loaded_by"] or ""),
        )
    emit(rows, as_json, table)
