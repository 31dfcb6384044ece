"""Rating forms and ratings, persisted; each change one transaction with its record in the
``governance`` stream (``rating.form-set``, ``rating.submitted``).

Who rates is taken from the credentials, never from the request: a source department's
client rates as its department, a district bureau's as its district, a merchant's account
token as the merchant. Only the local administrator, recording a rating received on paper,
names the rater.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.authorization.roles import Action, Role
from gateway.clock import Clock, utc
from gateway.db.schema import RatingFormRow, RatingRow
from gateway.errors import ConflictError, ForbiddenError, NotFoundError, ValidationError
from gateway.evaluation.models import (
    MAX_COMMENT,
    Criterion,
    RaterKind,
    Rating,
    RatingForm,
    parse_year,
)
from gateway.governance.actor import Actor
from gateway.governance.unit_of_work import UnitOfWork

__all__ = ["EvaluationService", "RatingReader", "form_of", "rater_of", "rating_of"]


def form_of(row: Any) -> RatingForm:
    return RatingForm(
        year=int(row.year),
        rater_kind=RaterKind(row.rater_kind),
        criteria=tuple(Criterion.from_dict(c) for c in row.criteria),
        closes_on=row.closes_on,
    )


def rating_of(row: Any) -> Rating:
    return Rating(
        year=int(row.year),
        rater_kind=RaterKind(row.rater_kind),
        rater=row.rater,
        scores=dict(row.scores),
        comment=row.comment,
        submitted_at=utc(row.submitted_at),
    )


def rater_of(actor: Actor) -> tuple[RaterKind, str] | None:
    """The rater ``actor`` speaks for, from its credentials; None for everyone else."""
    if actor.merchant_id is not None:
        return RaterKind.MERCHANT, actor.merchant_id
    if actor.role is Role.SOURCE and actor.department:
        return RaterKind.SOURCE, actor.department
    if actor.role is Role.DISTRICT and actor.department:
        return RaterKind.DISTRICT, actor.department
    return None


class RatingReader:
    """The rating forms and the ratings as stored, each reader seeing what it may; reading
    needs the engine alone (``dsgw rating list`` builds nothing else)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def forms(
        self, actor: Actor, *, year: int | None = None, rater_kind: RaterKind | None = None
    ) -> list[RatingForm]:
        """The forms, by year: a merchant sees the merchants' forms only (the criteria are
        no secret to anyone else with credentials)."""
        if actor.merchant_id is not None:
            if rater_kind not in (None, RaterKind.MERCHANT):
                return []
            rater_kind = RaterKind.MERCHANT
        query = select(RatingFormRow.__table__).order_by(
            RatingFormRow.year, RatingFormRow.rater_kind
        )
        if year is not None:
            query = query.where(RatingFormRow.year == year)
        if rater_kind is not None:
            query = query.where(RatingFormRow.rater_kind == rater_kind.value)
        async with self._engine.connect() as conn:
            return [form_of(row) for row in (await conn.execute(query)).all()]

    async def ratings(
        self, actor: Actor, *, year: int | None = None, rater_kind: RaterKind | None = None
    ) -> list[Rating]:
        """Every rating for the bureau (and the local administrator); a rater its own."""
        query = select(RatingRow.__table__).order_by(
            RatingRow.year, RatingRow.rater_kind, RatingRow.rater
        )
        mine = rater_of(actor)
        if actor.role is Role.AUTHORITY or (actor.role is None and actor.merchant_id is None):
            pass
        elif mine is not None:
            query = query.where(RatingRow.rater_kind == mine[0].value, RatingRow.rater == mine[1])
        else:
            actor.may(Action.READ_RATINGS)
        if year is not None:
            query = query.where(RatingRow.year == year)
        if rater_kind is not None:
            query = query.where(RatingRow.rater_kind == rater_kind.value)
        async with self._engine.connect() as conn:
            return [rating_of(row) for row in (await conn.execute(query)).all()]


