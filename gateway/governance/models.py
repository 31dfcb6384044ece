"""Scenarios, merchants, agreements and clients: who may use which data, and how.

"One scenario, one authorization; no scenario, no authorization" (LZ24 §二.2): every grant of
data is a :class:`DatasetGrant` inside a published :class:`Scenario`, reached only through an
active :class:`Agreement` between a merchant and that scenario.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.catalog.models import Dataset, check_id, expect_keys
from gateway.clock import DEFAULT_ZONE, start_of_day, utc
from gateway.errors import CatalogError, ConflictError, ValidationError
from gateway.privacy.verify_budget import VerifyBudget

__all__ = [
    "DELTA_UNIT",
    "EPSILON_UNIT",
    "MAX_AGREEMENT_YEARS",
    "MODE_NAMES",
    "RENEWAL_NOTICE_MONTHS",
    "Agreement",
    "AgreementStatus",
    "Client",
    "DatasetGrant",
    "DocumentRef",
    "Evaluation",
    "EvaluationConclusion",
    "Merchant",
    "MerchantStatus",
    "Mode",
    "PrivacyBudget",
    "Quotas",
    "Scenario",
    "ScenarioHours",
    "ScenarioStatus",
    "add_months",
    "add_years",
    "parse_time_value",
    "renewal_from",
    "units_text",
]

MAX_AGREEMENT_YEARS = 3


class Mode(StrEnum):
    """Access modes of the data plane: "verification, query, desensitization or computed
    results" (CS21 art. 24), never a raw export."""

    VERIFY = "verify"
    QUERY = "query"
    AGGREGATE = "aggregate"
    # Differentially private aggregate under a per-agreement budget (docs/privacy.md).
    AGGREGATE_DP = "aggregate-dp"


MODE_NAMES = ", ".join(m.value for m in Mode)


class ScenarioStatus(StrEnum):
    DRAFT = "draft"
    PUBLISHED = "published"
    SUSPENDED = "suspended"
    RETIRED = "retired"


SCENARIO_TRANSITIONS: dict[ScenarioStatus, frozenset[ScenarioStatus]] = {
    ScenarioStatus.DRAFT: frozenset({ScenarioStatus.PUBLISHED, ScenarioStatus.RETIRED}),
    ScenarioStatus.PUBLISHED: frozenset({ScenarioStatus.SUSPENDED, ScenarioStatus.RETIRED}),
    ScenarioStatus.SUSPENDED: frozenset({ScenarioStatus.PUBLISHED, ScenarioStatus.RETIRED}),
    ScenarioStatus.RETIRED: frozenset(),
}


class MerchantStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class AgreementStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    TERMINATED = "terminated"


AGREEMENT_TRANSITIONS: dict[AgreementStatus, frozenset[AgreementStatus]] = {
    AgreementStatus.ACTIVE: frozenset({AgreementStatus.SUSPENDED, AgreementStatus.TERMINATED}),
    AgreementStatus.SUSPENDED: frozenset({AgreementStatus.ACTIVE, AgreementStatus.TERMINATED}),
    AgreementStatus.TERMINATED: frozenset(),
}


