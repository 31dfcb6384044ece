"""Permission changes for the security report: the governance records of the quarter, grouped
so a reader finds grants, revocations and suspensions together, each read into who did it,
to what and why.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.clock import utc
from gateway.db.schema import LogEntryRow
from gateway.reports.periods import Period
from gateway.reports.queries import LIST_LIMIT, in_period

__all__ = [
    "CHANGE_GROUPS",
    "GovernanceChange",
    "PermissionSection",
    "change_from_record",
    "change_group",
    "gather_permissions",
    "status_change_kinds",
]

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


def change_from_record(
    stream: str, seq: int, at: dt.datetime, kind: str, payload: str
) -> GovernanceChange:
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


async def gather_permissions(conn: AsyncConnection, period: Period) -> PermissionSection:
    here = (LogEntryRow.stream == "governance", in_period(LogEntryRow.recorded_at, period))
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
    changes = tuple(
        change_from_record("governance", r.seq, r.recorded_at, r.kind, r.payload) for r in rows
    )
    return PermissionSection(
        total=sum(n for _, n in by_kind),
        by_kind=tuple(by_kind),
        by_group=tuple((g, groups[g]) for g in CHANGE_GROUPS if groups[g]),
        changes=changes,
    )


def status_change_kinds() -> Iterable[str]:
    yield from _SUSPENSION_KINDS
    yield from ("merchant.active", "agreement.active", "scenario.published")
    yield "product.delisted"
