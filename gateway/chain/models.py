"""The anchoring worker's settings and reports, and the rule on what can be anchored."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from fractions import Fraction
from typing import Final, Literal

from eth_typing import ChecksumAddress

from gateway.chain.errors import ChainConfigError, UnanchorableError

__all__ = [
    "PROOF_CHECKED_ALGORITHM",
    "AnchorPolicy",
    "CycleReport",
    "ReconcileReport",
    "WorkerHealth",
    "check_anchorable",
    "proof_checked_on_chain",
]

PROOF_CHECKED_ALGORITHM: Final = "sha256"
"""The tree hash whose consistency proofs the registry checks on chain (the EVM's SHA-256
precompile). Trees of any other hash (SM3) are anchored without proofs."""


def proof_checked_on_chain(algorithm: str) -> bool:
    """Whether the registry can check consistency proofs of ``algorithm`` trees."""
    return algorithm == PROOF_CHECKED_ALGORITHM


def check_anchorable(algorithm: str, deployment: str, stream: str) -> None:
    """Raise :class:`UnanchorableError` unless a checkpoint of ``algorithm`` belongs to a
    deployment hashing with ``deployment``: one stream is anchored one way for good, so a
    checkpoint left from a deployment that switched hashes is never anchored."""
    if algorithm == deployment:
        return
    raise UnanchorableError(
        f"chain: stream {stream!r} has {algorithm.upper()} checkpoints but this gateway runs "
        f"{deployment.upper()} trees; a stream is anchored with one hash for good, so these "
        "checkpoints are not anchored; run the gateway with the hash its log was written with"
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
