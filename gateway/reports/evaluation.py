"""The yearly evaluation's ratings (ZW art. 33), as facts for the yearly operations report.

For a report over one calendar year the ratings of that year are summed up per kind of
rater, criterion by criterion (mean, lowest, highest, against the criterion's maximum), and
shown beside the figures the report measures (review timeliness, objections answered in
time). Source departments and district bureaus are public bodies and are named; merchants
are counted, not named, and their figures are shown only from
:data:`MIN_MERCHANT_RATINGS` ratings on, so that a published report never shows one
merchant's scores (the bureau reads each rating at ``GET /admin/ratings``).
"""

from __future__ import annotations

import datetime as dt
import statistics
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.db.schema import RatingFormRow, RatingRow
from gateway.evaluation.models import RaterKind
from gateway.evaluation.service import form_of, rating_of
from gateway.reports.periods import Period

__all__ = [
    "MIN_MERCHANT_RATINGS",
    "CriterionResult",
    "EvaluationSection",
    "RaterKindResult",
    "gather_evaluation",
    "year_of",
]

MIN_MERCHANT_RATINGS = 3


@dataclass(frozen=True, slots=True)
class CriterionResult:
    id: str
    title: str
    max: int
    mean: float | None
    lowest: int | None
    highest: int | None


@dataclass(frozen=True, slots=True)
class RaterKindResult:
    rater_kind: str
    closes_on: dt.date
    ratings: int
    raters: tuple[str, ...]
    """Who rated, for departments and district bureaus; empty for merchants."""
    criteria: tuple[CriterionResult, ...]
    withheld: bool
    """Merchant figures not shown: fewer than :data:`MIN_MERCHANT_RATINGS` ratings."""

    @property
    def overall(self) -> float | None:
        """The mean score as a share of the maximum, over every criterion."""
        shares = [c.mean / c.max for c in self.criteria if c.mean is not None]
        return statistics.fmean(shares) if shares and not self.withheld else None


@dataclass(frozen=True, slots=True)
class EvaluationSection:
    year: int
    kinds: tuple[RaterKindResult, ...]


def year_of(period: Period) -> int | None:
    """The calendar year ``period`` covers exactly, or None."""
    first, last = period.first_day, period.last_day
    if (first.month, first.day, last.month, last.day) == (1, 1, 12, 31) and (
        first.year == last.year
    ):
        return first.year
    return None


async def gather_evaluation(conn: AsyncConnection, period: Period) -> EvaluationSection | None:
    """The ratings of the year ``period`` is, or None when it is not one calendar year."""
    year = year_of(period)
    if year is None:
        return None
    forms = [
        form_of(row)
        for row in await conn.execute(
            select(RatingFormRow.__table__).where(RatingFormRow.year == year)
        )
    ]
    ratings = [
        rating_of(row)
        for row in await conn.execute(
            select(RatingRow.__table__).where(RatingRow.year == year).order_by(RatingRow.rater)
        )
    ]
    order = {kind: i for i, kind in enumerate(RaterKind)}
    kinds = []
    for form in sorted(forms, key=lambda f: order[f.rater_kind]):
        mine = [r for r in ratings if r.rater_kind is form.rater_kind]
        merchants = form.rater_kind is RaterKind.MERCHANT
        withheld = merchants and 0 < len(mine) < MIN_MERCHANT_RATINGS
        criteria = []
        for criterion in form.criteria:
            scores = [r.scores[criterion.id] for r in mine if criterion.id in r.scores]
            shown = scores and not withheld
            criteria.append(
                CriterionResult(
                    id=criterion.id,
                    title=criterion.title,
                    max=criterion.max,
                    mean=statistics.fmean(scores) if shown else None,
                    lowest=min(scores) if shown else None,
                    highest=max(scores) if shown else None,
                )
            )
        kinds.append(
            RaterKindResult(
                rater_kind=form.rater_kind.value,
                closes_on=form.closes_on,
                ratings=len(mine),
                raters=() if merchants else tuple(r.rater for r in mine),
                criteria=tuple(criteria),
                withheld=withheld,
            )
        )
    return EvaluationSection(year, tuple(kinds))
