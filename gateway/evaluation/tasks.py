"""The yearly rating in the raters' task lists (:func:`gateway.workflows.tasks.tasks_for`):
a source department, a district bureau or an active merchant that has a form to fill in and
has not rated yet sees "rate the operator for YEAR", due at the end of the form's last day
(Beijing time). A closed form is no longer a task: nothing can be done about it."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.schema import MerchantRow, RatingFormRow, RatingRow
from gateway.evaluation.models import RaterKind
from gateway.evaluation.service import form_of, rater_of
from gateway.governance.actor import Actor
from gateway.governance.models import MerchantStatus
from gateway.workdays.calendar import SHANGHAI
from gateway.workflows.task import Task, make_task

__all__ = ["rating_tasks"]


async def rating_tasks(
    actor: Actor, engine: AsyncEngine, now: dt.datetime, zone: dt.tzinfo = SHANGHAI
) -> list[Task]:
    """The rating forms ``actor`` has yet to fill in; a form closes at the end of its
    ``closes_on`` day in ``zone`` (the deployment's)."""
    rater = rater_of(actor)
    if rater is None:
        return []
    kind, who = rater
    today = now.astimezone(zone).date()
    async with engine.connect() as conn:
        if kind is RaterKind.MERCHANT:
            status = await conn.scalar(select(MerchantRow.status).where(MerchantRow.id == who))
            if status != MerchantStatus.ACTIVE.value:
                return []
        forms = [
            form_of(row)
            for row in await conn.execute(
                select(RatingFormRow.__table__).where(
                    RatingFormRow.rater_kind == kind.value, RatingFormRow.closes_on >= today
                )
            )
        ]
        rated = set(
            await conn.scalars(
                select(RatingRow.year).where(
                    RatingRow.rater_kind == kind.value, RatingRow.rater == who
                )
            )
        )
    tasks = []
    for form in forms:
        if form.year in rated:
            continue
        due = dt.datetime.combine(
            form.closes_on + dt.timedelta(days=1), dt.time(0), tzinfo=zone
        ).astimezone(dt.UTC)
        tasks.append(
            make_task(
                "merchant" if kind is RaterKind.MERCHANT else f"{kind.value}: {who}",
                "rating",
                f"rating-{form.year}",
                f"rate the operator for {form.year} ({len(form.criteria)} criteria set by "
                "the data bureau, ZW art. 33)",
                due,
                now,
            )
        )
    return tasks
