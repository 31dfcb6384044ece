"""A merchant's application to use data in a published scenario (ZW art. 20-21).

    compliance-check --operator approves--> department-review --every review approves--> approved
          |                                     |        (a silent reviewer past its deadline
          | operator rejects (reasons)          |         without an extension is deemed to
          v                                     |         approve: "deemed approved (timeout)")
       rejected <---- a department rejects -----+
                      (reasons)                                   approved --agreement--> agreed
    compliance-check / department-review --merchant withdraws--> withdrawn

The operator checks compliance within 5 working days; each source department owning a
requested dataset reviews within 10 working days of the check. A reviewer may file one
extension, with a reason, before its deadline. Rejections always carry reasons, which the
merchant sees.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from gateway.catalog.checks import check_id, expect_keys
from gateway.catalog.models import Dataset
from gateway.clock import DEFAULT_ZONE
from gateway.errors import CatalogError, ConflictError, ValidationError
from gateway.governance.models import (
    MODE_NAMES,
    DatasetGrant,
    Mode,
    Scenario,
    check_period,
    parse_time_value,
)

__all__ = [
    "COMPLIANCE_WORKING_DAYS",
    "MAX_EXTENSION_WORKING_DAYS",
    "REVIEW_WORKING_DAYS",
    "ApplicationStatus",
    "ApplicationTerms",
    "Requirement",
    "Review",
    "ReviewStatus",
    "UseApplication",
]

COMPLIANCE_WORKING_DAYS = 5
REVIEW_WORKING_DAYS = 10
MAX_EXTENSION_WORKING_DAYS = 10
"""A department's extension moves its deadline by at most this many working days, once."""


class ApplicationStatus(StrEnum):
    COMPLIANCE_CHECK = "compliance-check"
    DEPARTMENT_REVIEW = "department-review"
    APPROVED = "approved"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"
    AGREED = "agreed"


OPEN_STATUSES = frozenset({ApplicationStatus.COMPLIANCE_CHECK, ApplicationStatus.DEPARTMENT_REVIEW})


class ReviewStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    DEEMED_APPROVED = "deemed-approved"


