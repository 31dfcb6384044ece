"""Typed keys for what the app and each request carry.

A handler takes the one service it needs by its key (``request.app[PRODUCTS]``), so what a
route depends on reads from its code; :data:`GATEWAY` is left for the few that compose
several (readiness, metrics, the request pipeline).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.api.telemetry import Telemetry
from gateway.authorization.tokens import TokenService
from gateway.clock import Clock
from gateway.dataplane.service import DataPlane
from gateway.dependencies import DependencyHealth
from gateway.evaluation import EvaluationService
from gateway.evidence.service import EvidenceService
from gateway.governance.policy import PolicyStore
from gateway.governance.service import GovernanceService
from gateway.ledger.records import CallRecord
from gateway.monitoring.store import AlertStore
from gateway.objections import ObjectionService
from gateway.products.delivery import DeliveryService
from gateway.products.service import ProductService
from gateway.runtime import Gateway
from gateway.settings import Network, Settings
from gateway.supervision.measures import MeasureService
from gateway.tracing.engine import LeakTracer
from gateway.workdays.schedules import WorkdaySchedules
from gateway.workflows.service import WorkflowService
from gateway.workflows.use import UseApplicationService

__all__ = [
    "ALERTS",
    "APPLICATIONS",
    "CLOCK",
    "DATAPLANE",
    "DELIVERIES",
    "EVALUATION",
    "EVIDENCE",
    "GATEWAY",
    "GOVERNANCE",
    "HEALTH",
    "MAX_BODY",
    "MEASURES",
    "OBJECTIONS",
    "OPENAPI",
    "POLICY",
    "PRODUCTS",
    "RECORD",
    "SCHEDULES",
    "SETTINGS",
    "TELEMETRY",
    "TOKENS",
    "TRACER",
    "TRUSTED_PROXIES",
    "WORKFLOWS",
    "install_services",
]

GATEWAY = web.AppKey("gateway", Gateway)
MAX_BODY = web.AppKey("max_body", int)
OPENAPI = web.AppKey("openapi", dict[str, Any])
RECORD = web.RequestKey("record", CallRecord)
TELEMETRY = web.AppKey("telemetry", Telemetry)
TRUSTED_PROXIES = web.AppKey("trusted_proxies", tuple[Network, ...])

ALERTS = web.AppKey("alerts", AlertStore)
APPLICATIONS = web.AppKey("applications", UseApplicationService)
CLOCK = web.AppKey("clock", Clock)
DATAPLANE = web.AppKey("dataplane", DataPlane)
DELIVERIES = web.AppKey("deliveries", DeliveryService)
EVALUATION = web.AppKey("evaluation", EvaluationService)
EVIDENCE = web.AppKey("evidence", EvidenceService)
GOVERNANCE = web.AppKey("governance", GovernanceService)
HEALTH = web.AppKey("health", DependencyHealth)
MEASURES = web.AppKey("measures", MeasureService)
OBJECTIONS = web.AppKey("objections", ObjectionService)
POLICY = web.AppKey("policy", PolicyStore)
PRODUCTS = web.AppKey("products", ProductService)
SCHEDULES = web.AppKey("schedules", WorkdaySchedules)
SETTINGS = web.AppKey("settings", Settings)
TOKENS = web.AppKey("tokens", TokenService)
TRACER = web.AppKey("tracer", LeakTracer)
WORKFLOWS = web.AppKey("workflows", WorkflowService)


def install_services(app: web.Application, gateway: Gateway) -> None:
    """Put each service of ``gateway`` under its key (and the gateway under GATEWAY)."""
    app[GATEWAY] = gateway
    app[ALERTS] = gateway.alerts
    app[APPLICATIONS] = gateway.applications
    app[CLOCK] = gateway.clock
    app[DATAPLANE] = gateway.dataplane
    app[DELIVERIES] = gateway.deliveries
    app[EVALUATION] = gateway.evaluation
    app[EVIDENCE] = gateway.evidence
    app[GOVERNANCE] = gateway.governance
    app[HEALTH] = gateway.health
    app[MEASURES] = gateway.measures
    app[OBJECTIONS] = gateway.objections
    app[POLICY] = gateway.policy
    app[PRODUCTS] = gateway.products
    app[SCHEDULES] = gateway.schedules
    app[SETTINGS] = gateway.settings
    app[TOKENS] = gateway.tokens
    app[TRACER] = gateway.tracer
    app[WORKFLOWS] = gateway.workflows
