"""A data-quality objection and its answer (ZW art. 11; GY's 数据异议反馈机制).

A merchant that received a wrong, stale or missing value, or the operator that noticed one,
files an objection naming what is wrong; it goes to the dataset's source department, which
answers within a number of working days::

    open --accepted (note optional)--> accepted --corrected (version or date)--> corrected
      |--rejected (reasons required)--> rejected
      \\--corrected (version or date)--> corrected

An objection left unanswered past its deadline stays ``open`` and is listed as overdue:
unlike a use application's review (ZW art. 21) silence is never taken as an answer. The
filer is told of every answer through its task list and acknowledges it.

Each party sees its own view (:meth:`Objection.to_dict`): the department the objection and
of the named call record only its time and access mode (not which merchant, not its other
use); the merchant its own objections and the answers, which carry no data values.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gateway.catalog.checks import check_id, expect_keys
from gateway.errors import ConflictError, ValidationError
from gateway.governance.models import DocumentRef
from gateway.workflows.onboarding import check_reasons

__all__ = [
    "Answer",
    "AnswerKind",
    "Category",
    "FilerKind",
    "Objection",
    "ObjectionFiling",
    "ObjectionStatus",
    "View",
    "parse_record_id",
]

MAX_TEXT = 4000
MAX_DOCUMENTS = 10
_RECORD_ID = re.compile(r"^calls/(0|[1-9][0-9]{0,17})$")


class ObjectionStatus(StrEnum):
    OPEN = "open"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    CORRECTED = "corrected"


class AnswerKind(StrEnum):
    """The department's answer: it agrees (``accepted``), disagrees with reasons
    (``rejected``), or has fixed the data (``corrected``, naming the version or date)."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    CORRECTED = "corrected"


class Category(StrEnum):
    """What the filer believes is wrong with the value."""

    WRONG = "wrong"
    STALE = "stale"
    MISSING = "missing"
    OTHER = "other"


class FilerKind(StrEnum):
    MERCHANT = "merchant"
    OPERATOR = "operator"


class View(StrEnum):
    """Whose eyes an objection is shown to (:meth:`Objection.to_dict`)."""

    FILER = "filer"
    DEPARTMENT = "department"
    STAFF = "staff"


def parse_record_id(value: object) -> int:
    """``calls/42`` (a ``Dsgw-Record-Id``) as the position 42 in the ``calls`` stream."""
    match = _RECORD_ID.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValidationError(
            "record must name a call record as its Dsgw-Record-Id, e.g. calls/42", field="record"
        )
    return int(match[1])


def _text(what: str, value: object, *, max_len: int = MAX_TEXT, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()) or len(value) > max_len:
        raise ValidationError(
            f"{what} must be a {'non-empty ' if required else ''}text of at most {max_len} "
            "characters",
            field=what,
        )
    return value.strip()


@dataclass(frozen=True, slots=True)
class ObjectionFiling:
    """What a filer submits: the call record that delivered the data (required of a
    merchant), the dataset and field, the subject key of the row if the answer was about
    one, the category, a description and optional evidence (a text and documents pinned by
    their SHA-256)."""

    record_seq: int | None
    dataset_id: str
    field: str
    subject_key: str | None
    category: Category
    description: str
    evidence: str
    documents: tuple[DocumentRef, ...]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ObjectionFiling:
        expect_keys(
            "objection",
            data,
            {"dataset", "field", "category", "description"},
            {"record", "subject_key", "evidence", "documents"},
        )
        record = data.get("record")
        record_seq = None if record is None else parse_record_id(record)
        dataset_id = check_id("dataset", data["dataset"])
        field = _text("field", data["field"], max_len=128)
        subject = data.get("subject_key")
        subject_key = None if subject is None else _text("subject_key", subject, max_len=200)
        try:
            category = Category(data["category"])
        except ValueError:
            raise ValidationError(
                f"category must be one of {', '.join(c.value for c in Category)}",
                field="category",
            ) from None
        raw_documents = data.get("documents", [])
        if not isinstance(raw_documents, list) or len(raw_documents) > MAX_DOCUMENTS:
            raise ValidationError(f"documents must be a list of at most {MAX_DOCUMENTS}")
        documents = tuple(DocumentRef.from_dict("document", item) for item in raw_documents)
        return cls(
            record_seq=record_seq,
            dataset_id=dataset_id,
            field=field,
            subject_key=subject_key,
            category=category,
            description=_text("description", data["description"]),
            evidence=_text("evidence", data.get("evidence"), required=False),
            documents=documents,
        )


