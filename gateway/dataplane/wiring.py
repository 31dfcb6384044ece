"""The data plane of one process, built from the deployment's settings: the privacy
controls it enforces and the keys they use (docs/privacy.md)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.authorization.quotas import CallAllowance
from gateway.clock import Clock
from gateway.dataplane.connectors import ConnectorRegistry
from gateway.dataplane.service import DataPlane
from gateway.derived_keys import DerivedKeys
from gateway.privacy.budget import PrivacyBudgets
from gateway.privacy.overlap import OverlapAudit
from gateway.privacy.verify_budget import VerifyBudget, VerifyBudgets
from gateway.settings import Settings
from gateway.tracing.delivery import DeliveryTracing

__all__ = ["build_dataplane"]


def build_dataplane(
    settings: Settings,
    engine: AsyncEngine,
    clock: Clock,
    connectors: ConnectorRegistry,
    quotas: CallAllowance,
    keys: DerivedKeys,
) -> DataPlane:
    overlap = None
    if settings.aggregate.overlap_min:  # 0 switches the audit off (docs/privacy.md)
        overlap = OverlapAudit(
            engine,
            clock,
            key=keys.overlap,
            threshold=settings.aggregate.overlap_min,
            max_subject_rows=settings.aggregate.audit_max_rows,
        )
    return DataPlane(
        connectors,
        quotas,
        clock,
        min_subjects=settings.aggregate.min_subjects,
        param_key=keys.param,
        tracing=DeliveryTracing(
            trace_key=keys.trace, mark_key=keys.mark, canary_rate=settings.trace.canary_rate
        ),
        budgets=PrivacyBudgets(engine, zone=settings.zone),
        overlap=overlap,
        verify_budgets=VerifyBudgets(engine, settings.zone),
        default_verify_budget=VerifyBudget(
            settings.verify.negatives_per_subject, settings.verify.window_hours
        ),
    )
