"""A scenario: its grants, quotas, hours, plan and evaluation, and the statuses it moves
through. "One scenario, one authorization; no scenario, no authorization" (LZ24 §二.2)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.catalog.checks import check_id, expect_keys
from gateway.clock import DEFAULT_ZONE, utc
from gateway.errors import ConflictError, ValidationError
from gateway.governance.models.fields import positive_int
from gateway.governance.models.grants import DatasetGrant
from gateway.governance.models.times import parse_time_value
from gateway.governance.statuses import SCENARIO_TRANSITIONS, ScenarioStatus

__all__ = [
    "SCENARIO_TRANSITIONS",
    "DocumentRef",
    "Evaluation",
    "EvaluationConclusion",
    "Quotas",
    "Scenario",
    "ScenarioHours",
    "ScenarioStatus",
]


@dataclass(frozen=True, slots=True)
class Quotas:
    """Per merchant and scenario. Calls refused by policy do not consume quota."""

    rate_per_minute: int = 120
    daily_calls: int | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Quotas:
        expect_keys("quotas", data, set(), {"rate_per_minute", "daily_calls"})
        rate = positive_int("quotas.rate_per_minute", data.get("rate_per_minute", 120))
        assert rate is not None
        return cls(
            rate_per_minute=rate,
            daily_calls=positive_int(
                "quotas.daily_calls", data.get("daily_calls"), allow_none=True
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"rate_per_minute": self.rate_per_minute, "daily_calls": self.daily_calls}


@dataclass(frozen=True, slots=True)
class DocumentRef:
    """A document kept outside the gateway (a plan, an evaluation report, a letter of
    authorization), pinned by its SHA-256 so that the record proves which text was meant."""

    title: str
    reference: str
    sha256: str

    @classmethod
    def from_dict(cls, what: str, data: object) -> DocumentRef:
        if not isinstance(data, Mapping):
            raise ValidationError(f"{what} must be an object with title, reference and sha256")
        expect_keys(what, data, {"title", "reference", "sha256"})
        digest = data["sha256"]
        if not isinstance(digest, str) or len(digest) != 64 or not _is_hex(digest):
            raise ValidationError(f"{what}.sha256 must be the document's SHA-256 in 64 hex digits")
        for key in ("title", "reference"):
            value = data[key]
            if not isinstance(value, str) or not value.strip() or len(value) > 500:
                raise ValidationError(f"{what}.{key} must be a text of 1-500 characters")
        return cls(data["title"].strip(), data["reference"].strip(), digest.lower())

    def to_dict(self) -> dict[str, str]:
        return {"title": self.title, "reference": self.reference, "sha256": self.sha256}


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


class EvaluationConclusion(StrEnum):
    PASS = "pass"  # noqa: S105 - an evaluation outcome
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The evaluation record of a scenario: "one scenario, one plan, one evaluation"
    (CS23 art. 17). Only a passing evaluation lets the scenario be published."""

    evaluator: str
    conclusion: EvaluationConclusion
    evaluated_on: dt.date
    report: DocumentRef

    @classmethod
    def from_dict(cls, data: object) -> Evaluation:
        if not isinstance(data, Mapping):
            raise ValidationError("evaluation must be an object")
        expect_keys("evaluation", data, {"evaluator", "conclusion", "evaluated_on", "report"})
        evaluator = data["evaluator"]
        if not isinstance(evaluator, str) or not evaluator.strip() or len(evaluator) > 200:
            raise ValidationError("evaluation.evaluator must be a text of 1-200 characters")
        try:
            conclusion = EvaluationConclusion(data["conclusion"])
        except ValueError:
            raise ValidationError("evaluation.conclusion must be pass or fail") from None
        try:
            evaluated_on = dt.date.fromisoformat(str(data["evaluated_on"]))
        except ValueError:
            raise ValidationError("evaluation.evaluated_on must be a YYYY-MM-DD date") from None
        report = DocumentRef.from_dict("evaluation.report", data["report"])
        return cls(evaluator.strip(), conclusion, evaluated_on, report)

    def to_dict(self) -> dict[str, Any]:
        return {
            "evaluator": self.evaluator,
            "conclusion": self.conclusion.value,
            "evaluated_on": self.evaluated_on.isoformat(),
            "report": self.report.to_dict(),
        }


