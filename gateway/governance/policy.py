"""An in-memory, immutable view of everything a call decision needs.

Deciding a call must not cost database round trips, so each process holds a
:class:`PolicySnapshot` and swaps in a fresh one whenever the epoch file says policy changed
(see :mod:`gateway.governance.epoch`). Snapshots are immutable: a request keeps deciding
against the one it started with.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
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
from gateway.dependencies import DependencyHealth
from gateway.errors import StoreUnavailableError
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
    """Hands out the current snapshot, reloading first if the epoch moved.

    When the store cannot be read, calls do not each try again (a dead database would make
    every call wait for its own failed reload): reloads back off, from ``retry_seconds``
    doubling up to ``retry_max_seconds``, and meanwhile the store decides from what it
    knows, failing closed:

    - a change *known* to have been committed (the epoch file moved, a notice or the poll
      said so): no call is decided on the old snapshot; each is refused with 503
      ``store-unavailable`` until a reload succeeds;
    - a change that *may* have been missed (the policy listener lost its connection,
      :meth:`possibly_changed`): the last snapshot keeps serving for ``max_staleness``
      seconds from the moment it stopped being known current, then calls are refused too.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        epoch: EpochFile,
        clock: Clock,
        *,
        max_staleness: float = 30.0,
        retry_seconds: float = 0.5,
        retry_max_seconds: float = 5.0,
        health: DependencyHealth | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._epoch = epoch
        self._clock = clock
        self._snapshot = PolicySnapshot()
        self._marker: int | None = None
        # Changes announced from other machines (gateway.cluster.policy_push): counted here,
        # compared like the epoch file's counter.
        self._remote = 0
        self._remote_seen = 0
        # Announcements that a change may have been missed, and since when the snapshot is
        # no longer known current (None: it is).
        self._doubt = 0
        self._doubt_seen = 0
        self._unsure_since: float | None = None
        self._max_staleness = max_staleness
        self._retry_seconds = retry_seconds
        self._retry_max_seconds = retry_max_seconds
        self._retry_at = 0.0
        self._failures = 0
        self._health = health or DependencyHealth()
        self._monotonic = monotonic
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

    def possibly_changed(self) -> None:
        """Policy may have changed elsewhere unheard (the listener's connection was lost):
        reload when the store answers; until then serve the last snapshot within
        ``max_staleness``."""
        if self._unsure_since is None:
            self._unsure_since = self._monotonic()
        self._doubt += 1

    def _changed(self) -> bool:
        return self._epoch.marker() != self._marker or self._remote != self._remote_seen

    @property
    def fresh(self) -> bool:
        """Whether calls are decided now (readiness): no known change is waiting for a
        reload the store refused, and no doubt is older than ``max_staleness``."""
        if self._failures and self._changed():
            return False
        unsure = self._unsure_since
        return unsure is None or self._monotonic() - unsure <= self._max_staleness

    async def current(self) -> PolicySnapshot:
        """The snapshot to decide a call on.

        Raises :class:`StoreUnavailableError` when it cannot be trusted (see the class)."""
        if self._changed() or self._doubt != self._doubt_seen:
            await self._refresh()
        return self._snapshot

    async def current_or_last(self) -> PolicySnapshot:
        """:meth:`current`, or when the store cannot be trusted the last snapshot loaded.

        For ``/metrics`` only: a scrape reads no data, and an outage is exactly when
        operators need to watch the gateway, so it authenticates against the last policy
        this process saw. Never decide a call with it."""
        try:
            return await self.current()
        except StoreUnavailableError:
            return self._snapshot

    async def _refresh(self) -> None:
        if self._monotonic() >= self._retry_at:
            async with self._lock:
                # Callers queued behind a failed reload do not try again at once.
                if self._monotonic() >= self._retry_at:
                    try:
                        await self._reload_locked()
                    except Exception as exc:
                        if self._health.observe(exc) is None:
                            raise  # not the store's absence: a bug, answered as one
                        self._failures += 1
                        backoff = self._retry_seconds * 2 ** min(self._failures - 1, 16)
                        self._retry_at = self._monotonic() + min(backoff, self._retry_max_seconds)
                    else:
                        return
        self._refuse_if_untrusted()

    def _refuse_if_untrusted(self) -> None:
        error: StoreUnavailableError | None = None
        if self._changed():
            error = StoreUnavailableError(
                "policy: a policy change is waiting to be read from the gateway's store, "
                "which does not answer; the call is refused rather than decided on the old "
                "policy. Retry shortly"
            )
        else:
            unsure = self._unsure_since
            if unsure is not None and self._monotonic() - unsure > self._max_staleness:
                error = StoreUnavailableError(
                    "policy: the gateway's store has not answered for too long to trust its "
                    "last policy; the call is refused. Retry shortly"
                )
        if error is not None:
            # The failed reload behind it was reported; the refusals it causes are not new
            # failures of the store.
            error.reported = True
            raise error

    async def reload(self) -> None:
        """Load the snapshot now if anything changed (raises the store's own errors)."""
        async with self._lock:
            await self._reload_locked()

    async def _reload_locked(self) -> None:
        marker, remote, doubt = self._epoch.marker(), self._remote, self._doubt
        if marker == self._marker and remote == self._remote_seen and doubt == self._doubt_seen:
            return
        # Read the markers before loading: a change committed during the load moves one
        # again, and the next call reloads once more.
        self._snapshot = await load_snapshot(self._engine, self._clock.now())
        self._marker, self._remote_seen, self._doubt_seen = marker, remote, doubt
        if doubt == self._doubt:  # a doubt raised during the load stays for the next one
            self._unsure_since = None
        self._failures = 0
        self._retry_at = 0.0
        self._health.recovered("database")
        self.reloads += 1
        for hook in self._hooks:
            await hook()
