"""The background work of one gateway process, and when it runs.

The services of a process are built once and never change (:class:`gateway.runtime.Gateway`);
what does change while it runs is whether it does the work one process of the deployment
does for all (checkpoints, anchoring, deadline sweeps, the monitor) and whether it watches
its dependencies and the policy of other machines. That state lives here, apart from the
services, so the service container can stay frozen and a handler can never swap a service.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from sqlalchemy.engine import URL, make_url

from gateway.cluster.leadership import Leadership, leader_lock_for
from gateway.cluster.policy_push import PolicyWatch
from gateway.errors import ConfigError, KeystoreError
from gateway.readiness import DependencyWatch
from keys.keystore import KeyPurpose

if TYPE_CHECKING:
    from gateway.chain.service import Anchoring
    from gateway.runtime import Gateway

__all__ = ["BackgroundWork", "Role", "session_url"]

log = logging.getLogger(__name__)


class Role(Enum):
    """How a serving process takes part in the deployment's background work."""

    #: Runs it only while it holds the leader lock: one of several processes (``dsgw serve``).
    CAMPAIGN = "campaign"
    #: Runs it from the start: the only process (the demo, tests).
    SOLE = "sole"


def session_url(gateway: Gateway) -> URL:
    """Where the leader lock and the policy listener connect: a session of their own,
    which a transaction-mode pooler cannot give (a session lock taken through one would
    be held by whichever server connection ran it, and checking it would prove nothing).

    Raises :class:`ConfigError` when the store is reached through such a pooler
    (``database_statement_cache = false``) and no ``database_session_url`` is set.
    """
    settings = gateway.settings
    url = make_url(settings.resolved_session_url)
    if (
        url.get_backend_name() == "postgresql"
        and not settings.database.statement_cache
        and not settings.database.session_url
    ):
        raise ConfigError(
            "cluster: database_statement_cache = false says database_url goes through a "
            "transaction-mode pooler, where the leader lock and the policy listener "
            "cannot hold a session; set database_session_url "
            "(DSGW_DATABASE_SESSION_URL) to PostgreSQL itself"
        )
    return url


@dataclass(slots=True)
class BackgroundWork:
    """What runs beside the calls of one process; each part starts once and stops in
    :meth:`close`, in the reverse order of what depends on what."""

    gateway: Gateway
    anchoring: Anchoring | None = None
    leadership: Leadership | None = None
    policy_watch: PolicyWatch | None = None
    dependency_watch: DependencyWatch | None = None

    async def start_anchoring(self) -> None:
        """Connect to the chain and start anchoring in the background (nothing when the
        deployment has no chain, or it already runs)."""
        gateway = self.gateway
        settings, keystore, clock = gateway.settings, gateway.keystore, gateway.clock
        if settings.chain.kind == "none" or self.anchoring is not None:
            return
        # The chain libraries (web3) load here, in processes that anchor, and nowhere else.
        from gateway.chain.models import AnchorPolicy
        from gateway.chain.service import Anchoring

        try:
            chain_kid = keystore.active(KeyPurpose.CHAIN_ACCOUNT).kid
        except KeystoreError:
            chain_kid = keystore.generate(KeyPurpose.CHAIN_ACCOUNT, now=clock.now()).kid
        self.anchoring = Anchoring(
            gateway.engine,
            kind=settings.chain.kind,
            account_key=keystore.chain_account_private_key(chain_kid),
            state_dir=settings.data_dir / "chain",
            clock=clock,
            algorithm=settings.hash_algorithm,
            rpc_url=settings.chain.rpc_url,
            contract=settings.chain.contract,
            policy=AnchorPolicy(confirmations=settings.chain.confirmations, poll_interval=0.5),
        )
        await self.anchoring.start()
        gateway.checkpointer.on_signed = self.anchoring.notify

    def live_registry(self) -> tuple[int, str] | None:
        """The chain id and registry address anchored to right now (None while not
        anchoring, or before the chain answered)."""
        worker = self.anchoring.worker if self.anchoring is not None else None
        if worker is None or worker.chain_id is None:
            return None
        return worker.chain_id, worker.registry.address

    async def stop_anchoring(self) -> None:
        if self.anchoring is not None:
            self.gateway.checkpointer.on_signed = None
            await self.anchoring.close()
            self.anchoring = None

    async def start(self) -> None:
        """Start the work one process of the deployment runs for all: checkpoints,
        anchoring, deemed approvals, the monitor."""
        gateway = self.gateway
        gateway.checkpointer.start()
        await self.start_anchoring()
        gateway.applications.start_sweeper(also=gateway.schedules.alert_missing)
        gateway.objections.start_sweeper()
        if gateway.settings.monitor.enabled:
            gateway.monitor.start(gateway.settings.monitor.interval_seconds)

    async def stop(self) -> None:
        gateway = self.gateway
        await gateway.checkpointer.stop()
        await gateway.applications.stop_sweeper()
        await gateway.objections.stop_sweeper()
        await gateway.monitor.stop()
        await self.stop_anchoring()

    def campaign(self) -> Leadership:
        """Run the background work only while this process leads the deployment
        (:mod:`gateway.cluster.leadership`), so N processes anchor and checkpoint once."""
        if self.leadership is None:
            gateway = self.gateway
            self.leadership = Leadership(
                leader_lock_for(
                    session_url(gateway), gateway.settings.data_dir, health=gateway.health
                ),
                on_elected=self.start,
                on_deposed=self.stop,
                interval=gateway.settings.cluster.leader_check_seconds,
            )
            self.leadership.start()
        return self.leadership

    def watch_policy(self) -> PolicyWatch:
        """Follow policy changes made by processes on other machines (pushed, and polled as
        a fallback), which the machine-local epoch file cannot see."""
        if self.policy_watch is None:
            gateway = self.gateway
            self.policy_watch = PolicyWatch(
                gateway.engine,
                gateway.policy,
                session_url=session_url(gateway),
                poll_seconds=gateway.settings.cluster.policy_poll_seconds,
                health=gateway.health,
            )
            self.policy_watch.start()
        return self.policy_watch

    def watch_dependencies(self) -> DependencyWatch:
        """Check the dependencies every ``dependency_check_seconds`` in the background
        (servers), so an outage is logged and measured even while no call meets it."""
        if self.dependency_watch is None:
            self.dependency_watch = DependencyWatch(
                self.gateway, self.gateway.settings.health.dependency_check_seconds
            )
            self.dependency_watch.start()
        return self.dependency_watch

    @asynccontextmanager
    async def serving(self, role: Role) -> AsyncIterator[None]:
        """The background work of a serving process, for as long as it serves (an aiohttp
        ``cleanup_ctx``: it stops only after the in-flight calls are drained)."""
        self.watch_dependencies()
        self.watch_policy()
        if role is Role.CAMPAIGN:
            self.campaign()
        else:
            await self.start()
        try:
            yield
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop everything started here; calling it again does nothing."""
        if self.dependency_watch is not None:
            await self.dependency_watch.stop()
            self.dependency_watch = None
        if self.policy_watch is not None:
            await self.policy_watch.stop()
            self.policy_watch = None
        if self.leadership is not None:
            await self.leadership.stop()
            self.leadership = None
        await self.stop()
