"""``dsgw`` verbs for monitoring: ``alerts list|show|ack|resolve`` and ``monitor run``.
They act as the local administrator. Listed in :data:`gateway.cli.commands.COMMANDS`
and imported when one of them runs. ``list`` and ``show`` read through the alert store
over the engine alone (:func:`~gateway.cli.common.with_store`)."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape
from rich.table import Table

from gateway.cli.common import console, emit, run, settings_of, with_gateway, with_store
from gateway.clock import SystemClock
from gateway.governance.actor import LOCAL_ADMIN
from gateway.monitoring.models import RULES, Alert, AlertStatus, Severity
from gateway.monitoring.store import AlertStore

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from gateway.monitoring.monitor import MonitorRun
    from gateway.runtime import Gateway

__all__ = ["alerts", "monitor"]

COLOURS = {"info": "blue", "warning": "yellow", "high": "red", "critical": "bold red"}


def _alert_store(engine: AsyncEngine) -> AlertStore:
    """The alert store as a reader: finding and showing alerts needs the engine alone."""
    return AlertStore(engine, SystemClock())


def _severity(alert: Alert) -> str:
    return f"[{COLOURS[alert.severity.value]}]{alert.severity.value}[/]"


def _show(alert: Alert, as_json: bool) -> None:
    if as_json:
        emit(alert.to_dict(), True)
        return
    console.print(f"[bold]alert {alert.id}[/] {_severity(alert)} {alert.status.value}")
    console.print(escape(f"{alert.title}\n{alert.detail}"))  # text, not markup
    table = Table(show_header=False, box=None)
    table.add_row("rule", alert.rule)
    table.add_row("subject", alert.key)
    table.add_row("merchant", alert.merchant_id or "-")
    table.add_row("occurrences", str(alert.occurrences))
    table.add_row("first seen", alert.first_seen.isoformat())
    table.add_row("last seen", alert.last_seen.isoformat())
    if alert.handled_by:
        table.add_row("handled", f"{alert.handled_by} at {alert.handled_at}")
    if alert.resolution:
        table.add_row("resolution", alert.resolution)
    if alert.measure_id:
        table.add_row("measure", alert.measure_id)
    table.add_row("webhook", f"{alert.webhook_status} ({alert.webhook_attempts} attempts)")
    console.print(table)
    figures = alert.evidence.get("figures", {})
    console.print("figures: " + json.dumps(figures, ensure_ascii=False, sort_keys=True))
    records = alert.evidence.get("records", [])
    if records:
        console.print(
            f"records ({len(records)}; `dsgw bundle STREAM SEQ` gives each one's evidence): "
            + ", ".join(records)
        )


@click.group()
def alerts() -> None:
    """Misuse alerts raised by the monitor and by `dsgw audit` (docs/alerts.md)."""


@alerts.command("list")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice([s.value for s in AlertStatus]),
    help="Only these statuses (repeatable; default: open and acknowledged).",
)
@click.option(
    "--severity",
    "severities",
    multiple=True,
    type=click.Choice([s.value for s in Severity]),
    help="Only these severities (repeatable).",
)
@click.option("--rule", "rules", multiple=True, type=click.Choice(RULES), help="Only these rules.")
@click.option("--merchant", "merchant_id", default=None, help="Only this merchant's alerts.")
@click.option("--limit", type=click.IntRange(1, 500), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def alerts_list(
    ctx: click.Context,
    statuses: tuple[str, ...],
    severities: tuple[str, ...],
    rules: tuple[str, ...],
    merchant_id: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List alerts, newest first."""
    found = run(
        with_store(
            settings_of(ctx),
            lambda engine: _alert_store(engine).find(
                LOCAL_ADMIN,
                status=list(statuses) or None,
                severity=list(severities) or None,
                rule=list(rules) or None,
                merchant_id=merchant_id,
                limit=limit,
            ),
        )
    )
    table = Table("id", "severity", "status", "rule", "subject", "times", "last seen", "title")
    for alert in found:
        table.add_row(
            str(alert.id),
            _severity(alert),
            alert.status.value,
            alert.rule,
            alert.key,
            str(alert.occurrences),
            alert.last_seen.strftime("%Y-%m-%d %H:%M"),
            alert.title,
        )
    if not found and not as_json:
        console.print("no alerts")
        return
    emit([a.to_dict() for a in found], as_json, table)


