"""Who uses a scenario and under what terms: merchants, their agreements (period, revenue
shares, scope) and the OAuth clients that act for them or for staff."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from gateway.errors import ConflictError, ValidationError
from gateway.governance.models.grants import DatasetGrant
from gateway.governance.models.scenario import Scenario
from gateway.governance.models.times import add_years
from gateway.governance.statuses import AGREEMENT_TRANSITIONS, AgreementStatus, MerchantStatus

__all__ = [
    "AGREEMENT_TRANSITIONS",
    "MAX_AGREEMENT_YEARS",
    "Agreement",
    "AgreementStatus",
    "Client",
    "Merchant",
    "MerchantStatus",
    "check_period",
]

MAX_AGREEMENT_YEARS = 3


@dataclass(frozen=True, slots=True)
class Merchant:
    id: str
    name: str
    credit_code: str
    status: MerchantStatus = MerchantStatus.ACTIVE


def check_period(starts_at: dt.datetime, ends_at: dt.datetime, prefix: str = "") -> None:
    """An authorization lasts at most 3 years (CS23 art. 22; GY): the one check of both an
    agreement's period and the period a use application asks for."""
    if ends_at <= starts_at:
        raise ValidationError(f"{prefix}the period must end after it starts")
    if ends_at > add_years(starts_at, MAX_AGREEMENT_YEARS):
        raise ValidationError(
            f"{prefix}the period may last at most {MAX_AGREEMENT_YEARS} years "
            f"(until {add_years(starts_at, MAX_AGREEMENT_YEARS).date().isoformat()})"
        )


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
        check_period(starts_at, ends_at, "agreement: ")
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
