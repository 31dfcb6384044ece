"""An in-memory, immutable view of everything a call decision needs.

Deciding a call must not cost database round trips, so each process holds a
:class:`PolicySnapshot` and swaps in a fresh one whenever the epoch file says policy changed
(see :mod:`gateway.governance.epoch`). Snapshots are immutable: a request keeps deciding
against the one it started with.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.catalog.models import Dataset
from gateway.clock import Clock, utc
from gateway.db.schema import (
    AgreementRow,
    ClientRow,
    DatasetRow,
    MerchantRow,
    ScenarioRow,
    TokenRow,
)
from gateway.governance.epoch import EpochFile
from gateway.governance.models import (
    Agreement,
    AgreementStatus,
    Client,
    Merchant,
    MerchantStatus,
    Scenario,
    ScenarioStatus,
)
from gateway.supervision.measures import Measure, MeasureKind, load_active

__all__ = ["UNKNOWN_NAME", "PolicySnapshot", "PolicyStore", "agreement_of", "load_snapshot"]

UNKNOWN_NAME = "unknown"
"""What metrics and reports call a scenario, dataset or merchant the policy does not hold:
names in paths and token requests arrive before authentication, and only names that exist
may become labels or report rows (one ``unknown`` for all the rest)."""


@dataclass(frozen=True, slots=True)
class PolicySnapshot:
    datasets: Mapping[str, Dataset] = field(default_factory=dict)
    scenarios: Mapping[str, Scenario] = field(default_factory=dict)
    merchants: Mapping[str, Merchant] = field(default_factory=dict)
    agreements: Mapping[str, Agreement] = field(default_factory=dict)
    clients: Mapping[str, Client] = field(default_factory=dict)
    revoked_jtis: frozenset[str] = frozenset()
    # Active supervision measures by (kind, target): checked on every call, so a measure
    # costs no database round trip and takes effect on the next call after a reload.
    measures: Mapping[tuple[MeasureKind, str], Measure] = field(default_factory=dict)
    loaded_at: dt.datetime = field(default_factory=lambda: dt.datetime.min.replace(tzinfo=dt.UTC))

    def agreement_for(
        self, merchant_id: str, scenario_id: str, now: dt.datetime
    ) -> Agreement | None:
        """The merchant's agreement for the scenario that is usable now, if any."""
        for agreement in self.agreements.values():
            if (
                agreement.merchant_id == merchant_id
                and agreement.scenario_id == scenario_id
                and agreement.usable_at(now)
            ):
                return agreement
        return None

    def measure_on(self, kind: MeasureKind, target_id: str | None) -> Measure | None:
        """The active supervision measure of ``kind`` on ``target_id``, if any."""
        if target_id is None:
            return None
        return self.measures.get((kind, target_id))

    def check_measure(self, kind: MeasureKind, target_id: str | None) -> None:
        """Raise :class:`~gateway.errors.MeasureInForceError` if an active measure of
        ``kind`` stops ``target_id``."""
        measure = self.measure_on(kind, target_id)
        if measure is not None:
            raise measure.refusal()


def _decimal(value: object) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def agreement_of(row: Any) -> Agreement:
    """An agreement from its row (``agreements`` table)."""
    scope, authorized = Agreement.parse_terms(row.terms or {})
    return Agreement(
        id=row.id,
        merchant_id=row.merchant_id,
        scenario_id=row.scenario_id,
        starts_at=utc(row.starts_at),
        ends_at=utc(row.ends_at),
        share_owner=_decimal(row.share_owner),
        share_operator=_decimal(row.share_operator),
        share_processor=_decimal(row.share_processor),
        status=AgreementStatus(row.status),
        scope=scope,
        subject_authorized=authorized,
    )


async def load_snapshot(engine: AsyncEngine, now: dt.datetime) -> PolicySnapshot:
    async with engine.connect() as conn:
        datasets = {
            row.id: Dataset.from_dict(row.definition)
            for row in (await conn.execute(select(DatasetRow))).all()
        }
        scenarios: dict[str, Scenario] = {}
        for row in (await conn.execute(select(ScenarioRow))).all():
            scenario = Scenario.from_dict(row.definition)
            scenarios[row.id] = _with_status(scenario, ScenarioStatus(row.status))
        merchants = {
            row.id: Merchant(row.id, row.name, row.credit_code, MerchantStatus(row.status))
            for row in (await conn.execute(select(MerchantRow))).all()
        }
        agreements = {
            row.id: agreement_of(row) for row in (await conn.execute(select(AgreementRow))).all()
        }
        clients = {
            row.client_id: Client(
                client_id=row.client_id,
                kind=row.kind,
                merchant_id=row.merchant_id,
                role=row.role,
                secret_hash=row.secret_hash,
                public_jwk=row.public_jwk,
                status=row.status,
                department=row.department,
                buyer_code=row.buyer_code,
            )
            for row in (await conn.execute(select(ClientRow))).all()
        }
        revoked = frozenset(
            (
                await conn.scalars(
                    select(TokenRow.jti).where(
                        TokenRow.revoked_at.is_not(None), TokenRow.expires_at > now
                    )
                )
            ).all()
        )
        measures = await load_active(conn)
    return PolicySnapshot(
        datasets=datasets,
        scenarios=scenarios,
        merchants=merchants,
        agreements=agreements,
        clients=clients,
        revoked_jtis=revoked,
        measures=measures,
        loaded_at=now,
    )


def _with_status(scenario: Scenario, status: ScenarioStatus) -> Scenario:
    return replace(scenario, status=status)


class PolicyStore:
    """Hands out the current snapshot, reloading first if the epoch moved."""

    def __init__(self, engine: AsyncEngine, epoch: EpochFile, clock: Clock) -> None:
        self._engine = engine
        self._epoch = epoch
        self._clock = clock
        self._snapshot = PolicySnapshot()
        self._marker: int | None = None
        # Changes announced from other machines (gateway.cluster.policy_push): counted here,
        # compared like the epoch file's counter.
        self._remote = 0
        self._remote_seen = 0
        self._lock = asyncio.Lock()
        self.reloads = 0
        self._hooks: list[Callable[[], Awaitable[None]]] = []

    def on_reload(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` after every reload: state kept beside the policy (the loaded holiday
        schedules) follows the same announcements, on every machine."""
        self._hooks.append(hook)

    @property
    def latest(self) -> PolicySnapshot:
        """The snapshot loaded last, without looking for changes: for synchronous readers
        that only need names (metric labels). Decisions use :meth:`current`."""
        return self._snapshot

    def remote_change(self) -> None:
        """Policy changed elsewhere: reload before the next call."""
        self._remote += 1

    async def current(self) -> PolicySnapshot:
        if self._epoch.marker() != self._marker or self._remote != self._remote_seen:
            await self.reload()
        return self._snapshot

    async def reload(self) -> None:
        async with self._lock:
            marker, remote = self._epoch.marker(), self._remote
            if marker == self._marker and remote == self._remote_seen:
                return
            # Read the markers before loading: a change committed during the load moves one
            # again, and the next call reloads once more.
            self._snapshot = await load_snapshot(self._engine, self._clock.now())
            self._marker, self._remote_seen = marker, remote
            self.reloads += 1
            for hook in self._hooks:
                await hook()
