"""The admin surface of the authority and the operator, composed of one service per concern.

Each concern lives in its own module: the catalog (:mod:`gateway.catalog.registration`),
scenarios (:mod:`gateway.governance.scenarios`), merchants
(:mod:`gateway.governance.merchants`), agreements (:mod:`gateway.governance.agreements`) and
client credentials and tokens (:mod:`gateway.governance.clients`). All of them change state
through one unit of work (:mod:`gateway.governance.unit_of_work`), which commits each change
with its record in the log and announces it to every gateway process.

:class:`GovernanceService` builds them once over that unit of work and exposes each as an
attribute (``governance.scenarios.create_scenario``, ``governance.uow.change``); callers use
the concern they need, and a service that needs only the unit of work or one concern takes
that alone. Its own methods read the current policy for the staff listings, each behind
the role that may read it; the rules of every change live in the concern services.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.authorization.roles import Action
from gateway.authorization.secrets import SecretHasher
from gateway.catalog.registration import CatalogService
from gateway.catalog.sources import SourceAccess
from gateway.clock import DEFAULT_ZONE, Clock
from gateway.governance.actor import LOCAL_ADMIN, Actor
from gateway.governance.agreements import AgreementService
from gateway.governance.clients import ClientService, IssuedClient
from gateway.governance.epoch import EpochFile
from gateway.governance.merchants import MerchantService, insert_merchant, new_merchant
from gateway.governance.policy import PolicySnapshot, load_snapshot
from gateway.governance.scenarios import ScenarioService
from gateway.governance.unit_of_work import Unchanged, UnitOfWork
from gateway.ledger.hashing import HashAlgorithm

__all__ = [
    "LOCAL_ADMIN",
    "Actor",
    "GovernanceService",
    "IssuedClient",
    "Unchanged",
    "insert_merchant",
    "new_merchant",
]


class GovernanceService:
    """The per-concern governance services over one unit of work."""

    def __init__(
        self,
        engine: AsyncEngine,
        epoch: EpochFile,
        clock: Clock,
        hasher: SecretHasher,
        *,
        algorithm: HashAlgorithm = "sha256",
        sources: SourceAccess,
        zone: dt.tzinfo = DEFAULT_ZONE,
    ) -> None:
        """``zone`` is the deployment's time zone: date-only periods are its days."""
        self._engine = engine
        self._clock = clock
        # The deployment's time zone (setting ``timezone``).
        self.zone = zone
        self.uow = UnitOfWork(engine, epoch, clock, algorithm=algorithm)
        self.catalog = CatalogService(self.uow, sources)
        self.scenarios = ScenarioService(self.uow, zone=zone)
        self.merchants = MerchantService(self.uow)
        self.agreements = AgreementService(self.uow, zone=zone)
        self.clients = ClientService(self.uow, hasher)

    async def snapshot(self) -> PolicySnapshot:
        """The current policy as the gateway would see it (for listings)."""
        return await load_snapshot(self._engine, self._clock.now())

    async def read_catalog(self, actor: Actor) -> PolicySnapshot:
        """The current policy, to list its datasets and scenarios. Raises
        :class:`ForbiddenError` for a role without ``catalog.read``."""
        actor.may(Action.READ_CATALOG)
        return await self.snapshot()

    async def read_parties(self, actor: Actor) -> PolicySnapshot:
        """The current policy, to list its merchants and agreements: who deals with whom is
        read by those who may read the call log. Raises :class:`ForbiddenError` for a role
        without ``calls.read``."""
        actor.may(Action.READ_CALLS)
        return await self.snapshot()
