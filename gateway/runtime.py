"""Wiring: builds every domain service of one gateway process from its settings.

The HTTP app and the CLI both start here, so they share one set of services and rules.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import func, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.api.delivery_client import DeliveryClient
from gateway.authorization.quotas import CallAllowance, QuotaTracker
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
from gateway.db import create_engine, engine_for, migrate
from gateway.db.schema import LogEntryRow
from gateway.dependencies import DEPENDENCIES, DependencyHealth
from gateway.errors import ConfigError, DsgwError, KeystoreError
from gateway.evaluation import EvaluationService
from gateway.evidence.build import record_bundle
from gateway.evidence.keys import KeyRing, gateway_key_ring
from gateway.evidence.notes import NoteSigner
from gateway.governance.epoch import EpochFile
from gateway.governance.models import Scenario
from gateway.governance.policy import PolicyStore
from gateway.governance.service import Actor, GovernanceService, Unchanged
from gateway.ledger.checkpoints import Checkpointer
from gateway.ledger.log import STREAMS, LogWriter
from gateway.monitoring import AlertStore, Monitor, Thresholds, WebhookSender
from gateway.monitoring.models import Detection, Severity
from gateway.objections import ObjectionService, ReceiptKeys
from gateway.passphrase import keystore_passphrase, open_keystore, passphrase_file
from gateway.privacy.budget import PrivacyBudgets
from gateway.privacy.overlap import OverlapAudit
from gateway.privacy.quasi import QuasiIdentifierWarning, check_scenario, connector_groups
from gateway.privacy.verify_budget import VerifyBudget, VerifyBudgets
from gateway.products.delivery import DeliveryService
from gateway.products.service import ProductService
from gateway.readiness import DependencyWatch
from gateway.settings import Settings
from gateway.supervision.measures import MeasureService
from gateway.tracing.delivery import DeliveryTracing
from gateway.tracing.engine import LeakTracer
from gateway.workdays import YearSchedule, default_calendar
from gateway.workdays.store import (
    MISSING_SCHEDULE_RULE,
    LiveCalendar,
    LoadedSchedule,
    missing_schedule_due,
    store_schedule,
    stored_schedules,
)
from gateway.workflows.service import WorkflowService
from gateway.workflows.use import UseApplicationService
from keys.keystore import KeyPurpose, Keystore
from keys.passphrase import create_passphrase_file

__all__ = ["Gateway", "initialise", "keystore_passphrase"]

log = logging.getLogger(__name__)


def derive_key(secret: bytes, label: str) -> bytes:
    """A sub-key per use, so one secret never serves two purposes directly."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label.encode()).derive(secret)


@dataclass(frozen=True, slots=True)
class InitReport:
    data_dir: Path
    created_keystore: bool
    created_passphrase_file: Path | None
    database_url: str