@dataclass(frozen=True, slots=True)
class Requirement:
    """One line of the data requirement list: a dataset, the access modes and the fields the
    merchant needs. It must lie within what the scenario grants (minimum necessary)."""

    dataset_id: str
    modes: frozenset[Mode]
    fields: tuple[str, ...]

    @classmethod
    def from_dict(cls, data: object) -> Requirement:
        if not isinstance(data, Mapping):
            raise ValidationError("each requirement must be an object")
        expect_keys("requirement", data, {"dataset", "modes", "fields"})
        dataset_id = check_id("dataset", data["dataset"])
        modes_raw, fields_raw = data["modes"], data["fields"]
        if not isinstance(modes_raw, list) or not modes_raw:
            raise ValidationError(f"requirement {dataset_id}: modes must be a non-empty list")
        try:
            modes = frozenset(Mode(m) for m in modes_raw)
        except ValueError:
            raise ValidationError(
                f"requirement {dataset_id}: modes must be among {MODE_NAMES}"
            ) from None
        if (
            not isinstance(fields_raw, list)
            or not fields_raw
            or any(not isinstance(f, str) for f in fields_raw)
            or len(set(fields_raw)) != len(fields_raw)
        ):
            raise ValidationError(
                f"requirement {dataset_id}: fields must be a non-empty list of distinct names"
            )
        return cls(dataset_id, modes, tuple(fields_raw))

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset_id,
            "modes": sorted(m.value for m in self.modes),
            "fields": list(self.fields),
        }

    def narrow(self, grant: DatasetGrant, dataset: Dataset) -> DatasetGrant:
        """The scenario's grant cut down to this requirement: the agreement's scope. Raises
        :class:`ValidationError` when the requirement asks for more than the scenario grants,
        or when what remains cannot be used (e.g. a query without a filter field)."""
        extra_modes = sorted(m.value for m in self.modes - grant.modes)
        if extra_modes:
            raise ValidationError(
                f"requirement {self.dataset_id}: the scenario does not grant "
                f"{', '.join(extra_modes)}"
            )
        granted = {
            *grant.fields,
            *grant.filter_fields,
            *grant.verify_fields,
            *grant.group_by,
            *grant.measure_fields,
        }
        extra_fields = sorted(set(self.fields) - granted)
        if extra_fields:
            raise ValidationError(
                f"requirement {self.dataset_id}: the scenario does not grant field(s) "
                f"{', '.join(extra_fields)}"
            )
        wanted = set(self.fields)
        aggregates = bool(self.modes & {Mode.AGGREGATE, Mode.AGGREGATE_DP})

        def keep(names: Sequence[str]) -> tuple[str, ...]:
            return tuple(n for n in names if n in wanted)

        narrowed = replace(
            grant,
            modes=self.modes,
            fields=keep(grant.fields) if Mode.QUERY in self.modes else (),
            filter_fields=keep(grant.filter_fields),
            required_filters=tuple(f for f in grant.required_filters if f in wanted),
            verify_fields=keep(grant.verify_fields) if Mode.VERIFY in self.modes else (),
            group_by=keep(grant.group_by) if aggregates else (),
            measure_fields=keep(grant.measure_fields) if aggregates else (),
            clear_fields=keep(grant.clear_fields),
            # The scenario's budget, unchanged: an agreement spends it, it does not set it.
            privacy=grant.privacy if Mode.AGGREGATE_DP in self.modes else None,
            verify_budget=grant.verify_budget if Mode.VERIFY in self.modes else None,
        )
        if grant.required_filters and Mode.QUERY in self.modes and not narrowed.required_filters:
            raise ValidationError(
                f"requirement {self.dataset_id}: a query must filter on one of "
                f"{', '.join(grant.required_filters)}; include it in the fields"
            )
        try:
            narrowed.check_against(dataset)
        except CatalogError:
            raise
        except ValidationError as exc:
            raise ValidationError(
                f"requirement {self.dataset_id} is not usable as asked: {exc.detail}"
            ) from exc
        return narrowed


