"""Supervision measures: the supervisor or the data bureau stops something until it is fixed.

On a security problem the authority may suspend the supply of a dataset (ZW art. 27); on a
violation it may close a merchant's data channel or delist a product (CS23 art. 26); a
scenario can be suspended the same way. A measure is a row in ``supervision_measures``,
imposed and lifted through :meth:`UnitOfWork.change`, so the row, its record in the
``governance`` log stream (checkpointed and anchored like every record) and the policy
epoch bump commit together: every gateway process loads the active measures into its
:class:`~gateway.governance.policy.PolicySnapshot` and refuses the very next call they stop,
with :class:`~gateway.errors.MeasureInForceError`.

Lifting keeps the row and needs its own reason, so the history of who stopped what, why,
and who restored it stays whole.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.authorization.roles import Action
from gateway.catalog.checks import check_id
from gateway.clock import utc
from gateway.db.schema import (
    DatasetRow,
    LogEntryRow,
    MeasureRow,
    MerchantRow,
    ProductRow,
    ScenarioRow,
)
from gateway.errors import ConflictError, MeasureInForceError, NotFoundError, ValidationError
from gateway.governance.actor import Actor
from gateway.governance.unit_of_work import UnitOfWork

__all__ = [
    "MAX_BASIS",
    "MAX_REASON",
    "Measure",
    "MeasureKind",
    "MeasureReader",
    "MeasureService",
    "MeasureStatus",
    "active_measure",
    "parse_kind",
]

MAX_REASON = 2000
MAX_BASIS = 200
IMPOSE = "measure.impose"
LIFT = "measure.lift"


class MeasureKind(StrEnum):
    """What a measure stops (``target_kind``); the target is the id of that thing."""

    DATASET_SUPPLY = "dataset-supply"
    MERCHANT_CHANNEL = "merchant-channel"
    SCENARIO = "scenario"
    PRODUCT = "product"


class MeasureStatus(StrEnum):
    ACTIVE = "active"
    LIFTED = "lifted"


# Which table a target must exist in, and how a person names it.
_TARGETS: dict[MeasureKind, tuple[Any, str]] = {
    MeasureKind.DATASET_SUPPLY: (DatasetRow.id, "dataset"),
    MeasureKind.MERCHANT_CHANNEL: (MerchantRow.id, "merchant"),
    MeasureKind.SCENARIO: (ScenarioRow.id, "scenario"),
    MeasureKind.PRODUCT: (ProductRow.id, "product"),
}

# What each kind stops, in the words a refused caller reads.
_STOPPED: dict[MeasureKind, str] = {
    MeasureKind.DATASET_SUPPLY: "supply of dataset {} is suspended",
    MeasureKind.MERCHANT_CHANNEL: "the data channel of merchant {} is closed",
    MeasureKind.SCENARIO: "scenario {} is suspended",
    MeasureKind.PRODUCT: "product {} is delisted",
}

_EFFECT: dict[MeasureKind, str] = {
    MeasureKind.DATASET_SUPPLY: (
        "every verify, query and aggregate call on the dataset is refused, in every "
        "scenario, for every merchant"
    ),
    MeasureKind.MERCHANT_CHANNEL: (
        "the merchant gets no scenario token and its data tokens are refused; its account "
        "surface keeps working"
    ),
    MeasureKind.SCENARIO: (
        "no token is issued for the scenario and every data call in it is refused"
    ),
    MeasureKind.PRODUCT: "deliveries of the product are refused and no new trade is recorded",
}


def parse_kind(value: object) -> MeasureKind:
    try:
        return MeasureKind(str(value))
    except ValueError:
        raise ValidationError(
            f"unknown measure kind {value!r}; use one of {', '.join(k.value for k in MeasureKind)}",
            field="kind",
        ) from None


def _reason(what: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{what} must be a non-empty text", field=what)
    if len(value) > MAX_REASON:
        raise ValidationError(f"{what} may be at most {MAX_REASON} characters", field=what)
    return value.strip()


def _basis(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > MAX_BASIS:
        raise ValidationError(
            f"basis must be a short text of 1-{MAX_BASIS} characters (e.g. 'ZW art. 27')",
            field="basis",
        )
    return value.strip()


@dataclass(frozen=True, slots=True)
class Measure:
    """One supervision measure, active or lifted."""

    id: str
    kind: MeasureKind
    target_id: str
    status: MeasureStatus
    reason: str
    basis: str | None
    imposed_by: str
    imposed_at: dt.datetime
    lifted_by: str | None = None
    lifted_at: dt.datetime | None = None
    lift_reason: str | None = None

    @property
    def active(self) -> bool:
        return self.status is MeasureStatus.ACTIVE

    @property
    def stopped(self) -> str:
        """What the measure stops, as a sentence fragment ("supply of dataset x is ...")."""
        return _STOPPED[self.kind].format(self.target_id)

    @classmethod
    def from_row(cls, row: Any) -> Measure:
        return cls(
            id=row.id,
            kind=MeasureKind(row.target_kind),
            target_id=row.target_id,
            status=MeasureStatus(row.status),
            reason=row.reason,
            basis=row.basis,
            imposed_by=row.imposed_by,
            imposed_at=utc(row.imposed_at),
            lifted_by=row.lifted_by,
            lifted_at=utc(row.lifted_at) if row.lifted_at is not None else None,
            lift_reason=row.lift_reason,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind.value,
            "target": self.target_id,
            "status": self.status.value,
            "reason": self.reason,
            "basis": self.basis,
            "effect": _EFFECT[self.kind],
            "imposed_by": self.imposed_by,
            "imposed_at": self.imposed_at.isoformat(),
            "lifted_by": self.lifted_by,
            "lifted_at": self.lifted_at.isoformat() if self.lifted_at else None,
            "lift_reason": self.lift_reason,
        }

    def refusal(self) -> MeasureInForceError:
        """The error a call stopped by this measure gets: what is stopped, by which
        measure, why, and whom to turn to."""
        basis = f" ({self.basis})" if self.basis else ""
        return MeasureInForceError(
            f"{self.stopped} by supervision measure {self.id}{basis}: {self.reason}; "
            "contact the data bureau",
            measure=self.id,
            measure_kind=self.kind.value,
            measure_target=self.target_id,
        )


async def active_measure(
    conn: AsyncConnection, kind: MeasureKind, target_id: str, *, besides: str | None = None
) -> Measure | None:
    """The active measure of ``kind`` on ``target_id`` (other than ``besides``) as the
    transaction sees it; for state changes (a trade) that must not race a measure being
    imposed."""
    query = (
        select(MeasureRow.__table__)
        .where(
            MeasureRow.target_kind == kind.value,
            MeasureRow.target_id == target_id,
            MeasureRow.status == MeasureStatus.ACTIVE.value,
        )
        .order_by(MeasureRow.imposed_at, MeasureRow.id)
    )
    if besides is not None:
        query = query.where(MeasureRow.id != besides)
    row = (await conn.execute(query)).first()
    return None if row is None else Measure.from_row(row)


async def load_active(conn: AsyncConnection) -> dict[tuple[MeasureKind, str], Measure]:
    """Every active measure by (kind, target), for the policy snapshot."""
    rows = (
        await conn.execute(
            select(MeasureRow.__table__)
            .where(MeasureRow.status == MeasureStatus.ACTIVE.value)
            .order_by(MeasureRow.imposed_at, MeasureRow.id)
        )
    ).all()
    active: dict[tuple[MeasureKind, str], Measure] = {}
    for row in rows:
        measure = Measure.from_row(row)
        active.setdefault((measure.kind, measure.target_id), measure)
    return active


def _status_filter(status: str | MeasureStatus | None) -> MeasureStatus | None:
    if status is None or status == "all":
        return None
    try:
        return MeasureStatus(status)
    except ValueError:
        raise ValidationError(
            f"status must be active, lifted or all, not {status!r}", field="status"
        ) from None


class MeasureReader:
    """Reading supervision measures, which needs :attr:`Action.READ_MEASURES` and the
    engine alone (``dsgw measure list`` builds nothing else)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(self, actor: Actor, measure_id: str) -> Measure:
        """One measure; :class:`NotFoundError` if there is none with this id,
        :class:`ForbiddenError` for a role without ``measures.read``."""
        actor.may(Action.READ_MEASURES)
        return await self._load(measure_id)

    async def _load(self, measure_id: str) -> Measure:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(MeasureRow.__table__).where(MeasureRow.id == measure_id[:64])
                )
            ).first()
        if row is None:
            raise NotFoundError(f"supervision measure {measure_id[:64]} does not exist")
        return Measure.from_row(row)

    async def list(
        self, actor: Actor, status: str | MeasureStatus | None = MeasureStatus.ACTIVE
    ) -> Sequence[Measure]:
        """Measures, oldest first: ``active`` (the default), ``lifted`` or all (``"all"`` or
        None). Raises :class:`ForbiddenError` for a role without ``measures.read``."""
        actor.may(Action.READ_MEASURES)
        wanted = _status_filter(status)
        query = select(MeasureRow.__table__).order_by(MeasureRow.imposed_at, MeasureRow.id)
        if wanted is not None:
            query = query.where(MeasureRow.status == wanted.value)
        async with self._engine.connect() as conn:
            return [Measure.from_row(row) for row in (await conn.execute(query)).all()]

    async def records(self, measure_id: str) -> Sequence[str]:
        """The ``governance`` records (``stream/seq``) of the measure's imposition and
        lifting: what an evidence bundle is asked for (``dsgw bundle governance SEQ``)."""
        query = (
            select(LogEntryRow.seq, LogEntryRow.payload)
            .where(LogEntryRow.stream == "governance", LogEntryRow.kind.in_((IMPOSE, LIFT)))
            .order_by(LogEntryRow.seq)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            f"governance/{seq}"
            for seq, payload in rows
            if json.loads(payload).get("measure_id") == measure_id
        ]


