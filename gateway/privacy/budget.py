"""The differential-privacy budget store: ε and δ spent per agreement, dataset and period.

A spend is one conditional ``UPDATE ... WHERE spent + cost <= limit`` on the
``privacy_spend`` row of the period (created first if missing), committed before the noisy
answer is computed: two concurrent calls, or two gateway workers, cannot both spend the
last of a budget, and a call that fails after spending keeps its spend (fail closed: noise
that may have been drawn is never drawn again for free). Works the same on SQLite and
PostgreSQL. Periods are days or months in the deployment's zone (setting ``timezone``), or
the agreement's whole life.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.clock import DEFAULT_ZONE, start_of_day, utc
from gateway.db.schema import PrivacySpendRow
from gateway.errors import PrivacyBudgetExhaustedError
from gateway.governance.models import (
    DELTA_UNIT,
    EPSILON_UNIT,
    Agreement,
    PrivacyBudget,
    add_months,
    units_text,
)

__all__ = ["BudgetSpend", "PrivacyBudgets", "budget_period"]


@dataclass(frozen=True, slots=True)
class BudgetSpend:
    """One call's spend and what is left of the period's budget after it."""

    epsilon_micros: int
    delta_picos: int
    period_start: dt.datetime
    period_end: dt.datetime
    epsilon_spent_micros: int
    delta_spent_picos: int
    calls: int
    budget: PrivacyBudget

    @property
    def calls_left(self) -> int:
        eps_left = self.budget.epsilon_micros - self.epsilon_spent_micros
        delta_left = self.budget.delta_picos - self.delta_spent_picos
        return max(0, min(eps_left // self.epsilon_micros, delta_left // self.delta_picos))

    def record_dict(self) -> dict[str, object]:
        """What the call record keeps (and so anchors) of the spend: exact decimal strings,
        as the canonical record encoding allows no floats."""
        return {
            "epsilon": units_text(self.epsilon_micros, EPSILON_UNIT),
            "delta": units_text(self.delta_picos, DELTA_UNIT),
            "period_start": self.period_start.isoformat(),
            "epsilon_spent": units_text(self.epsilon_spent_micros, EPSILON_UNIT),
            "delta_spent": units_text(self.delta_spent_picos, DELTA_UNIT),
        }

    def answer_dict(self) -> dict[str, object]:
        return {
            "epsilon_spent": self.epsilon_spent_micros / 1e6,
            "epsilon_total": self.budget.epsilon,
            "delta_spent": self.delta_spent_picos / 1e12,
            "delta_total": self.budget.delta,
            "period": self.budget.period,
            "period_start": self.period_start.isoformat(),
            "period_end": self.period_end.isoformat(),
            "calls_left": self.calls_left,
        }


def budget_period(
    budget: PrivacyBudget, agreement: Agreement, now: dt.datetime, zone: dt.tzinfo = DEFAULT_ZONE
) -> tuple[dt.datetime, dt.datetime]:
    """The budget period containing ``now``, as UTC instants ``[start, end)``."""
    now = utc(now)
    if budget.period == "agreement":
        return utc(agreement.starts_at), utc(agreement.ends_at)
    local = now.astimezone(zone).date()
    if budget.period == "day":
        return start_of_day(local, zone), start_of_day(local + dt.timedelta(days=1), zone)
    first = local.replace(day=1)
    nxt = add_months(dt.datetime.combine(first, dt.time(0)), 1).date()
    return start_of_day(first, zone), start_of_day(nxt, zone)


class PrivacyBudgets:
    def __init__(self, engine: AsyncEngine, *, zone: dt.tzinfo = DEFAULT_ZONE) -> None:
        self._engine = engine
        self._zone = zone

    async def spend(
        self, agreement: Agreement, dataset_id: str, budget: PrivacyBudget, now: dt.datetime
    ) -> BudgetSpend:
        """Spend one call's ε and δ of ``agreement``'s budget on ``dataset_id``, committed
        when this returns. Raises :class:`PrivacyBudgetExhaustedError` (nothing spent) when
        the call would exceed the period's ε or δ."""
        start, end = budget_period(budget, agreement, now, self._zone)
        eps, delta = budget.call_epsilon_micros, budget.call_delta_picos
        key = (
            (PrivacySpendRow.agreement_id == agreement.id)
            & (PrivacySpendRow.dataset_id == dataset_id)
            & (PrivacySpendRow.period_start == start)
        )
        values = {
            "agreement_id": agreement.id,
            "dataset_id": dataset_id,
            "period_start": start,
            "epsilon_micros": 0,
            "delta_picos": 0,
            "calls": 0,
            "updated_at": utc(now),
        }
        async with self._engine.begin() as conn:
            keys = ["agreement_id", "dataset_id", "period_start"]
            if conn.dialect.name == "postgresql":
                await conn.execute(
                    postgresql.insert(PrivacySpendRow)
                    .values(values)
                    .on_conflict_do_nothing(index_elements=keys)
                )
            else:
                await conn.execute(
                    sqlite.insert(PrivacySpendRow)
                    .values(values)
                    .on_conflict_do_nothing(index_elements=keys)
                )
            result = await conn.execute(
                sa.update(PrivacySpendRow)
                .where(
                    key,
                    PrivacySpendRow.epsilon_micros + eps <= budget.epsilon_micros,
                    PrivacySpendRow.delta_picos + delta <= budget.delta_picos,
                )
                .values(
                    epsilon_micros=PrivacySpendRow.epsilon_micros + eps,
                    delta_picos=PrivacySpendRow.delta_picos + delta,
                    calls=PrivacySpendRow.calls + 1,
                    updated_at=utc(now),
                )
            )
            row = (
                await conn.execute(
                    sa.select(
                        PrivacySpendRow.epsilon_micros,
                        PrivacySpendRow.delta_picos,
                        PrivacySpendRow.calls,
                    ).where(key)
                )
            ).one()
        if result.rowcount != 1:
            retry = (
                None
                if budget.period == "agreement"
                else max(1, math.ceil((end - utc(now)).total_seconds()))
            )
            raise PrivacyBudgetExhaustedError(
                f"agreement {agreement.id} has spent ε {row.epsilon_micros / 1e6:g} of "
                f"{budget.epsilon:g} (δ {row.delta_picos / 1e12:g} of {budget.delta:g}) on "
                f"dataset {dataset_id} this {budget.period} period; a call costs ε "
                f"{budget.call_epsilon:g}. "
                + (
                    f"The budget renews at {end.isoformat()}."
                    if retry is not None
                    else "The budget covers the whole agreement and does not renew."
                ),
                retry_after=retry,
                epsilon_spent=row.epsilon_micros / 1e6,
                epsilon_total=budget.epsilon,
                period_start=start.isoformat(),
                period_end=end.isoformat(),
            )
        return BudgetSpend(
            epsilon_micros=eps,
            delta_picos=delta,
            period_start=start,
            period_end=end,
            epsilon_spent_micros=int(row.epsilon_micros),
            delta_spent_picos=int(row.delta_picos),
            calls=int(row.calls),
            budget=budget,
        )
