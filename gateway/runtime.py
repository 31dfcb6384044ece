"""Wiring: builds every domain service of one gateway process from its settings.

The HTTP app and the CLI both start here, so they share one set of services and rules.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.api.delivery_client import DeliveryClient
from gateway.authorization.allowance import call_allowance
from gateway.authorization.secrets import SecretHasher
from gateway.authorization.shared_quotas import RedisQuotaTracker
from gateway.authorization.tokens import TokenService
from gateway.catalog.secrets import SourceSecrets
from gateway.catalog.sources import SourceAccess, SourceRules
from gateway.chain.models import AnchorPolicy
from gateway.chain.service import Anchoring
from gateway.clock import Clock, SystemClock
from gateway.cluster.leadership import Leadership, leader_lock_for
from gateway.cluster.policy_push import PolicyWatch
from gateway.dataplane.connectors import ConnectorRegistry
from gateway.dataplane.service import DataPlane
from gateway.dataplane.wiring import build_dataplane
from gateway.db import engine_for, migrate
from gateway.dependencies import DEPENDENCIES, DependencyHealth
from gateway.derived_keys import DerivedKeys, derive_key
from gateway.errors import ConfigError, DsgwError, KeystoreError
from gateway.evaluation import EvaluationService
from gateway.evidence.build import record_bundle
from gateway.evidence.keys import KeyRing, gateway_key_ring
from gateway.evidence.notes import NoteSigner
from gateway.governance.actor import Actor
from gateway.governance.epoch import EpochFile
from gateway.governance.models import Scenario
from gateway.governance.policy import PolicyStore
from gateway.governance.service import GovernanceService
from gateway.initialise import InitReport, initialise
from gateway.ledger.checkpoints import Checkpointer
from gateway.ledger.log import STREAMS, LogWriter
from gateway.monitoring import AlertStore, Monitor
from gateway.monitoring.wiring import build_monitoring
from gateway.objections import ObjectionService, ReceiptKeys
from gateway.passphrase import keystore_passphrase, open_keystore
from gateway.privacy.quasi import QuasiIdentifierWarning, check_scenario, connector_groups
from gateway.products.delivery import DeliveryService
from gateway.products.service import ProductService
from gateway.readiness import DependencyWatch
from gateway.settings import Settings
from gateway.supervision.measures import MeasureService
from gateway.tracing.engine import LeakTracer
from gateway.workdays import YearSchedule, default_calendar
from gateway.workdays.schedules import WorkdaySchedules
from gateway.workdays.store import (
    LiveCalendar,
    LoadedSchedule,
    stored_schedules,
)
from gateway.workflows.service import WorkflowService
from gateway.workflows.use import UseApplicationService
from keys.keystore import KeyPurpose, Keystore

__all__ = [
    "Gateway",
    "InitReport",
    "derive_key",
    "initialise",
    "keystore_passphrase",
]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Gateway:
    """Every service of one gateway process."""

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
    anchoring: Anchoring | None = None
    # The Redis-backed quota store when ``redis_url`` is set (closed with the gateway).
    shared_quotas: RedisQuotaTracker | None = None
    # Set by :meth:`campaign` (servers): whether this process runs the background work.
    leadership: Leadership | None = None
    # Set by :meth:`watch_policy` (servers): policy changes made on other machines.
    policy_watch: PolicyWatch | None = None
    # What this process knows of its store, disk, keystore and Redis (gateway.dependencies):
    # every service that meets an outage reports it here.
    health: DependencyHealth = field(default_factory=DependencyHealth)
    # Set by :meth:`watch_dependencies` (servers): checks them when no call does.
    dependency_watch: DependencyWatch | None = None

    @classmethod
    async def open(
        cls, settings: Settings, *, clock: Clock | None = None, anchoring: bool = True
    ) -> Gateway:
        """Open the store and keystore made by :func:`initialise` and start the log writer.

        With ``anchoring`` (and a ``chain`` configured) the chain connection starts now, as
        for a single process; a server that runs with others passes ``False`` and anchors
        only while it leads (:meth:`campaign`).

        Raises :class:`KeystoreError` when the keystore is missing or the passphrase is wrong.
        """
        clock = clock or SystemClock()
        health = DependencyHealth(
            tuple(d for d in DEPENDENCIES if d != "redis" or settings.redis_url)
        )
        keystore = open_keystore(settings)
        engine = engine_for(settings)
        try:
            await migrate(engine, timezone=settings.timezone)
        except BaseException:
            await engine.dispose()
            raise
        algorithm = settings.hash_algorithm
        epoch = EpochFile(settings.epoch_path)
        policy = PolicyStore(
            engine,
            epoch,
            clock,
            max_staleness=settings.policy_max_staleness_seconds,
            health=health,
        )
        await policy.reload()
        log = LogWriter(
            engine, algorithm=algorithm, batch_max=settings.log_batch_max, health=health
        )
        await log.start()
        hasher = SecretHasher(
            time_cost=settings.secret_hash_time_cost,
            memory_kib=settings.secret_hash_memory_kib,
        )
        tokens = TokenService(settings, keystore, policy, engine, hasher, clock)
        sources = SourceAccess(
            SourceRules.from_settings(settings),
            SourceSecrets(keystore, dict(settings.source_env_secrets)),
        )
        governance = GovernanceService(
            engine, epoch, clock, hasher, algorithm=algorithm, sources=sources, zone=settings.zone
        )
        connectors = ConnectorRegistry(sources, pool_size=settings.source_pool_size)
        quotas, shared_quotas = call_allowance(settings, engine, health)
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
            every_records=settings.checkpoint_every_records,
            every_seconds=settings.checkpoint_every_seconds,
            health=health,
        )
        live = LiveCalendar(default_calendar(*settings.workday_calendars, zone=settings.zone))
        async with engine.connect() as conn:
            live.replace(item.schedule for item in await stored_schedules(conn))
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
            working_days=settings.objection_working_days,
        )
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
            deliveries=DeliveryService(engine, DeliveryClient()),
            alerts=alerts,
            monitor=monitor,
            tracer=LeakTracer(
                engine,
                policy,
                connectors,
                trace_key=keys.trace,
                mark_key=keys.mark,
                p_guess=settings.trace_p_guess,
                named_threshold=settings.trace_named_threshold,
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
        )
        policy.on_reload(gateway.refresh_calendar)
        if anchoring:
            await gateway.start_anchoring()
        return gateway

    async def scenario_warnings(self, scenario: Scenario) -> list[QuasiIdentifierWarning]:
        """Quasi-identifier warnings of ``scenario`` against the current catalog, measured
        on the sources this process can reach (docs/privacy.md); advice, never a refusal."""
        snapshot = await self.governance.snapshot()
        return await check_scenario(
            scenario,
            snapshot.datasets,
            min_subjects=self.settings.aggregate_min_subjects,
            groups=connector_groups(self.connectors.get),
        )

    async def refresh_calendar(self) -> None:
        await self.schedules.refresh()

    async def alert_missing_schedule(self) -> None:
        await self.schedules.alert_missing()

    async def load_workday_schedule(
        self, actor: Actor, schedule: YearSchedule, *, loaded_by: str
    ) -> tuple[LoadedSchedule | None, list[str]]:
        return await self.schedules.load(actor, schedule, loaded_by=loaded_by)

    async def start_anchoring(self) -> None:
        """Connect to the chain and start anchoring in the background (nothing when the
        deployment has no chain, or it already runs)."""
        settings, keystore, clock = self.settings, self.keystore, self.clock
        if settings.chain == "none" or self.anchoring is not None:
            return
        try:
            chain_kid = keystore.active(KeyPurpose.CHAIN_ACCOUNT).kid
        except KeystoreError:
            chain_kid = keystore.generate(KeyPurpose.CHAIN_ACCOUNT, now=clock.now()).kid
        self.anchoring = Anchoring(
            self.engine,
            kind=settings.chain,
            account_key=keystore.chain_account_private_key(chain_kid),
            state_dir=settings.data_dir / "chain",
            clock=clock,
            algorithm=settings.hash_algorithm,
            rpc_url=settings.chain_rpc_url,
            contract=settings.chain_contract,
            policy=AnchorPolicy(confirmations=settings.chain_confirmations, poll_interval=0.5),
        )
        await self.anchoring.start()
        self.checkpointer.on_signed = self.anchoring.notify

    async def stop_anchoring(self) -> None:
        if self.anchoring is not None:
            self.checkpointer.on_signed = None
            await self.anchoring.close()
            self.anchoring = None

    async def start_background(self) -> None:
        """Start the work one process of the deployment runs for all: checkpoints,
        anchoring, deemed approvals, the monitor."""
        self.checkpointer.start()
        await self.start_anchoring()
        self.applications.start_sweeper(also=self.alert_missing_schedule)
        self.objections.start_sweeper()
        if self.settings.monitor_enabled:
            self.monitor.start(self.settings.monitor_interval_seconds)

    async def stop_background(self) -> None:
        await self.checkpointer.stop()
        await self.applications.stop_sweeper()
        await self.objections.stop_sweeper()
        await self.monitor.stop()
        await self.stop_anchoring()

    def campaign(self) -> Leadership:
        """Run the background work only while this process leads the deployment
        (:mod:`gateway.cluster.leadership`), so N processes anchor and checkpoint once."""
        if self.leadership is None:
            self.leadership = Leadership(
                leader_lock_for(self._session_url(), self.settings.data_dir, health=self.health),
                on_elected=self.start_background,
                on_deposed=self.stop_background,
                interval=self.settings.leader_check_seconds,
            )
            self.leadership.start()
        return self.leadership

    def _session_url(self) -> URL:
        """Where the leader lock and the policy listener connect: a session of their own,
        which a transaction-mode pooler cannot give (a session lock taken through one would
        be held by whichever server connection ran it, and checking it would prove nothing).

        Raises :class:`ConfigError` when the store is reached through such a pooler
        (``database_statement_cache = false``) and no ``database_session_url`` is set.
        """
        settings = self.settings
        url = make_url(settings.resolved_session_url)
        if (
            url.get_backend_name() == "postgresql"
            and not settings.database_statement_cache
            and not settings.database_session_url
        ):
            raise ConfigError(
                "cluster: database_statement_cache = false says database_url goes through a "
                "transaction-mode pooler, where the leader lock and the policy listener "
                "cannot hold a session; set database_session_url "
                "(DSGW_DATABASE_SESSION_URL) to PostgreSQL itself"
            )
        return url

    def watch_policy(self) -> PolicyWatch:
        """Follow policy changes made by processes on other machines (pushed, and polled as
        a fallback), which the machine-local epoch file cannot see."""
        if self.policy_watch is None:
            self.policy_watch = PolicyWatch(
                self.engine,
                self.policy,
                session_url=self._session_url(),
                poll_seconds=self.settings.policy_poll_seconds,
                health=self.health,
            )
            self.policy_watch.start()
        return self.policy_watch

    def checkpoint_keys(self) -> KeyRing:
        """Every checkpoint key of the keystore, active and retired (never pruned), under
        this deployment's name: what verifies any checkpoint this deployment signed."""
        return gateway_key_ring(self.keystore, self.settings.deployment)

    def watch_dependencies(self) -> DependencyWatch:
        """Check the dependencies every ``dependency_check_seconds`` in the background
        (servers), so an outage is logged and measured even while no call meets it."""
        if self.dependency_watch is None:
            self.dependency_watch = DependencyWatch(self, self.settings.dependency_check_seconds)
            self.dependency_watch.start()
        return self.dependency_watch

    async def bundle(self, stream: str, seq: int) -> dict[str, Any]:
        """The evidence bundle document of one record (:func:`gateway.evidence.build.
        record_bundle`), its anchor taken from this process's anchoring worker if it runs."""
        worker = self.anchoring.worker if self.anchoring is not None else None
        live = None
        if worker is not None and worker.chain_id is not None:
            live = (worker.chain_id, worker.registry.address)
        bundle = await record_bundle(
            self.engine,
            self.checkpointer,
            stream,
            seq,
            settings=self.settings,
            keys=self.checkpoint_keys(),
            live_registry=live,
        )
        return bundle.to_json()

    async def close(self, *, final_checkpoint: bool = False) -> None:
        """Commit queued records, optionally checkpoint them (a server stopping does, so
        its last calls are covered), close sources and the store.

        Call it only once no call is in flight (a server drains its calls first,
        :func:`gateway.cli.server.running_gateway`): what calls use closes here, the call-log
        writer after the background work that appends to it, Redis and the store last."""
        if self.dependency_watch is not None:
            await self.dependency_watch.stop()
        if self.policy_watch is not None:
            await self.policy_watch.stop()
        if self.leadership is not None:
            await self.leadership.stop()
        await self.stop_background()
        await self.log.close()
        for stream in STREAMS if final_checkpoint else ():
            try:
                await self.checkpointer.checkpoint(stream)
            except (SQLAlchemyError, OSError, DsgwError) as exc:
                log.warning("final checkpoint of %s failed: %s", stream, exc)
        await self.connectors.close()
        await self.deliveries.close()
        if self.shared_quotas is not None:
            await self.shared_quotas.close()
        self.epoch.close()
        await self.engine.dispose()