@alerts.command("show")
@click.argument("alert_id", type=click.IntRange(1, 2**31 - 1))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def alerts_show(ctx: click.Context, alert_id: int, as_json: bool) -> None:
    """One alert with its figures, evidence records and handling."""
    alert = run(
        with_store(settings_of(ctx), lambda engine: _alert_store(engine).get(LOCAL_ADMIN, alert_id))
    )
    _show(alert, as_json)


@alerts.command("ack")
@click.argument("alert_id", type=click.IntRange(1, 2**31 - 1))
@click.option("--note", default="", help="What is being done.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def alerts_ack(ctx: click.Context, alert_id: int, note: str, as_json: bool) -> None:
    """Acknowledge an open alert: someone is on it."""
    alert = run(
        with_gateway(settings_of(ctx), lambda g: g.alerts.acknowledge(LOCAL_ADMIN, alert_id, note))
    )
    _show(alert, as_json)


@alerts.command("resolve")
@click.argument("alert_id", type=click.IntRange(1, 2**31 - 1))
@click.option("--resolution", required=True, help="What was found and done.")
@click.option("--measure", "measure_id", default=None, help="The supervision measure taken.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def alerts_resolve(
    ctx: click.Context, alert_id: int, resolution: str, measure_id: str | None, as_json: bool
) -> None:
    """Resolve an alert with what was done (a later detection opens a new one)."""
    alert = run(
        with_gateway(
            settings_of(ctx),
            lambda g: g.alerts.resolve(LOCAL_ADMIN, alert_id, resolution, measure_id),
        )
    )
    _show(alert, as_json)


@click.group()
def monitor() -> None:
    """The misuse monitor over the calls stream (`dsgw serve` runs it in the background)."""


def _run_summary(result: MonitorRun) -> dict[str, Any]:
    return {
        "from": result.start,
        "to": result.position,
        "records": result.records,
        "batches": result.batches,
        "changes": [
            {"event": change.event, "alert": change.alert.to_dict()} for change in result.changes
        ],
    }


@monitor.command("run")
@click.option("--once", is_flag=True, help="Evaluate the backlog now and exit.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def monitor_run(ctx: click.Context, once: bool, as_json: bool) -> None:
    """Evaluate the calls stream from the monitor's cursor and print what was raised.

    Without --once, keeps evaluating every monitor_interval_seconds until Ctrl-C (for
    deployments whose gateways run with monitor_enabled = false).
    """
    settings = settings_of(ctx)

    async def act(g: Gateway) -> MonitorRun:
        if not once:
            from gateway.cli.server import wait_for_signal

            g.monitor.start(settings.monitor.interval_seconds)
            console.print("monitor running (Ctrl-C stops)")
            await wait_for_signal()
            await g.monitor.stop()
        result = await g.monitor.run_once()
        if g.monitor.webhook is not None:
            await asyncio.wait_for(g.monitor.webhook.deliver_due(), timeout=120)
        return result

    result = run(with_gateway(settings, act))
    if as_json:
        emit(_run_summary(result), True)
        return
    console.print(
        f"evaluated calls {result.start}..{result.position} ({result.records} records, "
        f"{result.batches} batches)"
    )
    shown = [c for c in result.changes if c.event != "repeated"]
    repeated = len(result.changes) - len(shown)
    if not result.changes:
        console.print("[green]nothing raised[/]")
        return
    table = Table("id", "event", "severity", "rule", "subject", "title")
    for change in shown:
        alert = change.alert
        table.add_row(
            str(alert.id), change.event, _severity(alert), alert.rule, alert.key, alert.title
        )
    if shown:
        console.print(table)
    if repeated:
        console.print(f"{repeated} open alerts fired again (occurrences counted)")
