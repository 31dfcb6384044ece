"""On-chain anchoring of the log's checkpoints on the AnchorRegistry contract.

* :mod:`~gateway.chain.backends`: where the chain is (``embedded`` py-evm, a managed
  ``anvil`` node with persistent state, or any JSON-RPC ``rpc`` endpoint).
* :mod:`~gateway.chain.contract`: the registry's artifact, calls and ``Anchored`` events;
  :func:`stream_id` names a stream on chain.
* :mod:`~gateway.chain.deployment`: finding or (dev chains) deploying the registry.
* :mod:`~gateway.chain.nonces`: one nonce manager per anchoring account.
* :mod:`~gateway.chain.worker`: the :class:`AnchorWorker` that anchors, follows, replaces,
  re-sends and reconciles; :mod:`~gateway.chain.models` its policy and reports;
  :mod:`~gateway.chain.records` the anchors and transactions it stores.
* :mod:`~gateway.chain.status`: the backlog, from the database alone.
"""

from __future__ import annotations

from gateway.chain.backends import (
    BACKEND_KINDS,
    AnvilBackend,
    ChainBackend,
    EmbeddedBackend,
    RpcBackend,
    open_backend,
)
from gateway.chain.contract import (
    AnchoredEvent,
    AnchorRegistry,
    RegistryArtifact,
    RegistryHead,
    stream_id,
)
from gateway.chain.deployment import ensure_registry
from gateway.chain.errors import (
    AnchorRejectedError,
    ChainConfigError,
    ChainError,
    ChainUnavailableError,
    RegistryConflictError,
    UnanchorableError,
)
from gateway.chain.models import (
    AnchorPolicy,
    CycleReport,
    ReconcileReport,
    WorkerHealth,
    check_anchorable,
    proof_checked_on_chain,
)
from gateway.chain.nonces import NonceManager, nonce_manager
from gateway.chain.records import AnchorRecord, AnchorTransaction, covering_anchor
from gateway.chain.status import AnchoringStatus, StreamAnchoring, anchoring_status
from gateway.chain.worker import AnchorWorker

__all__ = [
    "BACKEND_KINDS",
    "AnchorPolicy",
    "AnchorRecord",
    "AnchorRegistry",
    "AnchorRejectedError",
    "AnchorTransaction",
    "AnchorWorker",
    "AnchoredEvent",
    "AnchoringStatus",
    "AnvilBackend",
    "ChainBackend",
    "ChainConfigError",
    "ChainError",
    "ChainUnavailableError",
    "CycleReport",
    "EmbeddedBackend",
    "NonceManager",
    "ReconcileReport",
    "RegistryArtifact",
    "RegistryConflictError",
    "RegistryHead",
    "RpcBackend",
    "StreamAnchoring",
    "UnanchorableError",
    "WorkerHealth",
    "anchoring_status",
    "check_anchorable",
    "covering_anchor",
    "ensure_registry",
    "nonce_manager",
    "open_backend",
    "proof_checked_on_chain",
    "stream_id",
]
