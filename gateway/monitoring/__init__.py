"""Misuse monitoring (LZ24 §1.2, monitoring and early warning): rules over the calls
stream, persisted alerts with their handling, and a signed webhook push. See
docs/alerts.md."""

from __future__ import annotations

from gateway.monitoring.models import RULES, Alert, AlertChange, AlertStatus, Detection, Severity
from gateway.monitoring.monitor import BatchResult, Monitor, MonitorRun
from gateway.monitoring.rules import Thresholds
from gateway.monitoring.store import AlertStore
from gateway.monitoring.webhook import WebhookSender, sign, verify_signature

__all__ = [
    "RULES",
    "Alert",
    "AlertChange",
    "AlertStatus",
    "AlertStore",
    "BatchResult",
    "Detection",
    "Monitor",
    "MonitorRun",
    "Severity",
    "Thresholds",
    "WebhookSender",
    "sign",
    "verify_signature",
]
