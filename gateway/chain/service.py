"""Anchoring inside a running gateway: backend, registry and worker, started in the
background so that a chain that is down never stops the gateway from serving and logging.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from gateway.chain.backends import AnvilBackend, ChainBackend, open_backend
from gateway.chain.deployment import ensure_registry
from gateway.chain.errors import ChainError, ChainUnavailableError
from gateway.chain.models import AnchorPolicy
from gateway.chain.worker import AnchorWorker
from gateway.clock import Clock
from gateway.ledger.hashing import HashAlgorithm
from gateway.tasks import Supervised

__all__ = ["Anchoring", "dev_block_time"]

log = logging.getLogger(__name__)


def dev_block_time(confirmations: int) -> float | None:
    """The block time of the anvil the gateway runs. Mining only on transactions would
    leave the newest anchor short of its confirmations once traffic stops, so with more
    than one confirmation it mines every second; else a block per transaction."""
    return 1.0 if confirmations > 1 else None


def _log_set_up_retry(state: RetryCallState) -> None:
    """Says why anchoring is not running yet: an unreachable chain is expected (a warning),
    any other chain failure is not (an error)."""
    exc = state.outcome.exception() if state.outcome is not None else None
    if isinstance(exc, ChainUnavailableError):
        log.warning(
            "anchoring: chain unreachable (%s); retrying in %.0f s", exc, state.upcoming_sleep
        )
    else:
        log.error("anchoring: %s; retrying in %.0f s", exc, state.upcoming_sleep)


class Anchoring:
    """Owns the chain connection of one gateway process.

    :meth:`start` returns at once; a background task connects (starting anvil for the
    ``anvil`` backend), finds or deploys the registry, reconciles what this database
    recorded with the chain, and then runs the worker. While the chain is unreachable it
    retries with back-off and says so in the log.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        kind: str,
        account_key: bytes,
        state_dir: Path,
        clock: Clock,
        algorithm: HashAlgorithm,
        rpc_url: str = "",
        contract: str = "",
        policy: AnchorPolicy | None = None,
    ) -> None:
        self._engine = engine
        self._kind = kind
        self._account_key = account_key
        self._clock = clock
        self._algorithm: HashAlgorithm = algorithm
        self._contract = contract or None
        self._policy = policy or AnchorPolicy(confirmations=1, poll_interval=0.5)
        self.backend: ChainBackend = open_backend(
            kind,
            state_dir=state_dir,
            rpc_url=rpc_url or None,
            block_time=dev_block_time(self._policy.confirmations) if kind == "anvil" else None,
        )
        self.worker: AnchorWorker | None = None
        self._task = Supervised("dsgw-anchoring-start", log=log)
        self._watch_interval = 2.0
        self.ready = asyncio.Event()

    async def start(self) -> None:
        self._task.start(self._bootstrap)

    async def _bootstrap(self) -> None:
        while True:
            worker = await self._set_up_with_retries()
            if not isinstance(self.backend, AnvilBackend):
                return
            # The gateway started this node, so it restarts it if it exits, and then sets up
            # again: a node killed between state dumps comes back without the registry,
            # which is redeployed, and reconcile re-anchors what was lost.
            await self._until_exit(self.backend)
            log.error(
                "chain: the anvil node exited (see %s); restarting it",
                self.backend.log_file,
            )
            self.worker = None
            await worker.close()

    async def _set_up_with_retries(self) -> AnchorWorker:
        """:meth:`_set_up`, tried again while the chain fails: after 1 s, doubling up to 60 s,
        for as long as it takes. Each set-up (each anvil restart) starts again at 1 s."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(ChainError),
            wait=wait_exponential(multiplier=1.0, exp_base=2, max=60.0),
            before_sleep=_log_set_up_retry,
        )
        return await retrying(self._set_up)

    async def _set_up(self) -> AnchorWorker:
        """Start the backend, find or deploy the registry, reconcile, and start the worker."""
        await self.backend.start()
        from eth_account import Account

        account = Account.from_key(self._account_key).address
        registry = await ensure_registry(
            self._engine,
            self.backend,
            anchoring_account=account,
            address=self._contract,
            clock=self._clock,
        )
        worker = AnchorWorker(
            self._engine,
            registry,
            self._account_key,
            policy=self._policy,
            clock=self._clock,
            algorithm=self._algorithm,
        )
        report = await worker.reconcile()
        log.info("anchoring on %s: %s", self.backend.node, report)
        await worker.start()
        self.worker = worker
        self.ready.set()
        return worker

    async def _until_exit(self, node: AnvilBackend) -> None:
        while node.running:
            await asyncio.sleep(self._watch_interval)

    def notify(self) -> None:
        if self.worker is not None:
            self.worker.notify()

    async def close(self) -> None:
        await self._task.stop()
        if self.worker is not None:
            await self.worker.close()
        await self.backend.close()
