"""A company's application to become a merchant on the platform (ZW art. 18).

The operator checks the application and answers within 5 working days: approved (the
company becomes a merchant) or rejected with its reasons. A company on the exclusion list
(CS23 art. 18) cannot be approved.

    submitted --approve--> approved
        |  \\--reject (reasons)--> rejected
        \\--withdraw--> withdrawn
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gateway.catalog.checks import check_id, expect_keys
from gateway.errors import ConflictError, NotFoundError, ValidationError
from gateway.identifiers import is_valid_mobile, is_valid_uscc

__all__ = [
    "ONBOARDING_WORKING_DAYS",
    "OnboardingApplication",
    "OnboardingStatus",
    "OnboardingSubmission",
    "check_reasons",
]

ONBOARDING_WORKING_DAYS = 5
"""The operator answers an onboarding application within this many working days."""

_LICENCE_REQUIRED = {"legal_representative", "registered_address", "business_scope"}
_LICENCE_OPTIONAL = {"registered_capital", "established_on", "valid_until", "registry"}


class OnboardingStatus(StrEnum):
    SUBMITTED = "submitted"
    APPROVED = "approved"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"


def check_reasons(reasons: Sequence[object]) -> tuple[str, ...]:
    """A rejection must list its reasons (ZW art. 21): at least one, each a sentence."""
    cleaned = tuple(r.strip() for r in reasons if isinstance(r, str) and r.strip())
    if not cleaned or len(cleaned) != len(reasons):
        raise ValidationError("a rejection must list its reasons: one or more non-empty texts")
    if any(len(r) > 2000 for r in cleaned):
        raise ValidationError("each reason may be at most 2000 characters")
    return cleaned


def _text(what: str, value: object, *, max_len: int = 200) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > max_len:
        raise ValidationError(f"{what} must be a non-empty text of at most {max_len} characters")
    return value.strip()


@dataclass(frozen=True, slots=True)
class OnboardingSubmission:
    """What the applicant submits: the merchant id it asks for, its name and unified social
    credit code, its business licence data and its contacts."""

    merchant_id: str
    name: str
    credit_code: str
    licence: Mapping[str, str]
    contacts: tuple[Mapping[str, str], ...]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OnboardingSubmission:
        expect_keys(
            "onboarding application",
            data,
            {"merchant_id", "name", "credit_code", "licence"},
            {"contacts"},
        )
        merchant_id = check_id("merchant", data["merchant_id"])
        code = str(data["credit_code"]).strip().upper()
        if not is_valid_uscc(code):
            raise ValidationError(
                f"credit_code {data['credit_code']!r} is not a valid unified social credit code "
                "(GB 32100: 18 characters with a correct check character)"
            )
        licence_raw = data["licence"]
        if not isinstance(licence_raw, Mapping):
            raise ValidationError("licence must be an object")
        expect_keys("licence", licence_raw, _LICENCE_REQUIRED, _LICENCE_OPTIONAL)
        licence = {
            key: _text(f"licence.{key}", value, max_len=2000) for key, value in licence_raw.items()
        }
        contacts_raw = data.get("contacts", [])
        if not isinstance(contacts_raw, list) or not 1 <= len(contacts_raw) <= 10:
            raise ValidationError("contacts must list 1 to 10 people")
        contacts = []
        for item in contacts_raw:
            if not isinstance(item, Mapping):
                raise ValidationError("each contact must be an object")
            expect_keys("contact", item, {"name"}, {"phone", "email", "role"})
            contact = {key: _text(f"contact.{key}", value) for key, value in item.items()}
            if "phone" not in contact and "email" not in contact:
                raise ValidationError(f"contact {contact['name']}: give a phone or an email")
            if "phone" in contact and not is_valid_mobile(contact["phone"]):
                raise ValidationError(f"contact {contact['name']}: phone is not a mobile number")
            if "email" in contact and "@" not in contact["email"]:
                raise ValidationError(f"contact {contact['name']}: email is not an address")
            contacts.append(contact)
        return cls(merchant_id, _text("name", data["name"]), code, licence, tuple(contacts))

    def details(self) -> dict[str, Any]:
        return {"licence": dict(self.licence), "contacts": [dict(c) for c in self.contacts]}


@dataclass(frozen=True, slots=True)
class OnboardingApplication:
    id: str
    merchant_id: str
    name: str
    credit_code: str
    details: Mapping[str, Any]
    status: OnboardingStatus
    exclusion_hits: tuple[Mapping[str, Any], ...]
    submitted_at: dt.datetime
    due_at: dt.datetime
    decided_at: dt.datetime | None = None
    decided_by: str | None = None
    reasons: tuple[str, ...] = ()
    # Handed to the applicant once, at submission, to follow its application
    # (GET /v1/onboarding/{id}); only its SHA-256 is stored.
    status_key: str | None = None
    # Counted without a loaded holiday schedule for some year it reaches into (weekends
    # alone there): recomputed when the schedule is loaded (docs/workdays.md).
    provisional: bool = False

    def check_status_key(self, key: str) -> None:
        stored = str(self.details.get("status_key_sha256", ""))
        given = hashlib.sha256(key.encode()).hexdigest()
        if not stored or not hmac.compare_digest(stored, given):
            raise NotFoundError(f"onboarding application {self.id} does not exist")

    def overdue(self, now: dt.datetime) -> bool:
        return self.status is OnboardingStatus.SUBMITTED and now >= self.due_at

    def check_open(self) -> None:
        if self.status is not OnboardingStatus.SUBMITTED:
            raise ConflictError(
                f"onboarding application {self.id} is {self.status.value}; it was decided already"
            )

    def to_dict(self, *, now: dt.datetime | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "merchant_id": self.merchant_id,
            "name": self.name,
            "credit_code": self.credit_code,
            **{k: v for k, v in self.details.items() if k != "status_key_sha256"},
            "status": self.status.value,
            "exclusion_hits": [dict(hit) for hit in self.exclusion_hits],
            "submitted_at": self.submitted_at.isoformat(),
            "due_at": self.due_at.isoformat(),
            "decided_at": self.decided_at.isoformat() if self.decided_at else None,
            "decided_by": self.decided_by,
            "reasons": list(self.reasons),
            "provisional": self.provisional,
        }
        if now is not None:
            out["overdue"] = self.overdue(now)
        return out
