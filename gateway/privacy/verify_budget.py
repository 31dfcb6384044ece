"""Verification budgets: a bound on the negative answers ``verify`` gives about one subject.

``verify`` answers yes or no. Asked about a sensitive field of a known subject, a "no"
rules out one candidate, so an unbounded run of "no" walks the field's value space until
the "yes": a resident id whose region and birth date are known has 1,000 candidates (the
sequence number; the check digit follows), which is a few minutes of calls. A budget bounds
the "no" answers one agreement may receive about one subject (one key) of one dataset in a
window; past it the call is refused, so the value space cannot be walked: with 5 negatives
per 24 hours, finding one of 1,000 candidates takes on average a hundred days of refused
calls, each of which raises the enumeration alert.

Windows are fixed, aligned on the deployment zone's wall clock: a window of ``window_hours``
that divides 24 starts at local midnight and every ``window_hours`` after; a window of whole
days starts at local midnight every ``window_hours / 24`` days counted from 1970-01-01. A
window holds at most ``negatives_per_subject`` negatives; around a window's end a merchant
can therefore receive twice the bound in a short time (the end of one window and the start
of the next), never more.

State is the ``verify_negatives`` table (migration 0012): one counter per agreement,
dataset, subject (keyed digest of the key values, never the values) and window. The count
is taken with one conditional ``UPDATE ... WHERE negatives < bound`` (or the first
``INSERT``), committed before the answer leaves, so concurrent calls and calls on other
gateway processes sharing the store never receive more than the bound between them.

Domain code: no aiohttp, no click.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.schema import VerifyNegativeRow
from gateway.errors import DsgwError, VerificationBudgetExhaustedError
from gateway.ledger.records import keyed_digest
from gateway.privacy.verify_limits import (
    DEFAULT_NEGATIVES_PER_SUBJECT,
    DEFAULT_WINDOW_HOURS,
    VerifyBudget,
)

__all__ = [
    "DEFAULT_NEGATIVES_PER_SUBJECT",
    "DEFAULT_WINDOW_HOURS",
    "BudgetFigures",
    "VerifyBudget",
    "VerifyBudgets",
    "subject_digest",
]


def subject_digest(param_key: bytes, key_values: Sequence[object]) -> str:
    """The subject a verify call is about: a keyed digest of its key values, compared as
    a person would (full-width forms, spaces and case do not make another subject). One
    key field gives the digest the call record logs for a sensitive value of it."""
    if len(key_values) == 1:
        return keyed_digest(param_key, key_values[0])
    return keyed_digest(param_key, json.dumps([str(v) for v in key_values], ensure_ascii=False))


@dataclass(frozen=True, slots=True)
class BudgetFigures:
    """What the call record keeps of a budgeted verify call (``parameters.verify_budget``)."""

    subject: str
    negatives: int
    bound: int
    window_start: dt.datetime
    window_end: dt.datetime
    negative: bool | None = None  # this call's answer; None when it was refused

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "subject": self.subject,
            "negatives": self.negatives,
            "bound": self.bound,
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
        }
        if self.negative is not None:
            out["negative"] = self.negative
        return out


@dataclass(frozen=True, slots=True)
class _Key:
    agreement_id: str
    dataset_id: str
    subject: str
    window_start: dt.datetime

    def where(self) -> Any:
        return and_(
            VerifyNegativeRow.agreement_id == self.agreement_id,
            VerifyNegativeRow.dataset_id == self.dataset_id,
            VerifyNegativeRow.subject == self.subject,
            VerifyNegativeRow.window_start == self.window_start,
        )


class VerifyBudgets:
    """The store's count of negative answers, checked before a verify runs and taken
    atomically after a negative one."""

    def __init__(self, engine: AsyncEngine, zone: dt.tzinfo) -> None:
        self._engine = engine
        self._zone = zone

    @staticmethod
    def _refusal(figures: BudgetFigures, now: dt.datetime) -> VerificationBudgetExhaustedError:
        retry = max(1, int((figures.window_end - now).total_seconds()) + 1)
        return VerificationBudgetExhaustedError(
            f"verification budget exhausted: this agreement received {figures.negatives} "
            f"negative answers about this subject since {figures.window_start.isoformat()} "
            f"(at most {figures.bound} per {_hours(figures)}); verify it again after "
            f"{figures.window_end.isoformat()}, or check the claimed value with its holder",
            retry_after=retry,
            negatives=figures.negatives,
            bound=figures.bound,
            window_end=figures.window_end.isoformat(),
        )

    async def check(
        self,
        budget: VerifyBudget,
        agreement_id: str,
        dataset_id: str,
        subject: str,
        now: dt.datetime,
    ) -> BudgetFigures:
        """The window's figures so far. Raises :class:`VerificationBudgetExhaustedError`
        (figures in ``err.figures``) when the bound is reached: the call must not run."""
        start, end = budget.window(now, self._zone)
        key = _Key(agreement_id, dataset_id, subject, start)
        async with self._engine.connect() as conn:
            spent = await conn.scalar(select(VerifyNegativeRow.negatives).where(key.where()))
        figures = BudgetFigures(subject, int(spent or 0), budget.negatives_per_subject, start, end)
        if figures.negatives >= figures.bound:
            err = self._refusal(figures, now)
            err.figures = figures
            raise err
        return figures

    async def spend(
        self, figures: BudgetFigures, agreement_id: str, dataset_id: str, now: dt.datetime
    ) -> BudgetFigures:
        """Count one negative answer, committed before returning. Raises
        :class:`VerificationBudgetExhaustedError` when concurrent calls took the last of
        the bound meanwhile: the answer must then not be given."""
        key = _Key(agreement_id, dataset_id, figures.subject, figures.window_start)
        bound = figures.bound
        async with self._engine.begin() as conn:
            taken = await self._increment(conn, key, bound, now)
            if taken is None:
                inserted = await conn.execute(_insert(conn.dialect.name, key, now))
                if inserted.rowcount == 1:
                    taken = 1
                else:  # another call inserted it meanwhile
                    taken = await self._increment(conn, key, bound, now)
        if taken is None:
            exhausted = BudgetFigures(
                figures.subject, bound, bound, figures.window_start, figures.window_end
            )
            err = self._refusal(exhausted, now)
            err.figures = exhausted
            raise err
        return BudgetFigures(
            figures.subject, taken, bound, figures.window_start, figures.window_end, True
        )

    @staticmethod
    async def _increment(conn: Any, key: _Key, bound: int, now: dt.datetime) -> int | None:
        """``negatives + 1`` when below ``bound``; None when the row is missing or full."""
        result = await conn.execute(
            update(VerifyNegativeRow)
            .where(key.where(), VerifyNegativeRow.negatives < bound)
            .values(negatives=VerifyNegativeRow.negatives + 1, updated_at=now)
            .returning(VerifyNegativeRow.negatives)
        )
        value = result.scalar_one_or_none()
        return None if value is None else int(value)


def _insert(dialect: str, key: _Key, now: dt.datetime) -> Any:
    values = {
        "agreement_id": key.agreement_id,
        "dataset_id": key.dataset_id,
        "subject": key.subject,
        "window_start": key.window_start,
        "negatives": 1,
        "updated_at": now,
    }
    index = ["agreement_id", "dataset_id", "subject", "window_start"]
    if dialect == "postgresql":
        return (
            postgresql.insert(VerifyNegativeRow)
            .values(values)
            .on_conflict_do_nothing(index_elements=index)
        )
    if dialect == "sqlite":
        return (
            sqlite.insert(VerifyNegativeRow)
            .values(values)
            .on_conflict_do_nothing(index_elements=index)
        )
    raise DsgwError(f"verification budgets: unsupported database dialect {dialect!r}")


def _hours(figures: BudgetFigures) -> str:
    hours = int((figures.window_end - figures.window_start).total_seconds() // 3600)
    return f"{hours // 24} day(s)" if hours % 24 == 0 else f"{hours} h"
