"""Errors of on-chain anchoring.

Anchoring runs beside the gateway, never in front of it: none of these errors stops a call
from being served or logged. They surface in the anchoring worker's log lines and status, in
``dsgw status``, and from the setup functions (``ensure_registry``, the backends' ``start``),
where they are fatal because the operator must act.

Every message names the failing step (``chain: <step>: ...``) and what to do about it.
Library exceptions (aiohttp, web3, eth-tester) never leave this package unwrapped:
:func:`rpc_errors` turns the transport failures into :class:`ChainUnavailableError`.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import aiohttp
from web3.exceptions import (
    BadResponseFormat,
    ContractLogicError,
    ProviderConnectionError,
    RequestTimedOut,
)

from gateway.errors import DsgwError

__all__ = [
    "AnchorRejectedError",
    "ChainConfigError",
    "ChainError",
    "ChainUnavailableError",
    "RegistryConflictError",
    "UnanchorableError",
    "revert_errors",
    "rpc_errors",
]


class ChainError(DsgwError):
    """Anchoring on chain failed; the gateway keeps serving and logging meanwhile.

    The class keeps :class:`DsgwError`'s problem type (``internal``, 500): anchoring failures
    are the server's, never a request's, and reach clients at most as an internal error.
    """


class ChainUnavailableError(ChainError):
    """The chain node did not answer (refused, timed out, garbled). Transient: the worker
    backs off and retries, and catches up when the node returns."""


class ChainConfigError(ChainError):
    """The chain setup is wrong or incomplete (no node binary, no contract at the configured
    address, anchoring account not authorized, unknown backend). Needs the operator."""


class UnanchorableError(ChainError):
    """A checkpoint this gateway will not anchor: it was made with another tree hash than
    the deployment's (a stream keeps one hash, and one way of anchoring, for good)."""


class AnchorRejectedError(ChainError):
    """The node or the contract refused an anchor transaction (revert, insufficient funds,
    fee below the node's minimum)."""


class RegistryConflictError(ChainError):
    """The registry holds, for one of our streams, a root that is not this log's root at that
    size: another writer anchors under our stream id, or the log was rewritten. Anchoring of
    that stream stops until an operator investigates."""


# What a JSON-RPC transport raises when the node is not there or not answering: aiohttp's
# connection and HTTP errors, timeouts, socket errors, and web3's own wrappers of those.
_TRANSPORT_ERRORS = (
    aiohttp.ClientError,
    TimeoutError,
    OSError,
    ProviderConnectionError,
    RequestTimedOut,
    BadResponseFormat,
)


@contextlib.contextmanager
def rpc_errors(step: str, node: str) -> Iterator[None]:
    """Turn a transport failure inside the block into :class:`ChainUnavailableError` naming
    ``step`` and the ``node``; every other exception passes unchanged."""
    try:
        yield
    except _TRANSPORT_ERRORS as exc:
        raise ChainUnavailableError(
            f"chain: {step}: {node} did not answer ({type(exc).__name__}: {exc}); "
            "anchoring waits and retries, the gateway keeps serving and logging; "
            "check that the node is running and reachable"
        ) from exc


def revert_errors() -> tuple[type[Exception], ...]:
    """The exception types a reverted call or transaction arrives as: web3's
    :class:`ContractLogicError` from JSON-RPC nodes and, once the embedded backend has loaded
    eth-tester, its ``TransactionFailed``. Looked up, not imported: eth-tester loads py-evm,
    seconds of start-up that deployments without the embedded chain do not need."""
    module = sys.modules.get("eth_tester.exceptions")
    failed = getattr(module, "TransactionFailed", None)
    if isinstance(failed, type) and issubclass(failed, Exception):
        return (ContractLogicError, failed)
    return (ContractLogicError,)