class MeasureService(MeasureReader):
    """Imposing, lifting and reading supervision measures. Imposing and lifting need
    :attr:`Action.IMPOSE_MEASURE` / :attr:`Action.LIFT_MEASURE` (supervisor, authority, the
    local administrator); reading (:class:`MeasureReader`) needs
    :attr:`Action.READ_MEASURES`."""

    def __init__(self, engine: AsyncEngine, uow: UnitOfWork) -> None:
        super().__init__(engine)
        self._uow = uow

    @staticmethod
    def authorize_impose(actor: Actor) -> None:
        """Raise :class:`ForbiddenError` unless ``actor`` may impose measures. The HTTP
        shell asks before it reads the request body, so a caller who may not impose learns
        only that; :meth:`impose` asks again."""
        actor.may(Action.IMPOSE_MEASURE)

    async def impose(
        self,
        actor: Actor,
        kind: MeasureKind | str,
        target_id: str,
        reason: str,
        basis: str | None = None,
    ) -> Measure:
        """Impose a measure on an existing target; in force in every process from its next
        call. Raises :class:`ForbiddenError`, :class:`ValidationError`,
        :class:`NotFoundError` (no such target) or :class:`ConflictError` (a measure of this
        kind is already active on the target)."""
        self.authorize_impose(actor)
        measure_kind = parse_kind(kind)
        key, noun = _TARGETS[measure_kind]
        target = check_id(noun, target_id)
        why = _reason("reason", reason)
        legal_basis = _basis(basis)
        measure_id = f"m-{secrets.token_hex(6)}"

        async def apply(conn: AsyncConnection, now: dt.datetime) -> Measure:
            # Locking the target row (PostgreSQL; SQLite has one writer anyway) queues
            # concurrent impositions on the same target behind each other.
            if await conn.scalar(select(key).where(key == target).with_for_update()) is None:
                raise NotFoundError(f"{noun} {target} does not exist")
            measure = Measure(
                id=measure_id,
                kind=measure_kind,
                target_id=target,
                status=MeasureStatus.ACTIVE,
                reason=why,
                basis=legal_basis,
                imposed_by=actor.id,
                imposed_at=now,
            )
            await conn.execute(
                insert(MeasureRow).values(
                    id=measure.id,
                    target_kind=measure.kind.value,
                    target_id=measure.target_id,
                    status=measure.status.value,
                    reason=measure.reason,
                    basis=measure.basis,
                    imposed_by=measure.imposed_by[:64],
                    imposed_at=now,
                )
            )
            # Written first, then checked: on SQLite the insert takes the write lock, so the
            # check sees every measure committed before; on PostgreSQL the target's row
            # lock does the same. One active measure per kind and target, either way.
            current = await active_measure(conn, measure_kind, target, besides=measure.id)
            if current is not None:
                raise ConflictError(
                    f"{current.stopped} already, by supervision measure {current.id} "
                    f"(imposed {current.imposed_at.isoformat()}); lift it first to impose another",
                    measure=current.id,
                )
            return measure

        return await self._uow.change(
            actor,
            IMPOSE,
            {
                "measure_id": measure_id,
                "target_kind": measure_kind.value,
                "target_id": target,
                "reason": why,
                "basis": legal_basis,
            },
            apply,
        )

    async def lift(self, actor: Actor, measure_id: str, reason: str) -> Measure:
        """Lift an active measure with a reason; what it stopped works again on the next
        call. Raises :class:`NotFoundError` or :class:`ConflictError` (already lifted)."""
        actor.may(Action.LIFT_MEASURE)
        why = _reason("reason", reason)
        current = await self._load(measure_id)

        async def apply(conn: AsyncConnection, now: dt.datetime) -> Measure:
            # Only an active measure is updated: of two concurrent liftings, the second
            # finds nothing to update once the first committed, and is told so.
            lifted = await conn.execute(
                update(MeasureRow)
                .where(MeasureRow.id == current.id, MeasureRow.status == MeasureStatus.ACTIVE.value)
                .values(
                    status=MeasureStatus.LIFTED.value,
                    lifted_by=actor.id[:64],
                    lifted_at=now,
                    lift_reason=why,
                )
            )
            row = (
                await conn.execute(select(MeasureRow.__table__).where(MeasureRow.id == current.id))
            ).first()
            assert row is not None  # measures are never deleted
            measure = Measure.from_row(row)
            if lifted.rowcount != 1:
                raise ConflictError(
                    f"supervision measure {measure.id} was already lifted "
                    f"({measure.lifted_at.isoformat() if measure.lifted_at else ''} by "
                    f"{measure.lifted_by}: {measure.lift_reason})",
                    measure=measure.id,
                )
            return measure

        return await self._uow.change(
            actor,
            LIFT,
            {
                "measure_id": current.id,
                "target_kind": current.kind.value,
                "target_id": current.target_id,
                "reason": current.reason,
                "basis": current.basis,
                "lift_reason": why,
            },
            apply,
        )
