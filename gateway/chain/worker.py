"""The anchoring worker: puts each stream's newest checkpoint on the AnchorRegistry and
follows it until it is final.

Life of an anchor (table ``anchors``, one row per (chain, contract, stream, size))::

    queued --sign, store, broadcast--> pending --receipt--> mined --deep enough--> final
      ^                                  |  ^                 |
      |  nonce taken by another tx,      |  |   reorg: receipt gone, the same raw
      +-- reverted, nonce gap -----------+  +-- transaction is sent again
      +-- chain lost a final anchor (reconcile) ------------------------------+

Rules that keep a checkpoint from being anchored twice, across crashes and restarts:

* One anchor in flight (``queued``/``pending``) per stream, the stream's newest checkpoint:
  anchoring it covers every older one. A queued anchor that a newer checkpoint overtakes
  before it is sent is ``superseded``.
* Before building a transaction the worker reads the registry's ``latest(stream)``: it never
  sends a size at or below the chain's, and proves consistency from exactly that head.
* The signed transaction is stored (``anchor_transactions.raw``) in the same database
  transaction that moves the anchor to ``pending``, *before* it is broadcast. After a crash,
  a lost mempool or a reorg it is sent again byte for byte: same nonce, same hash. A fee bump
  reuses the nonce, so of all an anchor's transactions at most one can be mined.
* On start, and whenever the chain comes back after an outage, :meth:`AnchorWorker.reconcile`
  compares the recorded anchors with the registry, re-queues what the chain lost (a reset dev
  chain) and logs it at ERROR level.

Chain outages never reach the gateway: :meth:`AnchorWorker.run_once` raises
:class:`ChainUnavailableError`, the background loop backs off (up to
``AnchorPolicy.max_backoff``) and catches up when the node answers again. The backlog is in
:func:`gateway.chain.status.anchoring_status` and :attr:`AnchorWorker.health`.

The worker is built in layers: :mod:`gateway.chain.sending` (node calls, fees, signing),
:mod:`gateway.chain.confirmation` (pending to final) and :mod:`gateway.chain.submission`
(queueing and sending anchors); this module has its public face and background loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter

from sqlalchemy.exc import SQLAlchemyError

from gateway.chain.confirmation import AnchorConfirmation
from gateway.chain.errors import (
    ChainConfigError,
    ChainUnavailableError,
    RegistryConflictError,
)
from gateway.chain.models import (
    CycleReport,
    ReconcileReport,
    WorkerHealth,
)
from gateway.chain.submission import AnchorSubmission
from gateway.errors import DsgwError

__all__ = ["AnchorWorker"]

log = logging.getLogger(__name__)


class AnchorWorker(AnchorConfirmation, AnchorSubmission):
    """Anchors the checkpoints in ``engine``'s ``checkpoints`` table on ``registry``, signing
    with the secp256k1 private key ``account_key`` (32 bytes; the keystore's
    ``chain_account_private_key(kid)``). The account must be funded and authorized on the
    registry (:func:`gateway.chain.deployment.ensure_registry` does both on dev chains).

    Drive it with :meth:`run_once` (tests, a one-shot CLI) or :meth:`start`/:meth:`close`
    (a background task). One worker per registry and account: two workers would share the
    account's nonces.

    ``algorithm`` is the deployment's tree hash. SHA-256 trees are anchored with
    consistency proofs the registry checks; SM3 trees with ``anchorWithoutProof``, which the
    registry keeps append-only by size only, so their consistency is checked off chain: by
    this worker against the registry's head before each anchor, and by ``dsgw audit --chain``
    over every anchored root.

    Raises :class:`ChainConfigError` for an invalid key.
    """

    # -- public face ------------------------------------------------------------------

    @property
    def health(self) -> WorkerHealth:
        return WorkerHealth(
            node=self._backend.node,
            account=self.account,
            reachable=self._reachable,
            consecutive_failures=self._failures,
            last_error=self._last_error,
            last_success_at=self._last_success,
            blocked_streams=tuple(
                f"{stream}: {why}"
                for stream, why in sorted({**self._refused, **self._conflicts}.items())
            ),
        )

    def notify(self) -> None:
        """Wake the background loop now (e.g. after a new checkpoint); ignored while the
        chain is unreachable, so that an outage is not hammered."""
        if self._failures == 0:
            self._wake.set()

    def resume(self) -> None:
        """Run a pass now even after failures: the node is known to be back."""
        self._wake.set()

    async def start(self) -> None:
        """Run passes in a background task until :meth:`close`."""
        self._task.start(self._run)

    async def close(self) -> None:
        """Stop the background task. Stored transactions stay stored; the next worker on
        this database picks them up."""
        await self._task.stop()

    async def run_once(self) -> CycleReport:
        """One pass: reconcile if due, follow pending and mined anchors, queue the newest
        checkpoints, and submit queued anchors. Updates :attr:`health`.

        Raises :class:`ChainUnavailableError` when the node does not answer (nothing is
        lost: the next pass resumes), :class:`ChainConfigError` when the registry is not on
        the chain, other :class:`DsgwError` subclasses when the store fails.
        """
        counts: Counter[str] = Counter()
        try:
            try:
                store = await self._ensure_store()
                if not self._reconciled:
                    report = await self.reconcile()
                    counts["requeued"] += len(report.requeued)
                    counts["adopted"] += len(report.adopted)
                await self._follow(store, counts)
                await self._enqueue(store, counts)
                await self._submit(store, counts)
            except SQLAlchemyError as exc:
                raise DsgwError(f"anchoring: the store failed: {exc}") from exc
        except ChainUnavailableError as exc:
            # Whatever the outage hid (a reset node, a reorg) is checked again on return.
            self._reconciled = False
            self._failed(exc, transient=True)
            raise
        except DsgwError as exc:
            self._failed(exc, transient=False)
            raise
        if self._failures:
            log.warning(
                "chain: %s answers again after %d failed attempts; anchoring catches up",
                self._backend.node,
                self._failures,
            )
        self._failures = 0
        self._reachable = True
        self._last_error = None
        self._last_success = self._clock.now()
        return CycleReport(**counts)

    async def reconcile(self) -> ReconcileReport:
        """Compare the recorded anchors with the registry and repair the records.

        * A stream whose registry head is below our newest final anchor lost anchors (a
          reset dev chain, or a reorg deeper than finality): the newest lost anchor is
          re-queued, older lost ones are superseded by it; logged at ERROR level.
        * A registry head whose root is not this log's root at that size blocks the stream
          (:class:`RegistryConflictError`, logged); a head above our records whose root is
          ours is adopted (e.g. a database restored from an older backup).

        Raises :class:`ChainConfigError` if the registry is not deployed on the chain.
        """
        store = await self._ensure_store()
        if not await self._registry.deployed():
            raise ChainConfigError(
                f"chain: no AnchorRegistry at {self._registry.address} on chain "
                f"{store.chain_id} ({self._backend.node}): the chain lost it (a reset dev "
                "chain?) or the address is wrong; on a dev chain restart the gateway to "
                "redeploy, on a production chain configure the registry's address"
            )
        self._conflicts.clear()  # found again below if they persist
        self._enqueued.clear()  # what the chain lost is queued again by the next pass
        lost: list[tuple[str, int]] = []
        requeued: list[tuple[str, int]] = []
        adopted: list[tuple[str, int]] = []
        conflicts: list[str] = []
        for stream in self._streams:
            head = await self._registry.latest(stream)
            gone = await store.anchors(("final",), stream=stream, above=head.size)
            if gone:
                newest = max(gone, key=lambda a: a.size)
                await self._requeue_lost(store, head, gone, newest)
                lost.extend((stream, a.size) for a in gone)
                requeued.append((stream, newest.size))
                continue
            if head.size == 0:
                continue
            try:
                await self._check_head(stream, head)
                newer = head.size > await store.top_size(stream, ("mined", "final"))
                if newer and await self._adopt(store, stream, head):
                    adopted.append((stream, head.size))
            except RegistryConflictError as exc:
                conflicts.append(str(exc))
        await self._resync_nonces(store)
        self._reconciled = True
        if lost or adopted:
            log.warning(
                "chain: reconciled anchors with %s: re-queued %s, adopted %s",
                self._backend.node,
                requeued,
                adopted,
            )
        return ReconcileReport(tuple(lost), tuple(requeued), tuple(adopted), tuple(conflicts))

    # -- background loop --------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except DsgwError:
                pass  # counted and logged by run_once; back off below
            except Exception as exc:  # the one anchoring task must outlive any failed pass
                log.exception("anchoring: unexpected failure; retrying")
                self._failed(exc, transient=False)
            delay = self._policy.poll_interval
            if self._failures:
                delay = min(delay * 2 ** min(self._failures, 16), self._policy.max_backoff)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    def _failed(self, exc: BaseException, *, transient: bool) -> None:
        self._failures += 1
        self._last_error = str(exc)
        if transient:
            self._reachable = False
        # Loud once, then quiet: an outage of hours must not flood the log.
        level = logging.WARNING if self._failures == 1 or not transient else logging.DEBUG
        log.log(level, "anchoring paused (attempt %d): %s", self._failures, exc)