@dataclass(frozen=True, slots=True)
class ApplicationTerms:
    """Purpose, period and safeguards as the merchant states them (ZW art. 20)."""

    purpose: str
    starts_at: dt.datetime
    ends_at: dt.datetime
    safeguards: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], zone: dt.tzinfo = DEFAULT_ZONE) -> ApplicationTerms:
        """A date-only period bound is 00:00 of that day in ``zone`` (half-open period)."""

        def text(key: str) -> str:
            value = data.get(key)
            if not isinstance(value, str) or not value.strip() or len(value) > 4000:
                raise ValidationError(f"{key} must be a text of 1-4000 characters")
            return value.strip()

        starts_at = parse_time_value("period.start", data.get("period_start"), zone)
        ends_at = parse_time_value("period.end", data.get("period_end"), zone)
        check_period(starts_at, ends_at)
        return cls(text("purpose"), starts_at, ends_at, text("safeguards"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "purpose": self.purpose,
            "period_start": self.starts_at.isoformat(),
            "period_end": self.ends_at.isoformat(),
            "safeguards": self.safeguards,
        }


@dataclass(frozen=True, slots=True)
class Review:
    department: str
    datasets: tuple[str, ...]
    status: ReviewStatus
    opened_at: dt.datetime | None = None
    due_at: dt.datetime | None = None
    extended_until: dt.datetime | None = None
    extension_reason: str | None = None
    decided_at: dt.datetime | None = None
    decided_by: str | None = None
    reasons: tuple[str, ...] = ()
    # Counted without a loaded holiday schedule for some year it reaches into (weekends
    # alone there): recomputed when the schedule is loaded (docs/workdays.md).
    provisional: bool = False

    @property
    def effective_due(self) -> dt.datetime | None:
        return self.extended_until or self.due_at

    def timed_out(self, now: dt.datetime) -> bool:
        due = self.effective_due
        return self.status is ReviewStatus.PENDING and due is not None and now >= due

    def to_dict(self) -> dict[str, Any]:
        def iso(value: dt.datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "department": self.department,
            "datasets": list(self.datasets),
            "status": self.status.value,
            "label": (
                "deemed approved (timeout)"
                if self.status is ReviewStatus.DEEMED_APPROVED
                else self.status.value
            ),
            "opened_at": iso(self.opened_at),
            "due_at": iso(self.due_at),
            "extended_until": iso(self.extended_until),
            "extension_reason": self.extension_reason,
            "decided_at": iso(self.decided_at),
            "decided_by": self.decided_by,
            "reasons": list(self.reasons),
            "provisional": self.provisional,
        }


@dataclass(frozen=True, slots=True)
class UseApplication:
    id: str
    merchant_id: str
    scenario_id: str
    requirements: tuple[Requirement, ...]
    terms: ApplicationTerms
    status: ApplicationStatus
    submitted_at: dt.datetime
    compliance_due_at: dt.datetime
    reviews: tuple[Review, ...] = ()
    checked_at: dt.datetime | None = None
    checked_by: str | None = None
    reasons: tuple[str, ...] = ()
    agreement_id: str | None = None
    # compliance_due_at counted without a loaded holiday schedule for some year it reaches
    # into (weekends alone there): recomputed when the schedule is loaded (docs/workdays.md).
    provisional: bool = False

    def check_status(self, *expected: ApplicationStatus) -> None:
        if self.status not in expected:
            raise ConflictError(
                f"application {self.id} is {self.status.value}; this needs it to be "
                + " or ".join(s.value for s in expected)
            )

    def review_of(self, department: str) -> Review:
        for review in self.reviews:
            if review.department == department:
                return review
        raise ConflictError(
            f"application {self.id} requests no dataset of department {department!r}; "
            f"its reviewers are {', '.join(r.department for r in self.reviews) or 'none yet'}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "merchant_id": self.merchant_id,
            "scenario_id": self.scenario_id,
            "requirements": [r.to_dict() for r in self.requirements],
            **self.terms.to_dict(),
            "status": self.status.value,
            "submitted_at": self.submitted_at.isoformat(),
            "compliance_due_at": self.compliance_due_at.isoformat(),
            "checked_at": self.checked_at.isoformat() if self.checked_at else None,
            "checked_by": self.checked_by,
            "reasons": list(self.reasons),
            "reviews": [r.to_dict() for r in self.reviews],
            "agreement_id": self.agreement_id,
            "provisional": self.provisional,
        }


def parse_requirements(
    raw: object, scenario: Scenario, datasets: Mapping[str, Dataset]
) -> tuple[tuple[Requirement, ...], tuple[DatasetGrant, ...]]:
    """The requirement list and the agreement scope it would give; refuses anything beyond
    the scenario, datasets not in it, and datasets that can no longer be granted."""
    if not isinstance(raw, list) or not raw:
        raise ValidationError("requirements must be a non-empty list")
    requirements = tuple(Requirement.from_dict(item) for item in raw)
    if len({r.dataset_id for r in requirements}) != len(requirements):
        raise ValidationError("requirements list a dataset twice")
    scope = []
    for requirement in requirements:
        grant = scenario.grant(requirement.dataset_id)
        if grant is None:
            raise ValidationError(
                f"scenario {scenario.id} does not include dataset {requirement.dataset_id} "
                "(one scenario, one authorization)"
            )
        dataset = datasets.get(requirement.dataset_id)
        if dataset is None:
            raise ValidationError(f"dataset {requirement.dataset_id} is not in the catalog")
        scope.append(requirement.narrow(grant, dataset))
    return requirements, tuple(scope)
