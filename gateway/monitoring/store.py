"""Persisted alerts: raised by the monitor (or ``dsgw audit``), handled by staff.

Raising and handling are records in the ``governance`` log stream, committed with the alert
row, so an alert and what was done about it are anchored evidence like any other change.
They do not move the policy epoch: an alert changes nobody's authorization (a supervision
measure does, and records itself).

Repeated detections of one rule on one subject (its ``key``) add to the unresolved alert
instead of opening another: occurrences, last seen, the latest figures and a bounded list of
call record ids. Only a new alert, a raised severity and its handling are new records and
webhook events; a mere repetition is not, so an ongoing attack does not flood either.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.authorization.roles import Action
from gateway.clock import Clock, utc
from gateway.db.schema import AlertRow, MeasureRow
from gateway.errors import ConflictError, NotFoundError, ValidationError
from gateway.governance.actor import Actor
from gateway.ledger.audit import Finding
from gateway.ledger.hashing import HashAlgorithm
from gateway.ledger.log import PendingRecord, append_in_transaction
from gateway.monitoring.models import (
    RULES,
    Alert,
    AlertChange,
    AlertStatus,
    Detection,
    Severity,
    parse_choices,
)

__all__ = ["AUDIT_ACTOR", "MONITOR_ACTOR", "AlertStore"]

T = TypeVar("T")

MONITOR_ACTOR = Actor("monitor", system=True)
AUDIT_ACTOR = Actor("audit", system=True)
UNRESOLVED = (AlertStatus.OPEN.value, AlertStatus.ACKNOWLEDGED.value)
MAX_FIRINGS = 20
MAX_TEXT = 2000


def _merge_records(old: Sequence[str], new: Sequence[str], bound: int) -> list[str]:
    """Known ids first, then new ones, keeping the newest ``bound`` (evidence of the latest
    activity matters most; the first firing's ids stay in the governance record)."""
    merged = list(dict.fromkeys([*old, *new]))
    return merged[-bound:]


class AlertStore:
    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        *,
        algorithm: HashAlgorithm = "sha256",
        evidence_records: int = 50,
        webhook: bool = False,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._algorithm: HashAlgorithm = algorithm
        self._evidence_records = evidence_records
        # Whether raising and handling queue a webhook delivery (alert_webhook_url is set).
        self.webhook = webhook

    async def transaction(self, work: Callable[[AsyncConnection, dt.datetime], Awaitable[T]]) -> T:
        """Run ``work`` in one transaction; a concurrent append to the governance stream
        took our position, so run it again on the new head."""
        for _attempt in range(5):
            now = self._clock.now()
            try:
                async with self._engine.begin() as conn:
                    return await work(conn, now)
            except IntegrityError:
                continue
        raise ConflictError("alerts: concurrent changes kept conflicting; try again")

    async def _append(
        self, conn: AsyncConnection, now: dt.datetime, actor: Actor, kind: str, body: Any
    ) -> str:
        entry = await append_in_transaction(
            conn,
            PendingRecord(
                stream="governance",
                kind=kind,
                recorded_at=now,
                body={"actor": actor.to_dict(), **body},
            ),
            self._algorithm,
        )
        return entry.record_id

    def _webhook_values(self, now: dt.datetime) -> dict[str, Any]:
        if not self.webhook:
            return {}
        return {"webhook_status": "pending", "webhook_attempts": 0, "webhook_next_at": now}

    # -- raising ----------------------------------------------------------------------------

    async def record(
        self,
        conn: AsyncConnection,
        now: dt.datetime,
        detection: Detection,
        actor: Actor = MONITOR_ACTOR,
    ) -> AlertChange:
        """Add ``detection`` inside the caller's transaction: a new alert, or one more
        occurrence of the unresolved alert with the same rule and key."""
        row = (
            await conn.execute(
                select(AlertRow.__table__)
                .where(
                    AlertRow.rule == detection.rule,
                    AlertRow.key == detection.key,
                    AlertRow.status.in_(UNRESOLVED),
                )
                .order_by(AlertRow.id.desc())
                .limit(1)
                .with_for_update()
            )
        ).first()
        firing = {"at": detection.at.isoformat(), "figures": dict(detection.figures)}
        records = detection.record_ids()[-self._evidence_records :]
        if row is None:
            evidence = {
                "figures": dict(detection.figures),
                "records": records,
                "firings": [firing],
            }
            values = {
                "rule": detection.rule,
                "key": detection.key[:200],
                "severity": detection.severity.value,
                "status": AlertStatus.OPEN.value,
                "merchant_id": detection.merchant_id,
                "scenario_id": detection.scenario_id,
                "title": detection.title[:300],
                "detail": detection.detail,
                "evidence": evidence,
                "occurrences": 1,
                "first_seen": detection.at,
                "last_seen": detection.at,
                "webhook_status": "off",
                "webhook_attempts": 0,
                "webhook_next_at": None,
                **self._webhook_values(now),
            }
            result = await conn.execute(insert(AlertRow).values(**values).returning(AlertRow.id))
            alert_id = int(result.scalar_one())
            record_id = await self._append(
                conn,
                now,
                actor,
                "alert.raised",
                {
                    "alert_id": alert_id,
                    "rule": detection.rule,
                    "key": values["key"],
                    "severity": detection.severity.value,
                    "merchant_id": detection.merchant_id,
                    "scenario_id": detection.scenario_id,
                    "title": values["title"],
                    "figures": dict(detection.figures),
                    "records": records,
                },
            )
            return AlertChange(await self._load(conn, alert_id), "raised", record_id)
        current = Alert.from_row(row)
        old = dict(current.evidence)
        evidence = {
            **old,
            "figures": dict(detection.figures),
            "records": _merge_records(old.get("records", []), records, self._evidence_records),
            "firings": [*old.get("firings", []), firing][-MAX_FIRINGS:],
        }
        escalated = detection.severity.rank > current.severity.rank
        values = {
            "evidence": evidence,
            "occurrences": current.occurrences + 1,
            "last_seen": max(current.last_seen, utc(detection.at)),
            "detail": detection.detail,
        }
        escalation_record: str | None = None
        if escalated:
            values.update(
                severity=detection.severity.value,
                title=detection.title[:300],
                **self._webhook_values(now),
            )
            escalation_record = await self._append(
                conn,
                now,
                actor,
                "alert.escalated",
                {
                    "alert_id": current.id,
                    "rule": current.rule,
                    "key": current.key,
                    "severity": detection.severity.value,
                    "previous_severity": current.severity.value,
                    "figures": dict(detection.figures),
                    "records": records,
                },
            )
        await conn.execute(update(AlertRow).where(AlertRow.id == current.id).values(**values))
        event = "escalated" if escalated else "repeated"
        return AlertChange(await self._load(conn, current.id), event, escalation_record)

    async def raise_detections(
        self, detections: Sequence[Detection], actor: Actor = MONITOR_ACTOR
    ) -> list[AlertChange]:
        """Record detections in their own transaction (the monitor uses :meth:`record`
        inside the transaction that advances its cursor)."""

        async def work(conn: AsyncConnection, now: dt.datetime) -> list[AlertChange]:
            return [await self.record(conn, now, d, actor) for d in detections]

        return await self.transaction(work)

    async def raise_audit_divergence(
        self, findings: Sequence[Finding], *, chain: bool
    ) -> list[AlertChange]:
        """A critical alert per stream in which ``dsgw audit`` found the log, its
        checkpoints or (with ``chain``) its anchors diverging. Called by the audit command
        when it fails; its exit code is unchanged."""
        by_stream: dict[str, list[Finding]] = {}
        for finding in findings:
            by_stream.setdefault(finding.stream, []).append(finding)
        now = self._clock.now()
        detections = []
        for stream, found in sorted(by_stream.items()):
            kinds = Counter(f.kind for f in found)
            where = "log, its checkpoints and its anchors" if chain else "log and its checkpoints"
            detections.append(
                Detection(
                    rule="audit-divergence",
                    key=f"stream:{stream}",
                    severity=Severity.CRITICAL,
                    title=f"Audit: the {stream} stream diverges ({len(found)} findings)",
                    detail=(
                        f"dsgw audit{' --chain' if chain else ''} recomputed the {stream} "
                        f"stream and found {len(found)} divergences between the {where}: "
                        + ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
                        + ". Records may have been edited, deleted, inserted or reordered."
                    ),
                    at=now,
                    figures={
                        "stream": stream,
                        "findings": len(found),
                        "kinds": dict(sorted(kinds.items())),
                        "chain": chain,
                        "first_findings": [f.to_dict() for f in found[:20]],
                    },
                    records=sorted({f.seq for f in found if f.seq >= 0}),
                    record_stream=stream,
                )
            )
        return await self.raise_detections(detections, AUDIT_ACTOR)

    # -- reading ----------------------------------------------------------------------------

    async def _load(self, conn: AsyncConnection, alert_id: int) -> Alert:
        if not 0 < alert_id < 2**31:  # ids are 32-bit: a larger one names no alert
            raise NotFoundError(f"no alert {alert_id}")
        row = (
            await conn.execute(select(AlertRow.__table__).where(AlertRow.id == alert_id))
        ).first()
        if row is None:
            raise NotFoundError(f"no alert {alert_id}")
        return Alert.from_row(row)

    async def find(
        self,
        actor: Actor,
        *,
        status: str | Sequence[str] | None = None,
        severity: str | Sequence[str] | None = None,
        rule: str | Sequence[str] | None = None,
        merchant_id: str | None = None,
        limit: int = 100,
    ) -> list[Alert]:
        """Alerts, newest first; by default the unresolved ones (open and acknowledged).
        Filters take one value or several (a list or comma-separated)."""
        actor.may(Action.READ_ALERTS)
        statuses = parse_choices("status", status, [s.value for s in AlertStatus]) or list(
            UNRESOLVED
        )
        severities = parse_choices("severity", severity, [s.value for s in Severity])
        rules = parse_choices("rule", rule, RULES)
        if not 1 <= limit <= 500:
            raise ValidationError("limit must be between 1 and 500")
        query = select(AlertRow.__table__).where(AlertRow.status.in_(statuses))
        if severities:
            query = query.where(AlertRow.severity.in_(severities))
        if rules:
            query = query.where(AlertRow.rule.in_(rules))
        if merchant_id:
            query = query.where(AlertRow.merchant_id == merchant_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query.order_by(AlertRow.id.desc()).limit(limit))).all()
        return [Alert.from_row(row) for row in rows]

    async def get(self, actor: Actor, alert_id: int) -> Alert:
        actor.may(Action.READ_ALERTS)
        async with self._engine.connect() as conn:
            return await self._load(conn, alert_id)

    # -- handling ---------------------------------------------------------------------------

    async def acknowledge(self, actor: Actor, alert_id: int, note: str = "") -> Alert:
        """Someone is looking at it: the alert stays unresolved (and keeps collecting
        occurrences) but is no longer news."""
        actor.may(Action.HANDLE_ALERT)
        if len(note) > MAX_TEXT:
            raise ValidationError(f"note may be at most {MAX_TEXT} characters")

        async def work(conn: AsyncConnection, now: dt.datetime) -> Alert:
            alert = await self._load(conn, alert_id)
            if alert.status is not AlertStatus.OPEN:
                raise ConflictError(
                    f"alert {alert_id} is {alert.status.value}; only an open alert can be "
                    "acknowledged"
                )
            await self._handle(conn, now, actor, alert, AlertStatus.ACKNOWLEDGED, note=note)
            return await self._load(conn, alert_id)

        return await self.transaction(work)

    async def resolve(
        self, actor: Actor, alert_id: int, resolution: str, measure_id: str | None = None
    ) -> Alert:
        """Close the alert with what was done, optionally naming the supervision measure
        taken (``supervision_measures``). A later detection opens a new alert."""
        actor.may(Action.HANDLE_ALERT)
        if not resolution.strip() or len(resolution) > MAX_TEXT:
            raise ValidationError(f"a resolution is required (1-{MAX_TEXT} characters)")
        if measure_id is not None and not 0 < len(measure_id) <= 64:
            raise ValidationError("measure_id must be 1-64 characters")

        async def work(conn: AsyncConnection, now: dt.datetime) -> Alert:
            alert = await self._load(conn, alert_id)
            if alert.status is AlertStatus.RESOLVED:
                raise ConflictError(f"alert {alert_id} is already resolved")
            if measure_id is not None:
                found = await conn.scalar(select(MeasureRow.id).where(MeasureRow.id == measure_id))
                if found is None:
                    raise NotFoundError(f"no supervision measure {measure_id}")
            await self._handle(
                conn,
                now,
                actor,
                alert,
                AlertStatus.RESOLVED,
                resolution=resolution,
                measure_id=measure_id,
            )
            return await self._load(conn, alert_id)

        return await self.transaction(work)

    async def _handle(
        self,
        conn: AsyncConnection,
        now: dt.datetime,
        actor: Actor,
        alert: Alert,
        status: AlertStatus,
        **details: str | None,
    ) -> None:
        step = {"action": status.value, "by": actor.id, "at": now.isoformat()}
        step.update({k: v for k, v in details.items() if v})
        evidence = {**alert.evidence, "handling": [*alert.evidence.get("handling", []), step]}
        values: dict[str, Any] = {
            "status": status.value,
            "handled_by": actor.id[:64],
            "handled_at": now,
            "evidence": evidence,
            **self._webhook_values(now),
        }
        if status is AlertStatus.RESOLVED:
            values.update(resolution=details["resolution"], measure_id=details.get("measure_id"))
        # The status in the WHERE clause: two handlers racing, the second finds nothing.
        result = await conn.execute(
            update(AlertRow)
            .where(AlertRow.id == alert.id, AlertRow.status == alert.status.value)
            .values(**values)
        )
        if result.rowcount != 1:
            raise ConflictError(f"alert {alert.id} was handled concurrently; reload it")
        await self._append(
            conn,
            now,
            actor,
            f"alert.{status.value}",
            {
                "alert_id": alert.id,
                "rule": alert.rule,
                "key": alert.key,
                **{k: v for k, v in details.items() if v is not None},
            },
        )

    # -- webhook state ------------------------------------------------------------------------

    async def due_deliveries(self, now: dt.datetime, limit: int = 20) -> list[Alert]:
        """Alerts whose webhook delivery is pending and due."""
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(AlertRow.__table__)
                    .where(AlertRow.webhook_status == "pending", AlertRow.webhook_next_at <= now)
                    .order_by(AlertRow.webhook_next_at, AlertRow.id)
                    .limit(limit)
                )
            ).all()
        return [Alert.from_row(row) for row in rows]

    async def claim_delivery(self, alert: Alert, lease_until: dt.datetime) -> bool:
        """Take one delivery attempt (compare-and-set on the attempt count), so two
        processes never post the same attempt."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(AlertRow)
                .where(
                    AlertRow.id == alert.id,
                    AlertRow.webhook_status == "pending",
                    AlertRow.webhook_attempts == alert.webhook_attempts,
                )
                .values(webhook_attempts=alert.webhook_attempts + 1, webhook_next_at=lease_until)
            )
        return result.rowcount == 1

    async def finish_delivery(
        self,
        alert_id: int,
        attempts: int,
        lease_until: dt.datetime,
        *,
        status: str,
        next_at: dt.datetime | None,
    ) -> None:
        """Record an attempt's outcome, unless the alert changed meanwhile (then its new
        state is pending and will be delivered in turn)."""
        async with self._engine.begin() as conn:
            await conn.execute(
                update(AlertRow)
                .where(
                    AlertRow.id == alert_id,
                    AlertRow.webhook_status == "pending",
                    AlertRow.webhook_attempts == attempts,
                    AlertRow.webhook_next_at == lease_until,
                )
                .values(webhook_status=status, webhook_next_at=next_at)
            )
