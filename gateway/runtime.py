"""Wiring: builds every domain service of one gateway process from its settings.

The HTTP app and the CLI both start here, so they share one set of services and rules.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.api.delivery_client import DeliveryClient
from gateway.authorization.allowance import call_allowance
from gateway.authorization.secrets import SecretHasher
from gateway.authorization.tokens import TokenService
from gateway.background import BackgroundWork
from gateway.catalog.secrets import SourceSecrets
from gateway.catalog.sources import SourceAccess, SourceRules
from gateway.clock import Clock, SystemClock
from gateway.cluster.leadership import Leadership
from gateway.dataplane.connectors import ConnectorRegistry
from gateway.dataplane.service import DataPlane
from gateway.dataplane.wiring import build_dataplane
from gateway.db.engines import engine_for, migrate
from gateway.dependencies import DEPENDENCIES, DependencyHealth
from gateway.derived_keys import DerivedKeys, derive_key
from gateway.errors import DsgwError
from gateway.evaluation import EvaluationService
from gateway.evidence.notes import NoteSigner
from gateway.evidence.service import EvidenceService
from gateway.governance.epoch import EpochFile
from gateway.governance.models import Scenario
from gateway.governance.policy import PolicyStore
from gateway.governance.service import GovernanceService
from gateway.initialise import InitReport, initialise
from gateway.ledger.checkpoints import Checkpointer
from gateway.ledger.log import STREAMS, LogWriter
from gateway.monitoring.monitor import Monitor
from gateway.monitoring.store import AlertStore
from gateway.monitoring.wiring import build_monitoring
from gateway.objections import ObjectionService, ReceiptKeys
from gateway.passphrase import keystore_passphrase, open_keystore
from gateway.privacy.quasi import QuasiIdentifierWarning, check_scenario, connector_groups
from gateway.products.delivery import DeliveryService
from gateway.products.service import ProductService
from gateway.settings import Settings
from gateway.supervision.measures import MeasureService
from gateway.tracing.engine import LeakTracer
from gateway.workdays.schedules import WorkdaySchedules
from gateway.workdays.store import LiveCalendar, open_calendar
from gateway.workflows.service import WorkflowService
from gateway.workflows.use import UseApplicationService
from keys.keystore import KeyPurpose, Keystore

if TYPE_CHECKING:
    from gateway.authorization.shared_quotas import RedisQuotaTracker
    from gateway.chain.service import Anchoring

__all__ = [
    "Gateway",
    "InitReport",
    "derive_key",
    "initialise",
    "keystore_passphrase",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Gateway:
    """Every service of one gateway process, built once by :meth:`open` and never changed.

    What changes while the process runs (whether it leads, anchors, watches) is
    :attr:`background`'s; what must be closed is on :attr:`exits`, pushed as it was opened.
    """

    settings: Settings
    clock: Clock
    engine: AsyncEngine
    keystore: Keystore
    epoch: EpochFile
    policy: PolicyStore
    log: LogWriter
    tokens: TokenService
    governance: GovernanceService
    dataplane: DataPlane
    connectors: ConnectorRegistry
    checkpointer: Checkpointer
    workflows: WorkflowService
    applications: UseApplicationService
    products: ProductService
    deliveries: DeliveryService
    alerts: AlertStore
    monitor: Monitor
    tracer: LeakTracer
    measures: MeasureService
    objections: ObjectionService
    evaluation: EvaluationService
    # The working-day calendar deadlines are counted on: shipped and configured schedules
    # plus those loaded into the store (refreshed on every policy reload).
    calendar: LiveCalendar
    # Holiday schedules: loading one, and every process's calendar in step with the store.
    schedules: WorkdaySchedules
    # What this process knows of its store, disk, keystore and Redis (gateway.dependencies):
    # every service that meets an outage reports it here.
    health: DependencyHealth
    # The Redis-backed quota store when ``redis_url`` is set (closed with the gateway).
    shared_quotas: RedisQuotaTracker | None
    background: BackgroundWork = field(init=False)
    # Records, bundles, checkpoints and proofs for their readers; a bundle's anchor comes
    # from the background's chain connection while there is one.
    evidence: EvidenceService = field(init=False)
    exits: AsyncExitStack = field(default_factory=AsyncExitStack)

    def __post_init__(self) -> None:
        background = BackgroundWork(self)
        object.__setattr__(self, "background", background)
        evidence = EvidenceService(
            self.engine,
            self.checkpointer,
            self.keystore,
            self.settings,
            live_registry=background.live_registry,
        )
        object.__setattr__(self, "evidence", evidence)

    @property
    def anchoring(self) -> Anchoring | None:
        """The chain connection while this process anchors (else None)."""
        return self.background.anchoring

    @property
    def leadership(self) -> Leadership | None:
        """Set once this process campaigns for the deployment's background work."""
        return self.background.leadership

    @classmethod
    async def open(
        cls, settings: Settings, *, clock: Clock | None = None, anchoring: bool = True
    ) -> Gateway:
        """Open the store and keystore made by :func:`initialise` and start the log writer.

        With ``anchoring`` (and a ``chain`` configured) the chain connection starts now, as
        for a single process; a server that runs with others passes ``False`` and anchors
        only while it leads (:meth:`BackgroundWork.campaign`).

        Whatever was opened before a failure is closed again. Raises
        :class:`KeystoreError` when the keystore is missing or the passphrase is wrong.
        """
        exits = AsyncExitStack()
        try:
            gateway = await cls._build(settings, clock or SystemClock(), exits)
            if anchoring:
                await gateway.background.start_anchoring()
        except BaseException:
            await exits.aclose()
            raise
        return gateway

    @classmethod
    async def _build(cls, settings: Settings, clock: Clock, exits: AsyncExitStack) -> Gateway:
        """Every service, each closer pushed on ``exits`` as soon as there is one to call
        (so they run in reverse: the store last, the log writer before the store)."""
        health = DependencyHealth(
            tuple(d for d in DEPENDENCIES if d != "redis" or settings.cluster.redis_url)
        )
        keystore = open_keystore(settings)
        engine = engine_for(settings)
        exits.push_async_callback(engine.dispose)
        await migrate(engine, timezone=settings.timezone)
        algorithm = settings.hash_algorithm
        epoch = EpochFile(settings.epoch_path)
        exits.callback(epoch.close)
        policy = PolicyStore(
            engine,
            epoch,
            clock,
            max_staleness=settings.cluster.policy_max_staleness_seconds,
            health=health,
        )
        await policy.reload()
        hasher = SecretHasher(
            time_cost=settings.secret_hash.time_cost,
            memory_kib=settings.secret_hash.memory_kib,
        )
        tokens = TokenService(settings, keystore, policy, engine, hasher, clock)
        sources = SourceAccess(
            SourceRules.from_settings(settings),
            SourceSecrets(keystore, dict(settings.source.env_secrets)),
        )
        governance = GovernanceService(
            engine, epoch, clock, hasher, algorithm=algorithm, sources=sources, zone=settings.zone
        )
        connectors = ConnectorRegistry(sources, pool_size=settings.source.pool_size)
        exits.push_async_callback(connectors.close)
        quotas, shared_quotas = call_allowance(settings, engine, health)
        if shared_quotas is not None:
            exits.push_async_callback(shared_quotas.close)
        deliveries = DeliveryService(engine, DeliveryClient())
        exits.push_async_callback(deliveries.close)
        keys = DerivedKeys.of(keystore)
        dataplane = build_dataplane(settings, engine, clock, connectors, quotas, keys)
        checkpointer = Checkpointer(
            engine,
            NoteSigner(
                settings.deployment,
                keystore.signing_key(keystore.active(KeyPurpose.CHECKPOINT).kid),
            ),
            clock,
            deployment=settings.deployment,
            algorithm=algorithm,
            every_records=settings.ledger.checkpoint_every_records,
            every_seconds=settings.ledger.checkpoint_every_seconds,
            health=health,
        )
        live = await open_calendar(engine, *settings.workdays.calendars, zone=settings.zone)
        alerts, monitor = build_monitoring(settings, engine, policy, clock, live, health)
        workflows = WorkflowService(engine, governance.uow, live, clock)
        applications = UseApplicationService(
            engine,
            governance.uow,
            governance.agreements,
            live,
            clock,
            zone=governance.zone,
            health=health,
        )
        objections = ObjectionService(
            engine,
            governance.uow,
            live,
            clock,
            keys=ReceiptKeys(trace_key=keys.trace, param_key=keys.param),
            working_days=settings.workdays.objection_working_days,
        )
        log = LogWriter(
            engine, algorithm=algorithm, batch_max=settings.ledger.log_batch_max, health=health
        )
        await log.start()
        exits.push_async_callback(log.close)
        gateway = cls(
            health=health,
            shared_quotas=shared_quotas,
            checkpointer=checkpointer,
            settings=settings,
            clock=clock,
            engine=engine,
            keystore=keystore,
            epoch=epoch,
            policy=policy,
            log=log,
            tokens=tokens,
            governance=governance,
            dataplane=dataplane,
            connectors=connectors,
            workflows=workflows,
            applications=applications,
            products=ProductService(engine, governance.uow, clock),
            deliveries=deliveries,
            alerts=alerts,
            monitor=monitor,
            tracer=LeakTracer(
                engine,
                policy,
                connectors,
                trace_key=keys.trace,
                mark_key=keys.mark,
                p_guess=settings.trace.p_guess,
                named_threshold=settings.trace.named_threshold,
            ),
            measures=MeasureService(engine, governance.uow),
            objections=objections,
            evaluation=EvaluationService(engine, governance.uow, clock, zone=governance.zone),
            calendar=live,
            schedules=WorkdaySchedules(
                engine,
                live,
                alerts,
                governance.uow,
                recounts=(
                    workflows.recompute_provisional,
                    applications.recompute_provisional,
                    objections.recompute_provisional,
                ),
            ),
            exits=exits,
        )
        exits.push_async_callback(gateway.background.close)
        policy.on_reload(gateway.schedules.refresh)
        return gateway

    async def scenario_warnings(self, scenario: Scenario) -> list[QuasiIdentifierWarning]:
        """Quasi-identifier warnings of ``scenario`` against the current catalog, measured
        on the sources this process can reach (docs/privacy.md); advice, never a refusal."""
        snapshot = await self.governance.snapshot()
        return await check_scenario(
            scenario,
            snapshot.datasets,
            min_subjects=self.settings.aggregate.min_subjects,
            groups=connector_groups(self.connectors.get),
        )

    async def close(self, *, final_checkpoint: bool = False) -> None:
        """Commit queued records, optionally checkpoint them (a server stopping does, so
        its last calls are covered), close sources and the store.

        Call it only once no call is in flight (a server drains its calls first,
        :func:`gateway.cli.server.running_gateway`): the background work stops first, the
        call-log writer after the work that appends to it, Redis and the store last.
        Closing twice is harmless."""
        await self.background.close()
        await self.log.close()
        for stream in STREAMS if final_checkpoint else ():
            try:
                await self.checkpointer.checkpoint(stream)
            except (SQLAlchemyError, OSError, DsgwError) as exc:
                log.warning("final checkpoint of %s failed: %s", stream, exc)
        await self.exits.aclose()
