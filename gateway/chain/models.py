"""The anchoring worker's settings and reports, and the rule on what can be anchored."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from fractions import Fraction
from typing import Final, Literal

from eth_typing import ChecksumAddress

from gateway.chain.errors import ChainConfigError, UnanchorableError

__all__ = [
    "ANCHORABLE_ALGORITHM",
    "AnchorPolicy",
    "CycleReport",
    "ReconcileReport",
    "WorkerHealth",
    "check_anchorable",
]

ANCHORABLE_ALGORITHM: Final = "sha256"
"""The only tree hash the registry's on-chain consistency check uses."""


def check_anchorable(algorithm: str, stream: str | None = None) -> None:
    """Raise :class:`UnanchorableError` unless checkpoints of ``algorithm`` can be anchored:
    the registry verifies RFC 9162 consistency proofs with SHA-256 only."""
    if algorithm == ANCHORABLE_ALGORITHM:
        return
    what = f"stream {stream!r} uses" if stream else "this deployment uses"
    raise UnanchorableError(
        f"chain: {what} {algorithm.upper()} trees, but the AnchorRegistry verifies "
        "consistency proofs with SHA-256 only, so these checkpoints cannot be anchored with "
        "on-chain proof checking; run the ledger with SHA-256 to anchor, or check the signed "
        "checkpoints off chain"
    )


@dataclass(frozen=True, slots=True)
class AnchorPolicy:
    """How the worker anchors.

    ``finality``: ``"confirmations"`` makes an anchor final once its block is
    ``confirmations`` deep (the block itself counts as one); ``"finalized"`` waits until the
    chain's ``finalized`` block tag reaches it, falling back to confirmations on nodes
    without the tag. ``replace_after``: a transaction still unmined this long after it was
    sent is replaced by one with the same nonce and fees raised by ``fee_bump`` (at least
    1/8, which is what geth and Besu require of a replacement) or to the market price,
    whichever is higher, never above ``max_fee_per_gas`` when set. ``priority_fee`` fixes the
    tip instead of asking the node.
    """

    confirmations: int = 6
    finality: Literal["confirmations", "finalized"] = "confirmations"
    poll_interval: float = 2.0
    max_backoff: float = 60.0
    replace_after: dt.timedelta = dt.timedelta(minutes=3)
    fee_bump: Fraction = Fraction(1, 8)
    max_fee_per_gas: int | None = None
    priority_fee: int | None = None
    gas_headroom: Fraction = Fraction(5, 4)

    def __post_init__(self) -> None:
        problems = []
        if self.confirmations < 1:
            problems.append("confirmations must be at least 1")
        if self.finality not in ("confirmations", "finalized"):
            problems.append("finality must be 'confirmations' or 'finalized'")
        if self.poll_interval <= 0 or self.max_backoff < self.poll_interval:
            problems.append("poll_interval must be positive and at most max_backoff")
        if self.replace_after <= dt.timedelta(0):
            problems.append("replace_after must be positive")
        if self.fee_bump < Fraction(1, 8):
            problems.append("fee_bump must be at least 1/8 (12.5 %), or nodes refuse the bump")
        if self.gas_headroom < 1:
            problems.append("gas_headroom must be at least 1")
        if problems:
            raise ChainConfigError(f"chain: invalid anchoring policy: {'; '.join(problems)}")


@dataclass(frozen=True, slots=True)
class CycleReport:
    """What one :meth:`AnchorWorker.run_once` did."""

    queued: int = 0
    submitted: int = 0
    rebroadcast: int = 0
    replaced: int = 0
    mined: int = 0
    final: int = 0
    reorged: int = 0
    requeued: int = 0
    superseded: int = 0
    adopted: int = 0
    refused: int = 0


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    """What :meth:`AnchorWorker.reconcile` found: anchors the chain lost (re-queued) and
    anchors found on chain but missing from the database (adopted)."""

    lost: tuple[tuple[str, int], ...] = ()
    requeued: tuple[tuple[str, int], ...] = ()
    adopted: tuple[tuple[str, int], ...] = ()
    conflicts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class WorkerHealth:
    """The worker's view of the chain, for metrics and ``dsgw status``."""

    node: str
    account: ChecksumAddress
    reachable: bool | None
    consecutive_failures: int
    last_error: str | None
    last_success_at: dt.datetime | None
    blocked_streams: tuple[str, ...]