class EvaluationService(RatingReader):
    """Setting forms and submitting ratings, each a governance record; the reads are
    :class:`RatingReader`'s."""

    def __init__(
        self, engine: AsyncEngine, uow: UnitOfWork, clock: Clock, *, zone: dt.tzinfo
    ) -> None:
        """``zone`` is the deployment's time zone: a form closes at the end of its day."""
        super().__init__(engine)
        self._uow = uow
        self._clock = clock
        self._zone = zone

    # -- forms ----------------------------------------------------------------------------

    async def set_form(self, actor: Actor, data: Mapping[str, Any]) -> RatingForm:
        """Set (or, before any rating arrived, replace) a year's form for one kind of
        rater. Raises :class:`ConflictError` once a rating was made against it."""
        actor.may(Action.SET_RATING_FORM)
        if not isinstance(data, Mapping):
            raise ValidationError("a rating form must be a JSON object")
        form = RatingForm.from_dict(data)
        key = (RatingFormRow.year == form.year, RatingFormRow.rater_kind == form.rater_kind.value)

        async def apply(conn: AsyncConnection, now: dt.datetime) -> RatingForm:
            rated = await conn.scalar(
                select(func.count())
                .select_from(RatingRow)
                .where(RatingRow.year == form.year, RatingRow.rater_kind == form.rater_kind.value)
            )
            if rated:
                raise ConflictError(
                    f"the {form.year} form for {form.rater_kind.value} raters already has "
                    f"{rated} rating(s); it cannot change under them"
                )
            values = {
                "criteria": [c.to_dict() for c in form.criteria],
                "closes_on": form.closes_on,
                "set_by": actor.id,
                "updated_at": now,
            }
            if await conn.scalar(select(RatingFormRow.year).where(*key)) is None:
                await conn.execute(
                    insert(RatingFormRow).values(
                        year=form.year, rater_kind=form.rater_kind.value, created_at=now, **values
                    )
                )
            else:
                await conn.execute(update(RatingFormRow).where(*key).values(**values))
            return form

        return await self._uow.change(actor, "rating.form-set", form.to_dict(), apply)

    # -- ratings --------------------------------------------------------------------------

    async def submit(
        self,
        actor: Actor,
        data: Mapping[str, Any],
        *,
        rater_kind: RaterKind | None = None,
        rater: str | None = None,
    ) -> Rating:
        """One rater's rating of the operator for ``data["year"]``: every criterion of its
        kind's form scored, and an optional comment. One per rater and year; none after the
        form closed. ``rater_kind``/``rater`` only for the local administrator."""
        if not isinstance(data, Mapping):
            raise ValidationError("a rating must be a JSON object")
        unknown = sorted(set(data) - {"year", "scores", "comment"})
        if unknown or "year" not in data or "scores" not in data:
            raise ValidationError("a rating is {year, scores, comment?}", unknown=unknown)
        year = parse_year(data["year"])
        comment = data.get("comment", "")
        if not isinstance(comment, str) or len(comment) > MAX_COMMENT:
            raise ValidationError(f"comment must be a text of at most {MAX_COMMENT} characters")
        kind, who = self._rater(actor, rater_kind, rater)

        async def apply(conn: AsyncConnection, now: dt.datetime) -> Rating:
            row = (
                await conn.execute(
                    select(RatingFormRow.__table__).where(
                        RatingFormRow.year == year, RatingFormRow.rater_kind == kind.value
                    )
                )
            ).first()
            if row is None:
                raise NotFoundError(
                    f"the data bureau has set no {year} rating form for {kind.value} raters"
                )
            form = form_of(row)
            if now.astimezone(self._zone).date() > form.closes_on:
                raise ConflictError(
                    f"the {year} ratings closed on {form.closes_on.isoformat()} (the end of "
                    "that day, deployment time)"
                )
            scores = form.check_scores(data["scores"])
            exists = await conn.scalar(
                select(RatingRow.id).where(
                    RatingRow.year == year,
                    RatingRow.rater_kind == kind.value,
                    RatingRow.rater == who,
                )
            )
            if exists is not None:
                raise ConflictError(f"{who} has already rated the operator for {year}: once a year")
            await conn.execute(
                insert(RatingRow).values(
                    year=year,
                    rater_kind=kind.value,
                    rater=who,
                    rated_by=actor.id,
                    scores=scores,
                    comment=comment.strip(),
                    submitted_at=now,
                )
            )
            body.update(scores=scores)
            return Rating(year, kind, who, scores, comment.strip(), now)

        # Completed by ``apply`` with the checked scores; the comment by its digest.
        body: dict[str, Any] = {
            "year": year,
            "rater_kind": kind.value,
            "rater": who,
            "comment_sha256": hashlib.sha256(comment.strip().encode()).hexdigest()
            if comment.strip()
            else None,
        }
        return await self._uow.change(actor, "rating.submitted", body, apply)

    @staticmethod
    def _rater(
        actor: Actor, rater_kind: RaterKind | None, rater: str | None
    ) -> tuple[RaterKind, str]:
        if actor.merchant_id is None:
            actor.may(Action.SUBMIT_RATING)
        if actor.role is None and actor.merchant_id is None:
            if rater_kind is None or not rater or not rater.strip() or len(rater) > 200:
                raise ValidationError("name the rater: its kind and its name or merchant id")
            return rater_kind, rater.strip()
        if rater_kind is not None or rater is not None:
            raise ForbiddenError("a rater rates as itself: the rater comes from the credentials")
        found = rater_of(actor)
        if found is None:
            raise ForbiddenError(
                "only source departments, district bureaus and merchants rate the operator; "
                "this client is bound to no department or district"
            )
        return found
