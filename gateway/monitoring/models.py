"""What monitoring produces: a rule's :class:`Detection` and the persisted :class:`Alert`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gateway.clock import utc
from gateway.errors import ValidationError

__all__ = [
    "RULES",
    "Alert",
    "AlertChange",
    "AlertStatus",
    "Detection",
    "Severity",
    "parse_choices",
]

# Every rule name an alert can carry; `audit-divergence` is raised by `dsgw audit`.
RULES = (
    "volume-spike",
    "enumeration",
    "scraping",
    "refusal-burst",
    "out-of-hours",
    "invalid-tokens",
    "audit-divergence",
)


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return list(Severity).index(self)

    def raised(self) -> Severity:
        """One level up (critical stays critical)."""
        return list(Severity)[min(self.rank + 1, len(Severity) - 1)]


class AlertStatus(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


def parse_choices(what: str, raw: str | Sequence[str] | None, allowed: Sequence[str]) -> list[str]:
    """A filter given as a comma-separated string or a list, each value checked, so a typo
    is a clear 400 instead of an empty list."""
    if raw is None:
        return []
    parts = raw.split(",") if isinstance(raw, str) else list(raw)
    values = [p.strip() for p in parts if p.strip()]
    for value in values:
        if value not in allowed:
            raise ValidationError(f"{what} must be one of {', '.join(allowed)}; got {value!r}")
    return values


@dataclass(frozen=True, slots=True)
class Detection:
    """One rule firing on one subject, at the end of the window where it was worst.

    ``key`` names the subject (``merchant:m1``, ``remote:1.2.3.4``, ...): while an alert with
    the same rule and key is unresolved, a new detection adds to it instead of opening
    another. ``figures`` are what the rule measured (count, threshold, window, baseline);
    ``records`` the ``calls`` stream positions it measured, so each has an evidence bundle.
    """

    rule: str
    key: str
    severity: Severity
    title: str
    detail: str
    at: dt.datetime
    figures: Mapping[str, Any]
    records: Sequence[int] = ()
    merchant_id: str | None = None
    scenario_id: str | None = None
    record_stream: str = "calls"

    def record_ids(self) -> list[str]:
        return [f"{self.record_stream}/{seq}" for seq in self.records]


@dataclass(frozen=True, slots=True)
class Alert:
    id: int
    rule: str
    key: str
    severity: Severity
    status: AlertStatus
    merchant_id: str | None
    scenario_id: str | None
    title: str
    detail: str
    evidence: Mapping[str, Any]
    occurrences: int
    first_seen: dt.datetime
    last_seen: dt.datetime
    handled_by: str | None = None
    handled_at: dt.datetime | None = None
    resolution: str | None = None
    measure_id: str | None = None
    webhook_status: str = "off"
    webhook_attempts: int = 0
    webhook_next_at: dt.datetime | None = None

    @classmethod
    def from_row(cls, row: Any) -> Alert:
        return cls(
            id=int(row.id),
            rule=row.rule,
            key=row.key,
            severity=Severity(row.severity),
            status=AlertStatus(row.status),
            merchant_id=row.merchant_id,
            scenario_id=row.scenario_id,
            title=row.title,
            detail=row.detail,
            evidence=dict(row.evidence or {}),
            occurrences=int(row.occurrences),
            first_seen=utc(row.first_seen),
            last_seen=utc(row.last_seen),
            handled_by=row.handled_by,
            handled_at=utc(row.handled_at) if row.handled_at is not None else None,
            resolution=row.resolution,
            measure_id=row.measure_id,
            webhook_status=row.webhook_status,
            webhook_attempts=int(row.webhook_attempts),
            webhook_next_at=utc(row.webhook_next_at) if row.webhook_next_at else None,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "rule": self.rule,
            "key": self.key,
            "severity": self.severity.value,
            "status": self.status.value,
            "merchant_id": self.merchant_id,
            "scenario_id": self.scenario_id,
            "title": self.title,
            "detail": self.detail,
            "evidence": dict(self.evidence),
            "occurrences": self.occurrences,
            "first_seen": self.first_seen.isoformat(),
            "last_seen": self.last_seen.isoformat(),
            "handled_by": self.handled_by,
            "handled_at": self.handled_at.isoformat() if self.handled_at else None,
            "resolution": self.resolution,
            "measure_id": self.measure_id,
            "webhook": {
                "status": self.webhook_status,
                "attempts": self.webhook_attempts,
                "next_at": self.webhook_next_at.isoformat() if self.webhook_next_at else None,
            },
        }


@dataclass(frozen=True, slots=True)
class AlertChange:
    """What recording a detection did: ``event`` is ``raised`` (a new alert), ``escalated``
    (an unresolved one got a higher severity) or ``repeated`` (it fired again)."""

    alert: Alert
    event: str
    governance_record: str | None = None
