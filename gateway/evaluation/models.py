"""The yearly evaluation's inputs (ZW art. 33): rating forms and ratings of the operator.

Each year the data bureau evaluates the operator and takes in how the source departments,
the district data bureaus and the merchants rate it. The bureau sets one form per kind of
rater and year: its criteria (each scored from 0 to a maximum) and the last day ratings are
taken. Each rater (a department or district by its name, a merchant by its id, whichever of
its staff or clients sends it) rates once per year, on every criterion of its form.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gateway.catalog.checks import check_id, expect_keys
from gateway.errors import ValidationError

__all__ = ["MAX_COMMENT", "Criterion", "RaterKind", "Rating", "RatingForm", "parse_year"]

MAX_CRITERIA = 20
MAX_COMMENT = 4000
_FIRST_YEAR, _LAST_YEAR = 2000, 2099


class RaterKind(StrEnum):
    """Who rates the operator (ZW art. 33): the source departments, the district (county)
    data bureaus and the merchants."""

    SOURCE = "source"
    DISTRICT = "district"
    MERCHANT = "merchant"


def parse_year(value: object) -> int:
    if isinstance(value, str) and value.isdigit() and len(value) == 4:
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValidationError("year must be a year such as 2026", field="year")
    if not _FIRST_YEAR <= value <= _LAST_YEAR:
        raise ValidationError(f"year must be within {_FIRST_YEAR}-{_LAST_YEAR}", field="year")
    return value


def parse_rater_kind(value: object) -> RaterKind:
    try:
        return RaterKind(str(value))
    except ValueError:
        raise ValidationError(
            f"rater_kind must be one of {', '.join(k.value for k in RaterKind)}",
            field="rater_kind",
        ) from None


@dataclass(frozen=True, slots=True)
class Criterion:
    """One line of a form: what is rated and the highest score (the lowest is 0)."""

    id: str
    title: str
    max: int

    @classmethod
    def from_dict(cls, data: object) -> Criterion:
        if not isinstance(data, Mapping):
            raise ValidationError("each criterion must be an object with id, title and max")
        expect_keys("criterion", data, {"id", "title", "max"})
        title, top = data["title"], data["max"]
        if not isinstance(title, str) or not title.strip() or len(title) > 200:
            raise ValidationError("a criterion's title must be a text of 1-200 characters")
        if not isinstance(top, int) or isinstance(top, bool) or not 1 <= top <= 100:
            raise ValidationError("a criterion's max must be an integer from 1 to 100")
        return cls(check_id("criterion", data["id"]), title.strip(), top)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "max": self.max}


@dataclass(frozen=True, slots=True)
class RatingForm:
    year: int
    rater_kind: RaterKind
    criteria: tuple[Criterion, ...]
    closes_on: dt.date

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RatingForm:
        expect_keys("rating form", data, {"year", "rater_kind", "criteria", "closes_on"})
        year = parse_year(data["year"])
        raw = data["criteria"]
        if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_CRITERIA:
            raise ValidationError(f"criteria must list 1 to {MAX_CRITERIA} criteria")
        criteria = tuple(Criterion.from_dict(item) for item in raw)
        if len({c.id for c in criteria}) != len(criteria):
            raise ValidationError("criteria ids must be distinct")
        closes = data["closes_on"]
        try:
            closes_on = dt.date.fromisoformat(closes) if isinstance(closes, str) else None
        except ValueError:
            closes_on = None
        if closes_on is None or closes_on.isoformat() != closes:
            raise ValidationError("closes_on must be a YYYY-MM-DD date", field="closes_on")
        if not dt.date(year, 1, 1) <= closes_on <= dt.date(year + 1, 12, 31):
            raise ValidationError(
                f"closes_on must fall in {year} or {year + 1}: ratings of a year are taken "
                "during it or in the following one",
                field="closes_on",
            )
        return cls(year, parse_rater_kind(data["rater_kind"]), criteria, closes_on)

    def check_scores(self, scores: object) -> dict[str, int]:
        """Every criterion scored, each an integer from 0 to its maximum, nothing else."""
        if not isinstance(scores, Mapping):
            raise ValidationError("scores must be an object: criterion id -> score")
        ids = {c.id for c in self.criteria}
        unknown = sorted(set(scores) - ids)
        missing = sorted(ids - set(scores))
        if unknown or missing:
            raise ValidationError(
                "scores must rate every criterion of the form and nothing else"
                + (f"; unknown: {', '.join(unknown)}" if unknown else "")
                + (f"; missing: {', '.join(missing)}" if missing else ""),
                field="scores",
            )
        out = {}
        for criterion in self.criteria:
            value = scores[criterion.id]
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValidationError(f"score of {criterion.id} must be an integer")
            if not 0 <= value <= criterion.max:
                raise ValidationError(f"score of {criterion.id} must be from 0 to {criterion.max}")
            out[criterion.id] = value
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "year": self.year,
            "rater_kind": self.rater_kind.value,
            "criteria": [c.to_dict() for c in self.criteria],
            "closes_on": self.closes_on.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class Rating:
    year: int
    rater_kind: RaterKind
    rater: str
    scores: Mapping[str, int]
    comment: str
    submitted_at: dt.datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "year": self.year,
            "rater_kind": self.rater_kind.value,
            "rater": self.rater,
            "scores": dict(self.scores),
            "comment": self.comment,
            "submitted_at": self.submitted_at.isoformat(),
        }
