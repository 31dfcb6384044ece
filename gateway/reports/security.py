"""The facts of the quarterly security report (CS23 art. 24), gathered into dataclasses.

The operator submits this report to the data bureau every quarter: what the log audit found,
which permissions changed, which alerts were raised and how they were handled, which
supervision measures were in force, and how well the log was anchored on chain. Every
figure comes from the gateway's own store or from re-running the audit, and the report names
the log heads it was made against (:mod:`gateway.reports.header`). Each section is gathered
by its own module (:mod:`.audit_section`, :mod:`.change_section`, :mod:`.alert_section`,
:mod:`.measure_section`, :mod:`.anchoring_section`); formatting lives in
:mod:`gateway.reports.render`; nothing here formats.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.ledger.checkpoints import CheckpointKeys
from gateway.ledger.hashing import HashAlgorithm
from gateway.reports.alert_section import AlertSection, gather_alerts
from gateway.reports.anchoring_section import AnchoringSection, gather_anchoring
from gateway.reports.audit_section import AuditProgress, AuditSection, ChainAccess, gather_audit
from gateway.reports.call_section import CallTotals, gather_call_totals
from gateway.reports.change_section import PermissionSection, gather_permissions
from gateway.reports.header import Names, ReportHeader
from gateway.reports.measure_section import MeasureSection, gather_measures

__all__ = ["SecurityReport", "gather_security"]


@dataclass(frozen=True, slots=True)
class SecurityReport:
    header: ReportHeader
    names: Names
    calls: CallTotals
    audit: AuditSection
    permissions: PermissionSection
    alerts: AlertSection
    measures: MeasureSection
    anchoring: AnchoringSection


async def gather_security(
    engine: AsyncEngine,
    header: ReportHeader,
    names: Names,
    *,
    algorithm: HashAlgorithm,
    checkpoint_key: CheckpointKeys | None,
    chain: ChainAccess,
    now: Callable[[], dt.datetime],
    progress: AuditProgress | None = None,
) -> SecurityReport:
    """Gather the security report of ``header.period`` (a quarter). Runs the audit of
    every stream (read-only) and, when ``chain.open`` is given, the chain audit; a chain
    that cannot be reached is reported, not raised. Raises :class:`DsgwError` only when the
    store cannot be read."""
    period = header.period
    async with engine.connect() as conn:
        calls = await gather_call_totals(conn, period)
        permissions = await gather_permissions(conn, period)
        alerts, divergence = await gather_alerts(conn, period, header.as_of)
        measures = await gather_measures(conn, period, header.as_of)
    audit = await gather_audit(
        engine,
        algorithm=algorithm,
        checkpoint_key=checkpoint_key,
        chain=chain,
        now=now,
        progress=progress,
        divergence=divergence,
    )
    anchoring = await gather_anchoring(engine, period, chain.backend)
    return SecurityReport(
        header=header,
        names=names,
        calls=calls,
        audit=audit,
        permissions=permissions,
        alerts=alerts,
        measures=measures,
        anchoring=anchoring,
    )