@dataclass(frozen=True, slots=True)
class Answer:
    """A department's answer. A rejection lists its reasons (as every rejection must, ZW
    art. 21); a correction names the dataset version or the date of the fix, or both."""

    kind: AnswerKind
    reasons: tuple[str, ...]
    version: str | None
    fixed_on: dt.date | None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, today: dt.date) -> Answer:
        expect_keys("answer", data, {"answer"}, {"reasons", "version", "fixed_on"})
        try:
            kind = AnswerKind(data["answer"])
        except ValueError:
            raise ValidationError(
                f"answer must be one of {', '.join(k.value for k in AnswerKind)}", field="answer"
            ) from None
        raw_reasons = data.get("reasons", [])
        if not isinstance(raw_reasons, list):
            raise ValidationError("reasons must be a list of texts", field="reasons")
        if kind is AnswerKind.REJECTED:
            reasons = check_reasons(raw_reasons)
        elif raw_reasons:
            reasons = check_reasons(raw_reasons)  # an optional note, held to the same rules
        else:
            reasons = ()
        version = data.get("version")
        fixed_raw = data.get("fixed_on")
        if kind is not AnswerKind.CORRECTED:
            if version is not None or fixed_raw is not None:
                raise ValidationError(
                    "version and fixed_on go with the answer corrected", field="answer"
                )
            return cls(kind, reasons, None, None)
        if version is None and fixed_raw is None:
            raise ValidationError(
                "a correction names the dataset version or the date of the fix (fixed_on), or both",
                field="version",
            )
        checked_version = None if version is None else _text("version", version, max_len=64)
        fixed_on = None
        if fixed_raw is not None:
            try:
                fixed_on = dt.date.fromisoformat(fixed_raw) if isinstance(fixed_raw, str) else None
            except ValueError:
                fixed_on = None
            if fixed_on is None or fixed_on.isoformat() != fixed_raw:
                raise ValidationError("fixed_on must be a YYYY-MM-DD date", field="fixed_on")
            if fixed_on > today:
                raise ValidationError(
                    "fixed_on is in the future: answer corrected once the fix is made",
                    field="fixed_on",
                )
        return cls(kind, reasons, checked_version, fixed_on)

    def correction(self) -> dict[str, Any] | None:
        if self.kind is not AnswerKind.CORRECTED:
            return None
        return {
            "version": self.version,
            "fixed_on": self.fixed_on.isoformat() if self.fixed_on else None,
        }


@dataclass(frozen=True, slots=True)
class Objection:
    id: str
    filer_kind: FilerKind
    merchant_id: str | None
    filed_by: str
    record_seq: int | None
    dataset_id: str
    department: str
    field: str
    subject_key: str | None
    subject_checked: bool
    category: Category
    details: Mapping[str, Any]
    canary: bool
    status: ObjectionStatus
    filed_at: dt.datetime
    due_at: dt.datetime
    overdue_at: dt.datetime | None = None
    answer: AnswerKind | None = None
    answered_at: dt.datetime | None = None
    answered_by: str | None = None
    reasons: tuple[str, ...] = ()
    correction: Mapping[str, Any] | None = None
    corrected_at: dt.datetime | None = None
    acknowledged_at: dt.datetime | None = None
    # Counted without a loaded holiday schedule for some year it reaches into (weekends
    # alone there): recomputed when the schedule is loaded (docs/workdays.md).
    provisional: bool = False

    @property
    def answering_party(self) -> str:
        """Who answers: the department, or the operator for an objection about a tracing
        canary row (the department would find no such subject and so give it away)."""
        return "operator" if self.canary else self.department

    def overdue(self, now: dt.datetime) -> bool:
        """Unanswered at or past the deadline (the deadline is the first instant too late)."""
        return self.status is ObjectionStatus.OPEN and now >= self.due_at

    @property
    def in_time(self) -> bool | None:
        """Whether the first answer came before the deadline; None while unanswered."""
        return None if self.answered_at is None else self.answered_at < self.due_at

    @property
    def awaits_acknowledgement(self) -> bool:
        return self.status is not ObjectionStatus.OPEN and self.acknowledged_at is None

    def check_answerable(self, kind: AnswerKind) -> None:
        """Open objections take any answer; an accepted one may still be corrected."""
        if self.status is ObjectionStatus.OPEN:
            return
        if self.status is ObjectionStatus.ACCEPTED and kind is AnswerKind.CORRECTED:
            return
        raise ConflictError(
            f"objection {self.id} is {self.status.value}"
            + (
                "; an accepted objection can only be answered corrected"
                if self.status is ObjectionStatus.ACCEPTED
                else "; it was answered already"
            )
        )

    def to_dict(self, view: View, *, now: dt.datetime | None = None) -> dict[str, Any]:
        """The objection as ``view`` may see it. The department learns nothing of the
        merchant (not who it is, nor any call but the one named, of which only its time
        and mode); the filer nothing of who answered; neither sees the canary flag."""
        record = None
        if self.record_seq is not None:
            record = {"id": f"calls/{self.record_seq}", **dict(self.details.get("record", {}))}
        out: dict[str, Any] = {
            "id": self.id,
            "filer": self.filer_kind.value,
            "record": record,
            "dataset": self.dataset_id,
            "department": self.department,
            "field": self.field,
            "subject_key": self.subject_key,
            "subject_checked": self.subject_checked,
            "category": self.category.value,
            "description": self.details.get("description", ""),
            "evidence": self.details.get("evidence", ""),
            "documents": list(self.details.get("documents", [])),
            "status": self.status.value,
            "filed_at": self.filed_at.isoformat(),
            "due_at": self.due_at.isoformat(),
            "answer": self.answer.value if self.answer else None,
            "answered_at": self.answered_at.isoformat() if self.answered_at else None,
            "in_time": self.in_time,
            "reasons": list(self.reasons),
            "correction": dict(self.correction) if self.correction else None,
            "corrected_at": self.corrected_at.isoformat() if self.corrected_at else None,
            "acknowledged_at": self.acknowledged_at.isoformat() if self.acknowledged_at else None,
            "provisional": self.provisional,
        }
        if now is not None:
            out["overdue"] = self.overdue(now)
        if view is View.STAFF:
            out |= {
                "merchant_id": self.merchant_id,
                "filed_by": self.filed_by,
                "answered_by": self.answered_by,
                "overdue_at": self.overdue_at.isoformat() if self.overdue_at else None,
                "canary": self.canary,
                "answering_party": self.answering_party,
            }
        return out


def documents_dicts(documents: Sequence[DocumentRef]) -> list[dict[str, str]]:
    return [d.to_dict() for d in documents]