def parse_time_value(what: str, value: object, zone: dt.tzinfo = DEFAULT_ZONE) -> dt.datetime:
    """An RFC 3339 timestamp, or a date: 00:00 of that day in ``zone`` (the deployment's
    time zone), as an aware UTC datetime.

    Periods are half-open, ``[start, end)``, so a date-only start is the first instant of
    its day and a date-only end the first instant no longer in the period: "valid_from
    2026-12-06, valid_until 2027-01-01" is every Beijing day from 6 December to 31
    December 2026 inclusive (docs/workdays.md, "Dates are days in the deployment zone").
    A timestamp keeps its own offset; naive timestamps are UTC, as everywhere in dsgw.
    """
    if isinstance(value, dt.datetime):
        return utc(value)
    if isinstance(value, dt.date):
        return start_of_day(value, zone)
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be an RFC 3339 time or a YYYY-MM-DD date")
    try:
        if len(value) == 10:
            return start_of_day(dt.date.fromisoformat(value), zone)
        return utc(dt.datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError as exc:
        raise ValidationError(f"{what}: {value!r} is not an RFC 3339 time or a date") from exc


def add_years(moment: dt.datetime, years: int) -> dt.datetime:
    """Same calendar day ``years`` later; 29 February falls back to 28 February."""
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:
        return moment.replace(year=moment.year + years, day=28)


def add_months(moment: dt.datetime, months: int) -> dt.datetime:
    """Same day ``months`` later (or earlier, for a negative count); a day the target month
    lacks falls back to its last day."""
    year, month0 = divmod(moment.year * 12 + moment.month - 1 + months, 12)
    last_day = calendar.monthrange(year, month0 + 1)[1]
    return moment.replace(year=year, month=month0 + 1, day=min(moment.day, last_day))


RENEWAL_NOTICE_MONTHS = 3
"""The operator re-applies 3 months before an agreement expires (CS23 art. 22)."""


def renewal_from(ends_at: dt.datetime) -> dt.datetime:
    """When the renewal reminder of an agreement ending at ``ends_at`` is due."""
    return add_months(ends_at, -RENEWAL_NOTICE_MONTHS)


def _str_list(what: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or any(not isinstance(v, str) for v in value):
        raise ValidationError(f"{what} must be a list of field names")
    if len(set(value)) != len(value):
        raise ValidationError(f"{what} lists a field twice")
    return tuple(value)


def _positive_int(what: str, value: object, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValidationError(f"{what} must be a positive integer")
    return value


PRIVACY_PERIODS = ("day", "month", "agreement")
MAX_EPSILON = 20.0
MAX_DELTA = 1e-4
MAX_CALLS_PER_PERIOD = 10_000
MAX_GROUPS_PER_SUBJECT = 100
EPSILON_UNIT = Decimal("0.000001")  # stored as integer millionths (privacy_spend)
DELTA_UNIT = Decimal("1e-12")  # stored as integer 10^-12 units


def units_text(count: int, unit: Decimal) -> str:
    """``count`` units as a plain decimal string without trailing zeros, e.g. "0.5"."""
    text = format(Decimal(count) * unit, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _fixed(what: str, value: object, unit: Decimal) -> int:
    """A positive finite number as an integer count of ``unit`` (refused if not exact)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValidationError(f"{what} must be a positive number")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValidationError(f"{what}: {value!r} is not a number") from None
    if not number.is_finite() or number <= 0:
        raise ValidationError(f"{what} must be a positive finite number, got {value!r}")
    units = number / unit
    if units != units.to_integral_value():
        raise ValidationError(f"{what} must be a multiple of {unit}, got {value!r}")
    return int(units)


@dataclass(frozen=True, slots=True)
class PrivacyBudget:
    """The differential-privacy budget of an ``aggregate-dp`` grant (docs/privacy.md).

    ``epsilon``/``delta`` bound what one agreement may spend on the dataset per ``period``
    ("day" or "month" in the deployment zone, or "agreement": its whole life); every call
    spends ``call_epsilon`` and :attr:`call_delta`, the total δ spread evenly over the
    calls the ε budget allows, so both run out together. ``max_groups_per_subject`` (L)
    is how many groups of one answer a subject may count in; the data plane truncates a
    subject's rows beyond L groups. ε is kept in millionths and δ in 10^-12 units, exactly
    as the budget store counts them."""

    epsilon_micros: int
    delta_picos: int
    period: str
    call_epsilon_micros: int
    max_groups_per_subject: int

    @property
    def epsilon(self) -> float:
        return self.epsilon_micros / 1e6

    @property
    def delta(self) -> float:
        return self.delta_picos / 1e12

    @property
    def call_epsilon(self) -> float:
        return self.call_epsilon_micros / 1e6

    @property
    def calls_per_period(self) -> int:
        return self.epsilon_micros // self.call_epsilon_micros

    @property
    def call_delta_picos(self) -> int:
        return self.delta_picos // self.calls_per_period

    @property
    def call_delta(self) -> float:
        return self.call_delta_picos / 1e12

    @classmethod
    def from_dict(cls, dataset_id: str, data: object) -> PrivacyBudget:
        what = f"grant {dataset_id}: privacy"
        if not isinstance(data, Mapping):
            raise ValidationError(
                f'{what} must be an object like {{"epsilon": 4.0, "delta": 1e-6, "period": '
                '"month", "call_epsilon": 0.5, "max_groups_per_subject": 1}'
            )
        expect_keys(
            what,
            data,
            {"epsilon", "delta", "period", "call_epsilon"},
            {"max_groups_per_subject"},
        )
        epsilon = _fixed(f"{what}.epsilon", data["epsilon"], EPSILON_UNIT)
        call_epsilon = _fixed(f"{what}.call_epsilon", data["call_epsilon"], EPSILON_UNIT)
        delta = _fixed(f"{what}.delta", data["delta"], DELTA_UNIT)
        if epsilon > MAX_EPSILON * 1_000_000:
            raise ValidationError(f"{what}.epsilon may not exceed {MAX_EPSILON:g} per period")
        if call_epsilon > epsilon:
            raise ValidationError(f"{what}.call_epsilon may not exceed epsilon")
        if epsilon // call_epsilon > MAX_CALLS_PER_PERIOD:
            raise ValidationError(
                f"{what}: epsilon / call_epsilon allows more than {MAX_CALLS_PER_PERIOD} "
                "calls per period; raise call_epsilon"
            )
        if delta > int(Decimal(str(MAX_DELTA)) / DELTA_UNIT):
            raise ValidationError(f"{what}.delta may not exceed {MAX_DELTA:g}")
        if delta // (epsilon // call_epsilon) < 1:
            raise ValidationError(
                f"{what}.delta must leave each of the {epsilon // call_epsilon} calls at "
                "least 1e-12"
            )
        period = data["period"]
        if period not in PRIVACY_PERIODS:
            raise ValidationError(f"{what}.period must be one of {', '.join(PRIVACY_PERIODS)}")
        groups = _positive_int(
            f"{what}.max_groups_per_subject", data.get("max_groups_per_subject", 1)
        )
        assert groups is not None
        if groups > MAX_GROUPS_PER_SUBJECT:
            raise ValidationError(
                f"{what}.max_groups_per_subject may not exceed {MAX_GROUPS_PER_SUBJECT}"
            )
        return cls(epsilon, delta, period, call_epsilon, groups)

    def to_dict(self) -> dict[str, Any]:
        """ε and δ as exact decimal strings: records and their hashes hold no floats."""
        return {
            "epsilon": units_text(self.epsilon_micros, EPSILON_UNIT),
            "delta": units_text(self.delta_picos, DELTA_UNIT),
            "period": self.period,
            "call_epsilon": units_text(self.call_epsilon_micros, EPSILON_UNIT),
            "max_groups_per_subject": self.max_groups_per_subject,
        }


@dataclass(frozen=True, slots=True)
class DatasetGrant:
    """What one scenario may do with one dataset: the minimum necessary (CS21 art. 21)."""

    dataset_id: str
    modes: frozenset[Mode]
    # Fields a query may return.
    fields: tuple[str, ...] = ()
    # Fields a query or aggregate may filter on.
    filter_fields: tuple[str, ...] = ()
    # A query must filter with equality on at least one of these (no unfiltered dumps).
    required_filters: tuple[str, ...] = ()
    # Fields a verification may submit (must include the dataset's key fields).
    verify_fields: tuple[str, ...] = ()
    reveal_mismatch: bool = False
    group_by: tuple[str, ...] = ()
    measure_fields: tuple[str, ...] = ()
    row_cap: int = 100
    # Sensitive fields a query may return unmasked, and only under an agreement that
    # carries the data subjects' letters of authorization for this dataset (ZW art. 28;
    # CS23 art. 26(5)); without one they stay masked whatever the scenario says.
    clear_fields: tuple[str, ...] = ()
    # The differential-privacy budget; required with (and only with) aggregate-dp.
    privacy: PrivacyBudget | None = None
    # Bound on negative verify answers per subject and window (docs/privacy.md); None: the
    # deployment's default applies to verify calls that claim a sensitive field.
    verify_budget: VerifyBudget | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetGrant:
        expect_keys(
            "dataset grant",
            data,
            {"dataset", "modes"},
            {
                "fields",
                "filter_fields",
                "required_filters",
                "verify_fields",
                "reveal_mismatch",
                "group_by",
                "measure_fields",
                "row_cap",
                "clear_fields",
                "privacy",
                "verify_budget",
            },
        )
        dataset_id = check_id("dataset", data["dataset"])
        raw_modes = data["modes"]
        if not isinstance(raw_modes, list) or not raw_modes:
            raise ValidationError(f"grant {dataset_id}: modes must be a non-empty list")
        try:
            modes = frozenset(Mode(m) for m in raw_modes)
        except ValueError as exc:
            raise ValidationError(f"grant {dataset_id}: modes must be among {MODE_NAMES}") from exc
        reveal = data.get("reveal_mismatch", False)
        if not isinstance(reveal, bool):
            raise ValidationError(f"grant {dataset_id}: reveal_mismatch must be true or false")
        row_cap = _positive_int(f"grant {dataset_id}: row_cap", data.get("row_cap", 100))
        assert row_cap is not None
        if row_cap > 1000:
            raise ValidationError(f"grant {dataset_id}: row_cap may not exceed 1000 rows per call")
        return cls(
            dataset_id=dataset_id,
            modes=modes,
            fields=_str_list("fields", data.get("fields", [])),
            filter_fields=_str_list("filter_fields", data.get("filter_fields", [])),
            required_filters=_str_list("required_filters", data.get("required_filters", [])),
            verify_fields=_str_list("verify_fields", data.get("verify_fields", [])),
            reveal_mismatch=reveal,
            group_by=_str_list("group_by", data.get("group_by", [])),
            measure_fields=_str_list("measure_fields", data.get("measure_fields", [])),
            row_cap=row_cap,
            clear_fields=_str_list("clear_fields", data.get("clear_fields", [])),
            privacy=(
                PrivacyBudget.from_dict(dataset_id, data["privacy"])
                if data.get("privacy") is not None
                else None
            ),
            verify_budget=(
                VerifyBudget.from_dict(f"grant {dataset_id}", data["verify_budget"])
                if data.get("verify_budget") is not None
                else None
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "dataset": self.dataset_id,
            "modes": sorted(m.value for m in self.modes),
            "fields": list(self.fields),
            "filter_fields": list(self.filter_fields),
            "required_filters": list(self.required_filters),
            "verify_fields": list(self.verify_fields),
            "reveal_mismatch": self.reveal_mismatch,
            "group_by": list(self.group_by),
            "measure_fields": list(self.measure_fields),
            "row_cap": self.row_cap,
            "clear_fields": list(self.clear_fields),
        }
        if self.privacy is not None:
            # Only when set, so grants without it (and their hashes) stay as they were.
            out["privacy"] = self.privacy.to_dict()
        if self.verify_budget is not None:
            # Only when set, so definitions without one (and their hashes) stay as they were.
            out["verify_budget"] = self.verify_budget.to_dict()
        return out

    def check_against(self, dataset: Dataset) -> None:
        """Refuse a grant of an ungrantable dataset or of fields it does not have."""
        if not dataset.grantable:
            reason = "is on the negative list" if dataset.negative_list else "is classed not open"
            raise CatalogError(
                f"dataset {dataset.id} {reason} and can never be granted",
                dataset=dataset.id,
            )
        names = set(dataset.field_names)
        for what, listed in (
            ("fields", self.fields),
            ("filter_fields", self.filter_fields),
            ("required_filters", self.required_filters),
            ("verify_fields", self.verify_fields),
            ("group_by", self.group_by),
            ("measure_fields", self.measure_fields),
            ("clear_fields", self.clear_fields),
        ):
            unknown = sorted(set(listed) - names)
            if unknown:
                raise ValidationError(
                    f"grant {dataset.id}: {what} names unknown field(s) {', '.join(unknown)}"
                )
        if not set(self.required_filters) <= set(self.filter_fields):
            raise ValidationError(f"grant {dataset.id}: required_filters must be filter_fields")
        if Mode.QUERY in self.modes and not self.fields:
            raise ValidationError(f"grant {dataset.id}: query mode needs fields to return")
        if Mode.QUERY in self.modes and not self.filter_fields:
            raise ValidationError(f"grant {dataset.id}: query mode needs filter_fields")
        if Mode.VERIFY in self.modes:
            missing = sorted(set(dataset.key_fields) - set(self.verify_fields))
            if missing:
                raise ValidationError(
                    f"grant {dataset.id}: verify_fields must include key field(s) "
                    + ", ".join(missing)
                )
        if self.verify_budget is not None and Mode.VERIFY not in self.modes:
            raise ValidationError(
                f"grant {dataset.id}: verify_budget bounds verify answers; the grant does not "
                "allow verify"
            )
        if not set(self.clear_fields) <= set(self.fields):
            raise ValidationError(f"grant {dataset.id}: clear_fields must be returnable fields")
        for name in self.clear_fields:
            if dataset.field(name).sensitive is None:
                raise ValidationError(
                    f"grant {dataset.id}: clear field {name} is not sensitive; list only "
                    "sensitive fields that the subjects' authorization may unmask"
                )
        if Mode.AGGREGATE in self.modes and not self.group_by:
            raise ValidationError(f"grant {dataset.id}: aggregate mode needs group_by fields")
        self._check_dp(dataset)
        for name in self.measure_fields:
            if dataset.field(name).type not in ("integer", "decimal"):
                raise ValidationError(f"grant {dataset.id}: measure field {name} is not numeric")

    def _check_dp(self, dataset: Dataset) -> None:
        """aggregate-dp needs a budget, group_by fields other than the subject (the privacy
        unit), and clamping bounds on every measure field; a budget without the mode is a
        mistake, refused rather than ignored."""
        if Mode.AGGREGATE_DP not in self.modes:
            if self.privacy is not None:
                raise ValidationError(
                    f"grant {dataset.id}: privacy is declared but aggregate-dp is not granted"
                )
            return
        if self.privacy is None:
            raise ValidationError(
                f"grant {dataset.id}: aggregate-dp needs a privacy budget (privacy: epsilon, "
                "delta, period, call_epsilon)"
            )
        if not self.group_by:
            raise ValidationError(f"grant {dataset.id}: aggregate-dp needs group_by fields")
        if dataset.subject_field in self.group_by:
            raise ValidationError(
                f"grant {dataset.id}: aggregate-dp cannot group by the subject field "
                f"{dataset.subject_field}, the unit it protects"
            )
        unbounded = sorted(n for n in self.measure_fields if dataset.field(n).bounds is None)
        if unbounded:
            raise ValidationError(
                f"grant {dataset.id}: aggregate-dp measure field(s) {', '.join(unbounded)} "
                "declare no bounds in the catalog; register the dataset with bounds "
                "[low, high] on each"
            )


@dataclass(frozen=True, slots=True)
class Quotas:
    """Per merchant and scenario. Calls refused by policy do not consume quota."""

    rate_per_minute: int = 120
    daily_calls: int | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Quotas:
        expect_keys("quotas", data, set(), {"rate_per_minute", "daily_calls"})
        rate = _positive_int("quotas.rate_per_minute", data.get("rate_per_minute", 120))
        assert rate is not None
        return cls(
            rate_per_minute=rate,
            daily_calls=_positive_int(
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


@dataclass(frozen=True, slots=True)
class Merchant:
    id: str
    name: str
    credit_code: str
    status: MerchantStatus = MerchantStatus.ACTIVE


@dataclass(frozen=True, slots=True)
class Agreement:
    """An authorization agreement (CS23 art. 8, 21, 22; ZW art. 19)."""

    id: str
    merchant_id: str
    scenario_id: str
    starts_at: dt.datetime
    ends_at: dt.datetime
    share_owner: Decimal
    share_operator: Decimal
    share_processor: Decimal
    status: AgreementStatus = AgreementStatus.ACTIVE
    # From an approved use application: exactly its requirement list, each line the
    # scenario's grant cut down to it. None for an agreement granted on the whole scenario.
    scope: tuple[DatasetGrant, ...] | None = None
    # Datasets for which the agreement carries the data subjects' letters of authorization.
    subject_authorized: frozenset[str] = frozenset()

    def usable_at(self, now: dt.datetime) -> bool:
        return self.status is AgreementStatus.ACTIVE and self.starts_at <= now < self.ends_at

    def grant(self, scenario: Scenario, dataset_id: str) -> DatasetGrant | None:
        """What this agreement lets its merchant do with a dataset of the scenario."""
        if self.scope is None:
            return scenario.grant(dataset_id)
        for grant in self.scope:
            if grant.dataset_id == dataset_id:
                return grant
        return None

    @staticmethod
    def parse_terms(
        terms: Mapping[str, Any],
    ) -> tuple[tuple[DatasetGrant, ...] | None, frozenset[str]]:
        """Scope and subject-authorized datasets as stored in an agreement's terms."""
        raw_scope = terms.get("scope")
        scope = None if raw_scope is None else tuple(DatasetGrant.from_dict(g) for g in raw_scope)
        letters = terms.get("subject_authorizations", [])
        return scope, frozenset(str(letter["dataset"]) for letter in letters)

    @staticmethod
    def check_terms(
        starts_at: dt.datetime, ends_at: dt.datetime, shares: tuple[object, object, object]
    ) -> tuple[Decimal, Decimal, Decimal]:
        """Period within 3 years (CS23 art. 22) and revenue shares summing to 100% (art. 21)."""
        if ends_at <= starts_at:
            raise ValidationError("agreement: the period must end after it starts")
        if ends_at > add_years(starts_at, MAX_AGREEMENT_YEARS):
            raise ValidationError(
                f"agreement: the period may last at most {MAX_AGREEMENT_YEARS} years "
                f"(until {add_years(starts_at, MAX_AGREEMENT_YEARS).date().isoformat()})"
            )
        parsed: list[Decimal] = []
        for name, raw in zip(("owner", "operator", "processor"), shares, strict=True):
            try:
                value = Decimal(str(raw))
            except InvalidOperation as exc:
                raise ValidationError(f"agreement: share of {name} is not a number") from exc
            if not value.is_finite() or value < 0 or value > 100 or value != round(value, 2):
                raise ValidationError(
                    f"agreement: share of {name} must be a percentage 0-100 with 2 decimals"
                )
            parsed.append(value)
        if sum(parsed) != Decimal(100):
            raise ValidationError(f"agreement: revenue shares must sum to 100%, got {sum(parsed)}%")
        return parsed[0], parsed[1], parsed[2]

    def check_transition(self, target: AgreementStatus) -> None:
        if target not in AGREEMENT_TRANSITIONS[self.status]:
            raise ConflictError(
                f"agreement {self.id} is {self.status.value}; it cannot become {target.value}"
            )


@dataclass(frozen=True, slots=True)
class Client:
    """An OAuth client. Merchant clients get scenario (and account) tokens; staff clients
    role tokens; buyer clients product tokens for the deliveries they bought."""

    client_id: str
    kind: str  # "merchant" | "staff"
    merchant_id: str | None
    role: str | None
    secret_hash: str | None
    public_jwk: Mapping[str, Any] | None
    status: str = "active"
    department: str | None = None
    buyer_code: str | None = None
