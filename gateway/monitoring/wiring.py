"""The alert store and the misuse monitor of one process, from the deployment's settings
(docs/alerts.md)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.clock import Clock
from gateway.dependencies import DependencyHealth
from gateway.governance.policy import PolicyStore
from gateway.monitoring.monitor import Monitor
from gateway.monitoring.rules import Thresholds
from gateway.monitoring.store import AlertStore
from gateway.monitoring.webhook import WebhookSender
from gateway.settings import Settings
from gateway.workdays.store import LiveCalendar

__all__ = ["build_monitoring"]


def build_monitoring(
    settings: Settings,
    engine: AsyncEngine,
    policy: PolicyStore,
    clock: Clock,
    calendar: LiveCalendar,
    health: DependencyHealth,
) -> tuple[AlertStore, Monitor]:
    thresholds = Thresholds.from_settings(settings)
    alerts = AlertStore(
        engine,
        clock,
        algorithm=settings.hash_algorithm,
        evidence_records=thresholds.evidence_records,
        webhook=bool(settings.alert.webhook_url),
    )
    monitor = Monitor(
        engine,
        alerts,
        policy,
        clock,
        thresholds=thresholds,
        calendar=calendar,
        batch_size=settings.monitor.batch_size,
        health=health,
        webhook=(
            WebhookSender(
                alerts,
                clock,
                url=settings.alert.webhook_url,
                secret=settings.alert.webhook_secret,
                deployment=settings.deployment,
                timeout=settings.alert.webhook_timeout_seconds,
                max_attempts=settings.alert.webhook_max_attempts,
                health=health,
            )
            if settings.alert.webhook_url
            else None
        ),
    )
    return alerts, monitor