_HOUR_MINUTE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def _minutes(scenario_id: str, key: str, value: object) -> int:
    if value == "24:00" and key == "to":
        return 24 * 60
    match = _HOUR_MINUTE.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValidationError(
            f"scenario {scenario_id}: hours.{key} must be a time of day as HH:MM (00:00-23:59"
            f"{', or 24:00' if key == 'to' else ''}), got {value!r}"
        )
    return int(match.group(1)) * 60 + int(match.group(2))


@dataclass(frozen=True, slots=True)
class ScenarioHours:
    """The hours in which a scenario's data may be used, e.g. a lender's office hours.

    Calls outside them are not refused: the monitor raises an ``out-of-hours`` alert, so
    supervisors see use that the scenario's plan did not foresee. ``from`` later than ``to``
    spans midnight; the part after midnight belongs to the day the span began, which is the
    day ``days: "workdays"`` checks against the State Council calendar.
    """

    start_minute: int
    end_minute: int  # exclusive; 1440 is midnight at the end of the day
    days: str = "all"  # "all" | "workdays"
    timezone: str = "Asia/Shanghai"

    @classmethod
    def from_dict(
        cls, scenario_id: str, data: object, zone: dt.tzinfo = DEFAULT_ZONE
    ) -> ScenarioHours:
        """Without ``timezone`` the hours are in ``zone``, the deployment's zone."""
        if not isinstance(data, Mapping):
            raise ValidationError(
                f'scenario {scenario_id}: hours must be an object like {{"from": "08:00", '
                '"to": "20:00", "days": "workdays", "timezone": "Asia/Shanghai"}'
            )
        expect_keys("hours", data, {"from", "to"}, {"days", "timezone"})
        start = _minutes(scenario_id, "from", data["from"])
        end = _minutes(scenario_id, "to", data["to"])
        if start == end % (24 * 60):
            raise ValidationError(
                f"scenario {scenario_id}: hours.from and hours.to must differ (omit hours to "
                "allow any time)"
            )
        days = data.get("days", "all")
        if days not in ("all", "workdays"):
            raise ValidationError(f"scenario {scenario_id}: hours.days must be all or workdays")
        name = data.get("timezone", getattr(zone, "key", "Asia/Shanghai"))
        try:
            if not isinstance(name, str) or not name or len(name) > 64:
                raise ValueError(name)
            ZoneInfo(name)
        except (ValueError, ZoneInfoNotFoundError):
            raise ValidationError(
                f"scenario {scenario_id}: hours.timezone must be an IANA time zone such as "
                f"Asia/Shanghai, got {name!r}"
            ) from None
        return cls(start, end, days, name)

    def to_dict(self) -> dict[str, Any]:
        def text(minutes: int) -> str:
            return f"{minutes // 60:02d}:{minutes % 60:02d}"

        return {
            "from": text(self.start_minute),
            "to": text(self.end_minute),
            "days": self.days,
            "timezone": self.timezone,
        }

    def allows(self, when: dt.datetime, is_working_day: Callable[[dt.date], bool]) -> bool:
        """Whether ``when`` falls inside the hours; ``is_working_day`` decides workdays."""
        local = utc(when).astimezone(ZoneInfo(self.timezone))
        minute = local.hour * 60 + local.minute
        day = local.date()
        if self.start_minute < self.end_minute:
            inside = self.start_minute <= minute < self.end_minute
        elif minute >= self.start_minute:
            inside = True
        elif minute < self.end_minute:
            inside, day = True, day - dt.timedelta(days=1)
        else:
            inside = False
        return inside and (self.days == "all" or is_working_day(day))


