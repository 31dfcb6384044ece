"""The log audit for the security report: every record of every stream re-verified and, when
a chain can be read, every anchored root compared with it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.chain.audit import chain_evidence, registry_for_audit
from gateway.chain.backends import ChainBackend
from gateway.chain.errors import ChainError
from gateway.db.schema import LogEntryRow
from gateway.ledger.audit import AnchoredRoot, Finding, audit_stream
from gateway.ledger.checkpoints import CheckpointKeys
from gateway.ledger.hashing import HashAlgorithm
from gateway.ledger.log import STREAMS
from gateway.reports.alert_section import AlertItem

__all__ = ["AuditProgress", "AuditSection", "ChainAccess", "StreamAudit", "gather_audit"]

AuditProgress = Callable[[str, int], Callable[[int], None]]
"""Called once per stream with its size; returns what the audit calls after each batch."""


@dataclass(frozen=True, slots=True)
class StreamAudit:
    stream: str
    records: int
    checkpoints: int
    anchors: int | None
    """Anchored roots compared, or None when the chain was not checked."""
    findings: tuple[Finding, ...]


@dataclass(frozen=True, slots=True)
class AuditSection:
    ran_at: dt.datetime
    finished_at: dt.datetime
    chain_status: str
    """``checked``, ``unreachable`` or ``not-run``."""
    chain_detail: str
    streams: tuple[StreamAudit, ...]
    divergence_alerts: tuple[AlertItem, ...]

    @property
    def findings(self) -> int:
        return sum(len(s.findings) for s in self.streams)

    @property
    def clean(self) -> bool:
        return self.findings == 0


@dataclass(frozen=True, slots=True)
class ChainAccess:
    """How the report reaches the chain for the chain audit: ``open`` gives a started
    backend for the duration of a ``with`` block, or is None, and ``skipped`` says why."""

    open: Callable[[], contextlib.AbstractAsyncContextManager[ChainBackend]] | None
    skipped: str = ""
    contract: str = ""
    backend: str = "none"
    """The configured anchoring backend (``anvil``, ``rpc``, ``eth-tester`` or ``none``)."""


async def gather_audit(
    engine: AsyncEngine,
    *,
    algorithm: HashAlgorithm,
    checkpoint_key: CheckpointKeys | None,
    chain: ChainAccess,
    now: Callable[[], dt.datetime],
    progress: AuditProgress | None,
    divergence: tuple[AlertItem, ...],
) -> AuditSection:
    started = now()
    evidence: dict[str, tuple[tuple[AnchoredRoot, ...], tuple[Finding, ...]]] = {}
    if chain.open is None:
        chain_status, chain_detail = "not-run", chain.skipped or "no chain to compare with"
    else:
        try:
            async with chain.open() as backend:
                registry = await registry_for_audit(engine, backend, chain.contract)
                for name in STREAMS:
                    found = await chain_evidence(engine, registry, name, algorithm=algorithm)
                    evidence[name] = (found.anchored, found.findings)
                chain_id = await registry.chain_id()
            chain_status = "checked"
            chain_detail = f"registry {registry.address} on chain {chain_id} ({backend.node})"
        except ChainError as exc:
            evidence.clear()
            chain_status, chain_detail = "unreachable", exc.detail
    streams = []
    for name in STREAMS:
        advance = None
        if progress is not None:
            async with engine.connect() as conn:
                size = await conn.scalar(
                    select(func.count()).select_from(LogEntryRow).where(LogEntryRow.stream == name)
                )
            advance = progress(name, int(size or 0))
        anchored, chain_findings = evidence.get(name, ((), ()))
        report = await audit_stream(
            engine,
            name,
            algorithm=algorithm,
            checkpoint_key=checkpoint_key,
            anchored=anchored,
            progress=advance,
        )
        streams.append(
            StreamAudit(
                stream=name,
                records=report.records,
                checkpoints=report.checkpoints,
                anchors=report.anchors if chain_status == "checked" else None,
                findings=chain_findings + report.findings,
            )
        )
    return AuditSection(
        ran_at=started,
        finished_at=now(),
        chain_status=chain_status,
        chain_detail=chain_detail,
        streams=tuple(streams),
        divergence_alerts=divergence,
    )
