"""The facts of the quarterly security report (CS23 art. 24), gathered into dataclasses.

The operator submits this report to the data bureau every quarter: what the log audit found,
which permissions changed, which alerts were raised and how they were handled, which
supervision measures were in force, and how well the log was anchored on chain. Every
figure comes from the gateway's own store or from re-running the audit, and the report names
the log heads it was made against (:mod:`gateway.reports.header`). Formatting lives in
:mod:`gateway.reports.render`; nothing here formats.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.chain.audit import chain_evidence, registry_for_audit
from gateway.chain.backends import ChainBackend
from gateway.chain.errors import ChainError
from gateway.chain.status import anchoring_status
from gateway.clock import utc
from gateway.db.schema import (
    AlertRow,
    AnchorRow,
    AnchorTransactionRow,
    CheckpointRow,
    LogEntryRow,
    MeasureRow,
)
from gateway.ledger.audit import AnchoredRoot, Finding, audit_stream
from gateway.ledger.checkpoints import CheckpointKeys
from gateway.ledger.hashing import HashAlgorithm
from gateway.ledger.log import STREAMS
from gateway.reports.header import Names, ReportHeader
from gateway.reports.periods import Period

__all__ = [
    "LIST_LIMIT",
    "AlertItem",
    "AlertSection",
    "AnchoringSection",
    "AuditProgress",
    "AuditSection",
    "CallTotals",
    "ChainAccess",
    "GovernanceChange",
    "MeasureItem",
    "MeasureSection",
    "PermissionSection",
    "SecurityReport",
    "StreamAnchoringHealth",
    "StreamAudit",
    "change_group",
    "gather_security",
]

LIST_LIMIT = 2000
"""Most items a report lists one by one in a section; counts always cover every item."""

AuditProgress = Callable[[str, int], Callable[[int], None]]
"""Called once per stream with its size; returns what the audit calls after each batch."""

CHANGE_GROUPS = (
    "grants",
    "revocations",
    "suspensions",
    "lifts",
    "reviews",
    "catalog",
    "alerts",
    "other",
)
"""How permission changes are grouped, in the order the report shows them."""

DIVERGENCE_RULE = "audit-divergence"
SEVERITY_ORDER = ("critical", "high", "warning", "info")
"""Most severe first (the monitor's levels, :class:`gateway.monitoring.models.Severity`)."""

_GRANTS = frozenset(
    {
        "agreement.granted",
        "agreement.concluded",
        "agreement.subject-authorization",
        "client.issued",
        "scenario.published",
        "merchant.registered",
        "onboarding.approved",
    }
)
_REVOCATIONS = frozenset(
    {"token.revoked", "token.revoked-all", "agreement.terminated", "scenario.retired"}
)
_LIFTS = frozenset({"merchant.active", "agreement.active", "client.active"})
_SUSPENSION_KINDS = frozenset(
    {"merchant.suspended", "scenario.suspended", "agreement.suspended", "agreement.terminated"}
)
_SUBJECT_KEYS = (
    ("merchant_id", "merchant"),
    ("scenario_id", "scenario"),
    ("agreement_id", "agreement"),
    ("application_id", "application"),
    ("client_id", "client"),
    ("product_id", "product"),
    ("measure_id", "measure"),
    ("jti", "token"),
)
_NESTED_SUBJECTS = ("measure", "dataset", "scenario", "agreement", "client", "product")


def change_group(kind: str) -> str:
    """The group of a governance record kind, so a reader finds grants, revocations and
    suspensions together whatever the exact kind."""
    if kind.startswith("measure."):
        return "lifts" if "lift" in kind else "suspensions"
    if kind in _GRANTS:
        return "grants"
    if kind in _LIFTS:
        return "lifts"
    if kind.endswith(".suspended") or kind.endswith(".closed"):
        return "suspensions"
    if kind in _REVOCATIONS or (kind.startswith("client.") and kind != "client.issued"):
        return "revocations"
    if kind.startswith(("application.", "review.", "onboarding.")):
        return "reviews"
    if kind.startswith(("dataset.", "scenario.", "exclusions.", "agreement.")):
        return "catalog"
    if kind.startswith("alert."):
        return "alerts"
    return "other"


# -- dataclasses -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallTotals:
    """Data-plane calls of the period by decision."""

    allowed: int
    refused: int
    errors: int

    @property
    def total(self) -> int:
        return self.allowed + self.refused + self.errors


@dataclass(frozen=True, slots=True)
class StreamAudit:
    stream: str
    records: int
    checkpoints: int
    anchors: int | None
    """Anchored roots compared, or None when the chain was not checked."""
    findings: tuple[Finding, ...]


@dataclass(frozen=True, slots=True)
class AlertItem:
    id: int
    rule: str
    severity: str
    status: str
    merchant_id: str | None
    scenario_id: str | None
    title: str
    occurrences: int
    first_seen: dt.datetime
    last_seen: dt.datetime
    handled_by: str | None
    handled_at: dt.datetime | None
    resolution: str | None
    measure_id: str | None

    def state_at(self, instant: dt.datetime) -> str:
        """open, acknowledged or resolved as of ``instant`` (``handled_at`` is the latest
        handling step, so a step taken later than ``instant`` had not happened yet)."""
        if self.handled_at is None or self.handled_at >= instant or self.status == "open":
            return "open"
        return self.status

    @property
    def time_to_handle(self) -> dt.timedelta | None:
        if self.handled_at is None or self.status == "open":
            return None
        return max(dt.timedelta(0), self.handled_at - self.first_seen)


@dataclass(frozen=True, slots=True)
class AuditSection:
    ran_at: dt.datetime
    finished_at: dt.datetime
    chain_status: str
    """``checked``, ``unreachable`` or ``not-run``."""
    chain_detail: str
    streams: tuple[StreamAudit, ...]
    divergence_alerts: tuple[AlertItem, ...]

    @property
    def findings(self) -> int:
        return sum(len(s.findings) for s in self.streams)

    @property
    def clean(self) -> bool:
        return self.findings == 0


@dataclass(frozen=True, slots=True)
class GovernanceChange:
    """One record of the governance (or products) stream, as a reader needs it."""

    record_id: str
    at: dt.datetime
    kind: str
    group: str
    actor: str
    subject: str
    reason: str


@dataclass(frozen=True, slots=True)
class PermissionSection:
    total: int
    by_kind: tuple[tuple[str, int], ...]
    by_group: tuple[tuple[str, int], ...]
    changes: tuple[GovernanceChange, ...]
    """The first :data:`LIST_LIMIT` records of the quarter, oldest first."""

    @property
    def unlisted(self) -> int:
        return self.total - len(self.changes)

    def count(self, group: str) -> int:
        return dict(self.by_group).get(group, 0)


@dataclass(frozen=True, slots=True)
class AlertSection:
    raised: int
    by_rule: tuple[tuple[str, int], ...]
    by_severity: tuple[tuple[str, int], ...]
    by_rule_severity: tuple[tuple[str, tuple[tuple[str, int], ...]], ...]
    handled: int
    """Alerts raised in the quarter that were acknowledged or resolved by its end."""
    resolved: int
    median_time_to_handle: dt.timedelta | None
    max_time_to_handle: dt.timedelta | None
    median_time_to_resolve: dt.timedelta | None
    items: tuple[AlertItem, ...]
    """Alerts raised in the quarter (at most :data:`LIST_LIMIT`), oldest first."""
    open_at_end: tuple[AlertItem, ...]
    """Alerts raised before the quarter's end and not handled by then, this quarter's or
    carried over from earlier ones."""


@dataclass(frozen=True, slots=True)
class MeasureItem:
    id: str
    target_kind: str
    target_id: str
    status: str
    reason: str
    basis: str | None
    imposed_by: str
    imposed_at: dt.datetime
    lifted_by: str | None
    lifted_at: dt.datetime | None
    lift_reason: str | None

    def active_at(self, instant: dt.datetime) -> bool:
        return self.imposed_at < instant and (self.lifted_at is None or self.lifted_at >= instant)


@dataclass(frozen=True, slots=True)
class MeasureSection:
    imposed: tuple[MeasureItem, ...]
    lifted: tuple[MeasureItem, ...]
    active_at_end: tuple[MeasureItem, ...]
    imposed_by_kind: tuple[tuple[str, int], ...]
    status_changes: tuple[GovernanceChange, ...]
    """Suspensions, reinstatements, terminations and delistings recorded in the governance
    and products streams during the quarter (also those made outside the measures)."""


@dataclass(frozen=True, slots=True)
class StreamAnchoringHealth:
    stream: str
    checkpoints: int
    """Checkpoints signed in the quarter."""
    anchors: tuple[tuple[str, int], ...]
    """Anchors made in the quarter by their current status."""
    final_in_quarter: int
    """Anchors that became final in the quarter."""
    final_size_at_end: int
    requeues: int
    max_lag: dt.timedelta | None
    """Largest time from a record to the final anchor that first covered it, over the
    anchors that became final in the quarter."""
    max_lag_record: str | None
    unanchored_checkpoints: int
    unanchored_records: int
    oldest_unanchored_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class AnchoringSection:
    backend: str
    chain_id: int | None
    contract: str | None
    streams: tuple[StreamAnchoringHealth, ...]
    transactions: tuple[tuple[str, int], ...]
    """Anchor transactions signed in the quarter by status."""
    resent_anchors: int
    """Anchors of the quarter that needed more than one transaction (fee bump, re-send)."""

    @property
    def enabled(self) -> bool:
        return self.backend != "none"

    @property
    def backlog(self) -> int:
        return sum(s.unanchored_checkpoints for s in self.streams)

    @property
    def final_anchors(self) -> int:
        return sum(s.final_in_quarter for s in self.streams)

    @property
    def max_lag(self) -> dt.timedelta | None:
        lags = [s.max_lag for s in self.streams if s.max_lag is not None]
        return max(lags) if lags else None


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


@dataclass(frozen=True, slots=True)
class ChainAccess:
    """How the report reaches the chain for the chain audit: ``open`` gives a started
    backend for the duration of a ``with`` block, or is None, and ``skipped`` says why."""

    open: Callable[[], contextlib.AbstractAsyncContextManager[ChainBackend]] | None
    skipped: str = ""
    contract: str = ""
    backend: str = "none"
    """The configured anchoring backend (``anvil``, ``rpc``, ``eth-tester`` or ``none``)."""


# -- gathering -------------------------------------------------------------------------------


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
        calls = await _call_totals(conn, period)
        permissions = await _permissions(conn, period)
        alerts, divergence = await _alerts(conn, period, header.as_of)
        measures = await _measures(conn, period, header.as_of)
    audit = await _audit(
        engine,
        algorithm=algorithm,
        checkpoint_key=checkpoint_key,
        chain=chain,
        now=now,
        progress=progress,
        divergence=divergence,
    )
    anchoring = await _anchoring(engine, period, chain.backend)
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


def _in(column: Any, period: Period) -> Any:
    return and_(column >= period.start, column < period.end)


async def _call_totals(conn: AsyncConnection, period: Period) -> CallTotals:
    rows = await conn.execute(
        select(LogEntryRow.decision, func.count())
        .where(
            LogEntryRow.stream == "calls",
            LogEntryRow.kind == "data",
            _in(LogEntryRow.recorded_at, period),
        )
        .group_by(LogEntryRow.decision)
    )
    counts = {str(decision): int(n) for decision, n in rows}
    return CallTotals(counts.get("allow", 0), counts.get("deny", 0), counts.get("error", 0))


async def _audit(
    engine: AsyncEngine,
    *,
    algorithm: HashAlgorithm,
    checkpoint_key: CheckpointKeys | None,
    chain: ChainAccess,
    now: Callable[[], dt.datetime],
    progress: AuditProgress | None,
    divergence: tuple[AlertItem, ...],
) -> AuditSection:
    started = now()
    evidence: dict[str, tuple[tuple[AnchoredRoot, ...], tuple[Finding, ...]]] = {}
    if chain.open is None:
        chain_status, chain_detail = "not-run", chain.skipped or "no chain to compare with"
    else:
        try:
            async with chain.open() as backend:
                registry = await registry_for_audit(engine, backend, chain.contract)
                for name in STREAMS:
                    found = await chain_evidence(engine, registry, name, algorithm=algorithm)
                    evidence[name] = (found.anchored, found.findings)
                chain_id = await registry.chain_id()
            chain_status = "checked"
            chain_detail = f"registry {registry.address} on chain {chain_id} ({backend.node})"
        except ChainError as exc:
            evidence.clear()
            chain_status, chain_detail = "unreachable", exc.detail
    streams = []
    for name in STREAMS:
        advance = None
        if progress is not None:
            async with engine.connect() as conn:
                size = await conn.scalar(
                    select(func.count()).select_from(LogEntryRow).where(LogEntryRow.stream == name)
                )
            advance = progress(name, int(size or 0))
        anchored, chain_findings = evidence.get(name, ((), ()))
        report = await audit_stream(
            engine,
            name,
            algorithm=algorithm,
            checkpoint_key=checkpoint_key,
            anchored=anchored,
            progress=advance,
        )
        streams.append(
            StreamAudit(
                stream=name,
                records=report.records,
                checkpoints=report.checkpoints,
                anchors=report.anchors if chain_status == "checked" else None,
                findings=chain_findings + report.findings,
            )
        )
    return AuditSection(
        ran_at=started,
        finished_at=now(),
        chain_status=chain_status,
        chain_detail=chain_detail,
        streams=tuple(streams),
        divergence_alerts=divergence,
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _actor(body: dict[str, Any]) -> str:
    actor = body.get("actor")
    if not isinstance(actor, dict):
        return ""
    who, role = _text(actor.get("id")), _text(actor.get("role"))
    if actor.get("department"):
        role = f"{role}, {_text(actor.get('department'))}"
    return f"{who} ({role})" if role and role != who else who


def _subject(body: dict[str, Any]) -> str:
    parts: list[str] = []
    if isinstance(body.get("target_kind"), str) and isinstance(body.get("target_id"), str):
        parts.append(f"{body['target_kind']} {body['target_id']}")
    for key, label in _SUBJECT_KEYS:
        value = body.get(key)
        if isinstance(value, str) and value:
            parts.append(f"{label} {value}")
    for key in _NESTED_SUBJECTS:
        nested = body.get(key)
        if isinstance(nested, dict):
            if isinstance(nested.get("target_kind"), str):
                parts.append(f"{nested['target_kind']} {_text(nested.get('target_id'))}")
            elif isinstance(nested.get("id"), str):
                parts.append(f"{key} {nested['id']}")
    return "; ".join(dict.fromkeys(parts))


def _reason(body: dict[str, Any]) -> str:
    for key in ("reason", "lift_reason"):
        if isinstance(body.get(key), str) and body[key]:
            return str(body[key])
    reasons = body.get("reasons")
    if isinstance(reasons, list):
        return "; ".join(str(r) for r in reasons)
    nested = body.get("measure")
    if isinstance(nested, dict) and isinstance(nested.get("reason"), str):
        return str(nested["reason"])
    return ""


def _change(stream: str, seq: int, at: dt.datetime, kind: str, payload: str) -> GovernanceChange:
    try:
        body = json.loads(payload)
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    return GovernanceChange(
        record_id=f"{stream}/{seq}",
        at=utc(at),
        kind=kind,
        group=change_group(kind),
        actor=_actor(body),
        subject=_subject(body),
        reason=_reason(body),
    )


async def _permissions(conn: AsyncConnection, period: Period) -> PermissionSection:
    here = (LogEntryRow.stream == "governance", _in(LogEntryRow.recorded_at, period))
    by_kind = sorted(
        (
            (str(kind), int(n))
            for kind, n in await conn.execute(
                select(LogEntryRow.kind, func.count()).where(*here).group_by(LogEntryRow.kind)
            )
        ),
        key=lambda item: (-item[1], item[0]),
    )
    groups: Counter[str] = Counter()
    for kind, n in by_kind:
        groups[change_group(kind)] += n
    rows = await conn.execute(
        select(LogEntryRow.seq, LogEntryRow.recorded_at, LogEntryRow.kind, LogEntryRow.payload)
        .where(*here)
        .order_by(LogEntryRow.seq)
        .limit(LIST_LIMIT)
    )
    changes = tuple(_change("governance", r.seq, r.recorded_at, r.kind, r.payload) for r in rows)
    return PermissionSection(
        total=sum(n for _, n in by_kind),
        by_kind=tuple(by_kind),
        by_group=tuple((g, groups[g]) for g in CHANGE_GROUPS if groups[g]),
        changes=changes,
    )


def _severity_key(severity: str) -> tuple[int, str]:
    try:
        return SEVERITY_ORDER.index(severity), severity
    except ValueError:
        return len(SEVERITY_ORDER), severity


def _alert(row: Any) -> AlertItem:
    return AlertItem(
        id=int(row.id),
        rule=str(row.rule),
        severity=str(row.severity),
        status=str(row.status),
        merchant_id=row.merchant_id,
        scenario_id=row.scenario_id,
        title=str(row.title),
        occurrences=int(row.occurrences),
        first_seen=utc(row.first_seen),
        last_seen=utc(row.last_seen),
        handled_by=row.handled_by,
        handled_at=utc(row.handled_at) if row.handled_at is not None else None,
        resolution=row.resolution,
        measure_id=row.measure_id,
    )


def _median(values: Sequence[dt.timedelta]) -> dt.timedelta | None:
    if not values:
        return None
    return dt.timedelta(seconds=statistics.median(v.total_seconds() for v in values))


async def _alerts(
    conn: AsyncConnection, period: Period, as_of: dt.datetime
) -> tuple[AlertSection, tuple[AlertItem, ...]]:
    columns = (
        AlertRow.id,
        AlertRow.rule,
        AlertRow.severity,
        AlertRow.status,
        AlertRow.merchant_id,
        AlertRow.scenario_id,
        AlertRow.title,
        AlertRow.occurrences,
        AlertRow.first_seen,
        AlertRow.last_seen,
        AlertRow.handled_by,
        AlertRow.handled_at,
        AlertRow.resolution,
        AlertRow.measure_id,
    )
    raised_here = _in(AlertRow.first_seen, period)
    pairs = [
        (str(rule), str(severity), int(n))
        for rule, severity, n in await conn.execute(
            select(AlertRow.rule, AlertRow.severity, func.count())
            .where(raised_here)
            .group_by(AlertRow.rule, AlertRow.severity)
        )
    ]
    by_rule: Counter[str] = Counter()
    by_severity: Counter[str] = Counter()
    matrix: dict[str, Counter[str]] = {}
    for rule, severity, n in pairs:
        by_rule[rule] += n
        by_severity[severity] += n
        matrix.setdefault(rule, Counter())[severity] += n
    items = [
        _alert(row)
        for row in await conn.execute(
            select(*columns).where(raised_here).order_by(AlertRow.first_seen, AlertRow.id)
        )
    ]
    handled = [a for a in items if a.state_at(as_of) != "open"]
    to_handle = [a.time_to_handle for a in handled if a.time_to_handle is not None]
    to_resolve = [
        a.time_to_handle
        for a in handled
        if a.state_at(as_of) == "resolved" and a.time_to_handle is not None
    ]
    unhandled = or_(AlertRow.handled_at.is_(None), AlertRow.handled_at >= as_of)
    open_rows = await conn.execute(
        select(*columns)
        .where(AlertRow.first_seen < as_of, or_(unhandled, AlertRow.status == "open"))
        .order_by(AlertRow.first_seen, AlertRow.id)
        .limit(LIST_LIMIT)
    )
    severities = sorted(by_severity, key=_severity_key)
    section = AlertSection(
        raised=sum(by_rule.values()),
        by_rule=tuple(sorted(by_rule.items(), key=lambda kv: (-kv[1], kv[0]))),
        by_severity=tuple((s, by_severity[s]) for s in severities),
        by_rule_severity=tuple(
            (rule, tuple((s, matrix[rule][s]) for s in severities))
            for rule, _ in sorted(by_rule.items(), key=lambda kv: (-kv[1], kv[0]))
        ),
        handled=len(handled),
        resolved=sum(1 for a in handled if a.state_at(as_of) == "resolved"),
        median_time_to_handle=_median(to_handle),
        max_time_to_handle=max(to_handle) if to_handle else None,
        median_time_to_resolve=_median(to_resolve),
        items=tuple(items[:LIST_LIMIT]),
        open_at_end=tuple(_alert(row) for row in open_rows),
    )
    divergence = tuple(a for a in items if a.rule == DIVERGENCE_RULE)
    return section, divergence


def _measure(row: Any) -> MeasureItem:
    return MeasureItem(
        id=str(row.id),
        target_kind=str(row.target_kind),
        target_id=str(row.target_id),
        status=str(row.status),
        reason=str(row.reason),
        basis=row.basis,
        imposed_by=str(row.imposed_by),
        imposed_at=utc(row.imposed_at),
        lifted_by=row.lifted_by,
        lifted_at=utc(row.lifted_at) if row.lifted_at is not None else None,
        lift_reason=row.lift_reason,
    )


async def _measures(conn: AsyncConnection, period: Period, as_of: dt.datetime) -> MeasureSection:
    table = MeasureRow.__table__
    rows = await conn.execute(
        select(table)
        .where(
            MeasureRow.imposed_at < period.end,
            or_(MeasureRow.lifted_at.is_(None), MeasureRow.lifted_at >= period.start),
        )
        .order_by(MeasureRow.imposed_at, MeasureRow.id)
    )
    items = [_measure(row) for row in rows]
    imposed = tuple(m for m in items if period.contains(m.imposed_at))
    lifted = tuple(m for m in items if m.lifted_at is not None and period.contains(m.lifted_at))
    kinds = Counter(m.target_kind for m in imposed)
    changes = await conn.execute(
        select(
            LogEntryRow.stream,
            LogEntryRow.seq,
            LogEntryRow.recorded_at,
            LogEntryRow.kind,
            LogEntryRow.payload,
        )
        .where(
            LogEntryRow.stream.in_(("governance", "products")),
            LogEntryRow.kind.in_(sorted(_status_kinds())),
            _in(LogEntryRow.recorded_at, period),
        )
        .order_by(LogEntryRow.recorded_at, LogEntryRow.stream, LogEntryRow.seq)
        .limit(LIST_LIMIT)
    )
    return MeasureSection(
        imposed=imposed,
        lifted=lifted,
        active_at_end=tuple(m for m in items if m.active_at(as_of)),
        imposed_by_kind=tuple(sorted(kinds.items())),
        status_changes=tuple(
            _change(r.stream, r.seq, r.recorded_at, r.kind, r.payload) for r in changes
        ),
    )


def _status_kinds() -> Iterable[str]:
    yield from _SUSPENSION_KINDS
    yield from ("merchant.active", "agreement.active", "scenario.published")
    yield "product.delisted"


async def _anchoring(engine: AsyncEngine, period: Period, backend: str) -> AnchoringSection:
    status = await anchoring_status(engine)
    chain_id, contract = status.chain_id, status.contract
    registry = (AnchorRow.chain_id == chain_id, AnchorRow.contract == contract)
    streams = []
    async with engine.connect() as conn:
        for current in status.streams:
            stream = current.stream
            checkpoints = await conn.scalar(
                select(func.count())
                .select_from(CheckpointRow)
                .where(CheckpointRow.stream == stream, _in(CheckpointRow.created_at, period))
            )
            anchors = sorted(
                (str(s), int(n))
                for s, n in await conn.execute(
                    select(AnchorRow.status, func.count())
                    .where(*registry, AnchorRow.stream == stream, _in(AnchorRow.created_at, period))
                    .group_by(AnchorRow.status)
                )
            )
            requeues = await conn.scalar(
                select(func.coalesce(func.sum(AnchorRow.requeues), 0)).where(
                    *registry, AnchorRow.stream == stream, _in(AnchorRow.created_at, period)
                )
            )
            finals = (
                await conn.execute(
                    select(AnchorRow.size, AnchorRow.final_at)
                    .where(
                        *registry,
                        AnchorRow.stream == stream,
                        AnchorRow.status == "final",
                        _in(AnchorRow.final_at, period),
                    )
                    .order_by(AnchorRow.size)
                )
            ).all()
            max_lag: dt.timedelta | None = None
            lag_record: str | None = None
            final_at_end = 0
            if finals:
                before = await conn.scalar(
                    select(func.max(AnchorRow.size)).where(
                        *registry,
                        AnchorRow.stream == stream,
                        AnchorRow.status == "final",
                        AnchorRow.size < finals[0].size,
                    )
                )
                previous = int(before or 0)
                firsts: list[tuple[int, dt.datetime]] = []
                for size, final_at in finals:
                    if int(size) > previous and final_at is not None:
                        firsts.append((previous, utc(final_at)))
                        previous = int(size)
                final_at_end = previous
                recorded = await _recorded_at(conn, stream, [seq for seq, _ in firsts])
                for seq, final_at in firsts:
                    if seq in recorded:
                        lag = final_at - recorded[seq]
                        if max_lag is None or lag > max_lag:
                            max_lag, lag_record = lag, f"{stream}/{seq}"
            else:
                final_at_end = int(
                    await conn.scalar(
                        select(func.coalesce(func.max(AnchorRow.size), 0)).where(
                            *registry,
                            AnchorRow.stream == stream,
                            AnchorRow.status == "final",
                            AnchorRow.final_at < period.end,
                        )
                    )
                    or 0
                )
            streams.append(
                StreamAnchoringHealth(
                    stream=stream,
                    checkpoints=int(checkpoints or 0),
                    anchors=tuple(anchors),
                    final_in_quarter=len(finals),
                    final_size_at_end=final_at_end,
                    requeues=int(requeues or 0),
                    max_lag=max_lag,
                    max_lag_record=lag_record,
                    unanchored_checkpoints=current.unanchored_checkpoints,
                    unanchored_records=current.unanchored_entries,
                    oldest_unanchored_at=current.oldest_unanchored_at,
                )
            )
        tx_here = (
            AnchorTransactionRow.chain_id == chain_id,
            _in(AnchorTransactionRow.created_at, period),
        )
        transactions = sorted(
            (str(s), int(n))
            for s, n in await conn.execute(
                select(AnchorTransactionRow.status, func.count())
                .where(*tx_here)
                .group_by(AnchorTransactionRow.status)
            )
        )
        several = (
            select(AnchorTransactionRow.anchor_id)
            .where(*tx_here)
            .group_by(AnchorTransactionRow.anchor_id)
            .having(func.count() > 1)
            .subquery()
        )
        resent = await conn.scalar(select(func.count()).select_from(several))
    return AnchoringSection(
        backend=backend,
        chain_id=chain_id,
        contract=contract,
        streams=tuple(streams),
        transactions=tuple(transactions),
        resent_anchors=int(resent or 0),
    )


async def _recorded_at(
    conn: AsyncConnection, stream: str, seqs: Sequence[int]
) -> dict[int, dt.datetime]:
    """``recorded_at`` of the records ``seqs`` of ``stream``, by primary-key lookups in
    chunks (one per anchor that became final, so cheap)."""
    out: dict[int, dt.datetime] = {}
    for start in range(0, len(seqs), 500):
        chunk = list(seqs[start : start + 500])
        rows = await conn.execute(
            select(LogEntryRow.seq, LogEntryRow.recorded_at).where(
                LogEntryRow.stream == stream, LogEntryRow.seq.in_(chunk)
            )
        )
        out.update({int(seq): utc(at) for seq, at in rows})
    return out