@dataclass(frozen=True, slots=True)
class Scenario:
    id: str
    name: str
    domain: str
    purpose: str
    grants: tuple[DatasetGrant, ...]
    quotas: Quotas
    valid_from: dt.datetime
    valid_until: dt.datetime
    status: ScenarioStatus = ScenarioStatus.DRAFT
    plan: DocumentRef | None = None
    evaluation: Evaluation | None = None
    # The project's level: the owner's revenue share goes to the city's budget, or to the
    # named district's (CS23 art. 21).
    level: str = "city"
    district: str | None = None
    # When the data may be used; None: any time. Outside them the monitor alerts.
    hours: ScenarioHours | None = None

    def check_publishable(self) -> None:
        """One scenario, one plan, one evaluation (CS23 art. 17): a scenario is published
        only with its plan and a passing evaluation on record."""
        missing = []
        if self.plan is None:
            missing.append("its plan (dsgw scenario plan)")
        if self.evaluation is None:
            missing.append("an evaluation record (dsgw scenario evaluate)")
        if missing:
            raise ConflictError(
                f"scenario {self.id} needs {' and '.join(missing)} before it can be published "
                "(one scenario, one plan, one evaluation)"
            )
        assert self.evaluation is not None
        if self.evaluation.conclusion is not EvaluationConclusion.PASS:
            raise ConflictError(
                f"scenario {self.id}: the evaluation by {self.evaluation.evaluator} of "
                f"{self.evaluation.evaluated_on} did not pass; it cannot be published"
            )

    def grant(self, dataset_id: str) -> DatasetGrant | None:
        for grant in self.grants:
            if grant.dataset_id == dataset_id:
                return grant
        return None

    def usable_at(self, now: dt.datetime) -> bool:
        return self.status is ScenarioStatus.PUBLISHED and self.valid_from <= now < self.valid_until

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], zone: dt.tzinfo = DEFAULT_ZONE) -> Scenario:
        """Parse and validate; a date-only ``valid_from``/``valid_until`` is 00:00 of that
        day in ``zone`` (see :func:`parse_time_value`)."""
        expect_keys(
            "scenario",
            data,
            {"id", "name", "purpose", "grants", "valid_from", "valid_until"},
            {"domain", "quotas", "status", "plan", "evaluation", "level", "district", "hours"},
        )
        scenario_id = check_id("scenario", data["id"])
        grants_raw = data["grants"]
        if not isinstance(grants_raw, list) or not grants_raw:
            raise ValidationError(f"scenario {scenario_id}: grants must be a non-empty list")
        grants = tuple(DatasetGrant.from_dict(g) for g in grants_raw)
        if len({g.dataset_id for g in grants}) != len(grants):
            raise ValidationError(f"scenario {scenario_id}: a dataset is granted twice")
        valid_from = parse_time_value("valid_from", data["valid_from"], zone)
        valid_until = parse_time_value("valid_until", data["valid_until"], zone)
        if valid_until <= valid_from:
            raise ValidationError(f"scenario {scenario_id}: valid_until must be after valid_from")
        try:
            status = ScenarioStatus(data.get("status", "draft"))
        except ValueError as exc:
            raise ValidationError(f"scenario {scenario_id}: unknown status") from exc

        def text(key: str, default: str = "") -> str:
            value = data.get(key, default)
            if not isinstance(value, str) or len(value) > 2000:
                raise ValidationError(f"scenario {scenario_id}: {key} must be a string")
            return value

        if not text("name").strip() or not text("purpose").strip():
            raise ValidationError(f"scenario {scenario_id}: name and purpose are required")
        level = data.get("level", "city")
        district = data.get("district")
        if level not in ("city", "district"):
            raise ValidationError(f"scenario {scenario_id}: level must be city or district")
        if (level == "district") != isinstance(district, str) or (
            isinstance(district, str) and not 0 < len(district.strip()) <= 100
        ):
            raise ValidationError(
                f"scenario {scenario_id}: a district-level project names its district, and "
                "only such a project does"
            )
        return cls(
            id=scenario_id,
            name=text("name"),
            domain=text("domain", "general"),
            purpose=text("purpose"),
            grants=grants,
            quotas=Quotas.from_dict(data.get("quotas", {})),
            valid_from=valid_from,
            valid_until=valid_until,
            status=status,
            level=level,
            district=district,
            plan=DocumentRef.from_dict("plan", data["plan"]) if data.get("plan") else None,
            evaluation=(
                Evaluation.from_dict(data["evaluation"]) if data.get("evaluation") else None
            ),
            hours=(
                ScenarioHours.from_dict(scenario_id, data["hours"], zone)
                if data.get("hours") is not None
                else None
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "level": self.level,
            "district": self.district,
            "plan": self.plan.to_dict() if self.plan else None,
            "evaluation": self.evaluation.to_dict() if self.evaluation else None,
            "id": self.id,
            "name": self.name,
            "domain": self.domain,
            "purpose": self.purpose,
            "grants": [g.to_dict() for g in self.grants],
            "quotas": self.quotas.to_dict(),
            "valid_from": self.valid_from.isoformat(),
            "valid_until": self.valid_until.isoformat(),
            "status": self.status.value,
        }
        if self.hours is not None:
            # Only when set, so definitions without hours (and their hashes) stay as they were.
            out["hours"] = self.hours.to_dict()
        return out

    def check_transition(self, target: ScenarioStatus) -> None:
        if target not in SCENARIO_TRANSITIONS[self.status]:
            raise ConflictError(
                f"scenario {self.id} is {self.status.value}; it cannot become {target.value}"
            )