async def initialise(settings: Settings, *, clock: Clock | None = None) -> InitReport:
    """Create the data directory, the keystore (with its first keys) and the schema.

    Idempotent: existing keys and data are kept. Without ``DSGW_KEYSTORE_PASSPHRASE`` a
    random passphrase is written to a 0600 file beside the keystore; production
    deployments pass the passphrase from their secret store instead.
    """
    now = (clock or SystemClock()).now()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.data_dir.chmod(0o700)
    created_pass: Path | None = None
    pass_file = passphrase_file(settings)
    if not settings.keystore_passphrase and not pass_file.exists():
        create_passphrase_file(pass_file)
        created_pass = pass_file
    passphrase = keystore_passphrase(settings)
    created = False
    if settings.keystore_path.exists():
        keystore = Keystore.open(settings.keystore_path, passphrase)
    else:
        keystore = Keystore.create(settings.keystore_path, passphrase)
        created = True
    for purpose in (KeyPurpose.TOKEN_SIGNING, KeyPurpose.CHECKPOINT, KeyPurpose.MARK):
        try:
            keystore.active(purpose)
        except KeystoreError:
            keystore.generate(purpose, now=now)
    engine = create_engine(settings.resolved_database_url)
    try:
        await migrate(engine, timezone=settings.timezone)
    finally:
        await engine.dispose()
    return InitReport(settings.data_dir, created, created_pass, settings.resolved_database_url)


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

        async def count_calls(
            merchant_id: str, scenario_id: str, start: dt.datetime, end: dt.datetime
        ) -> int:
            async with engine.connect() as conn:
                value = await conn.scalar(
                    select(func.count())
                    .select_from(LogEntryRow)
                    .where(
                        LogEntryRow.stream == "calls",
                        LogEntryRow.kind == "data",
                        LogEntryRow.merchant_id == merchant_id,
                        LogEntryRow.scenario_id == scenario_id,
                        LogEntryRow.decision == "allow",
                        LogEntryRow.recorded_at >= start,
                        LogEntryRow.recorded_at < end,
                    )
                )
            return int(value or 0)

        quotas: CallAllowance = QuotaTracker(count_calls, zone=settings.zone)
        shared_quotas = None
        if settings.redis_url:
            from redis.asyncio import Redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
            from redis.exceptions import ConnectionError as RedisConnectionError

            shared_quotas = RedisQuotaTracker(
                Redis.from_url(
                    settings.redis_url,
                    socket_timeout=2,
                    socket_connect_timeout=2,
                    # Once, on a fresh connection, after a connection error: a pooled
                    # connection to a Redis that restarted fails its first command, which
                    # must not refuse a call (nor log an outage) once Redis is back. Never
                    # after a timeout: the command may have run.
                    retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
                ),
                count_calls,
                prefix=f"dsgw:{settings.deployment}:",
                health=health,
                zone=settings.zone,
            )
            quotas = shared_quotas
        mark_secret = keystore.secret(keystore.active(KeyPurpose.MARK).kid)
        trace_key = derive_key(mark_secret, "dsgw trace row hashes v1")
        mark_key = derive_key(mark_secret, "dsgw recipient marks v1")
        param_key = derive_key(mark_secret, "dsgw call-record parameter digests v1")
        dataplane = DataPlane(
            connectors,
            quotas,
            clock,
            min_subjects=settings.aggregate_min_subjects,
            param_key=param_key,
            tracing=DeliveryTracing(
                trace_key=trace_key, mark_key=mark_key, canary_rate=settings.trace_canary_rate
            ),
            budgets=PrivacyBudgets(engine, zone=settings.zone),
            overlap=(
                OverlapAudit(
                    engine,
                    clock,
                    key=derive_key(mark_secret, "dsgw overlap audit elements v1"),
                    threshold=settings.aggregate_overlap_min,
                    max_subject_rows=settings.aggregate_audit_max_rows,
                )
                if settings.aggregate_overlap_min
                else None
            ),
            verify_budgets=VerifyBudgets(engine, settings.zone),
            default_verify_budget=VerifyBudget(
                settings.verify_negatives_per_subject, settings.verify_window_hours
            ),
        )
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
        thresholds = Thresholds.from_settings(settings)
        alerts = AlertStore(
            engine,
            clock,
            algorithm=algorithm,
            evidence_records=thresholds.evidence_records,
            webhook=bool(settings.alert_webhook_url),
        )
        monitor = Monitor(
            engine,
            alerts,
            policy,
            clock,
            thresholds=thresholds,
            calendar=live,
            batch_size=settings.monitor_batch_size,
            health=health,
            webhook=(
                WebhookSender(
                    alerts,
                    clock,
                    url=settings.alert_webhook_url,
                    secret=settings.alert_webhook_secret,
                    deployment=settings.deployment,
                    timeout=settings.alert_webhook_timeout_seconds,
                    max_attempts=settings.alert_webhook_max_attempts,
                    health=health,
                )
                if settings.alert_webhook_url
                else None
            ),
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
            workflows=WorkflowService(engine, governance.uow, live, clock),
            applications=UseApplicationService(engine, governance, live, clock, health=health),
            products=ProductService(engine, governance, clock),
            deliveries=DeliveryService(engine, DeliveryClient()),
            alerts=alerts,
            monitor=monitor,
            tracer=LeakTracer(
                engine,
                policy,
                connectors,
                trace_key=trace_key,
                mark_key=mark_key,
                p_guess=settings.trace_p_guess,
                named_threshold=settings.trace_named_threshold,
            ),
            measures=MeasureService(engine, governance.uow),
            objections=ObjectionService(
                engine,
                governance,
                live,
                clock,
                keys=ReceiptKeys(trace_key=trace_key, param_key=param_key),
                working_days=settings.objection_working_days,
            ),
            evaluation=EvaluationService(engine, governance.uow, clock, zone=governance.zone),
            calendar=live,
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
        """Count deadlines with the schedules in the store as they are now (another
        process may have loaded one)."""
        async with self.engine.connect() as conn:
            loaded = await stored_schedules(conn)
        self.calendar.replace(item.schedule for item in loaded)

    async def alert_missing_schedule(self) -> None:
        """From November on, alert the operator once per year that next year's holiday
        schedule is not loaded (deadlines reaching into it are provisional meanwhile). Run
        by the process that runs the background work, when it starts and by the sweeper
        of deemed approvals; the alert store keeps it to one alert per year."""
        calendar = self.calendar.current

        async def work(conn: AsyncConnection, now: dt.datetime) -> None:
            year = await missing_schedule_due(conn, calendar, now)
            if year is None:
                return
            detection = Detection(
                rule=MISSING_SCHEDULE_RULE,
                key=f"year:{year}",
                severity=Severity.WARNING,
                title=f"Working days: the {year} holiday schedule is not loaded",
                detail=(
                    f"Deadlines in working days that reach into {year} are counted on "
                    "weekends alone and shown as provisional until the State Council's notice "
                    f"(国务院办公厅关于{year}年部分节假日安排的通知) is loaded: save its text and "
                    "run `dsgw workdays import notice.txt`; provisional deadlines are then "
                    "counted again (docs/workdays.md)."
                ),
                at=now,
                figures={"year": year, "covered_years": list(calendar.years)},
                records=(),
            )
            await self.alerts.record(conn, now, detection)

        await self.alerts.transaction(work)

    async def load_workday_schedule(
        self, actor: Actor, schedule: YearSchedule, *, loaded_by: str
    ) -> tuple[LoadedSchedule | None, list[str]]:
        """Store ``schedule`` with who loaded it (a governance record, kind
        ``workdays.schedule-loaded``), count with it from now on, and count the open
        provisional deadlines again. Returns the stored schedule (None when the same days
        were already loaded: no record) and the ids whose deadline moved.

        Raises :class:`CalendarError` if it contradicts a shipped or configured schedule.
        """
        base = self.calendar.base

        async def apply(conn: AsyncConnection, now: dt.datetime) -> LoadedSchedule:
            loaded = await store_schedule(conn, now, base, schedule, loaded_by)
            if loaded is None:
                raise Unchanged(None)
            return loaded

        loaded: LoadedSchedule | None = await self.governance.change(
            actor,
            "workdays.schedule-loaded",
            {"year": schedule.year, "loaded_by": loaded_by, "schedule": schedule.to_dict()},
            apply,
        )
        await self.refresh_calendar()
        moved = [
            *await self.workflows.recompute_provisional(),
            *await self.applications.recompute_provisional(),
            *await self.objections.recompute_provisional(),
        ]
        return loaded, moved

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
