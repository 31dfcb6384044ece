"""The call record: what the gateway writes for every call, allowed or refused (DESIGN §5)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any

from gateway.ledger.log import PendingRecord

__all__ = ["CallRecord", "keyed_digest"]


def keyed_digest(key: bytes, value: object) -> str:
    """HMAC-SHA256 of a sensitive parameter. Keyed, because a plain hash of an identity
    number is reversed by enumerating the small space of valid numbers."""
    return hmac.new(key, str(value).encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(slots=True)
class CallRecord:
    """Filled in as a call proceeds; whatever is known when it ends is logged."""

    kind: str  # "data" | "token" | "admin"
    started_at: dt.datetime
    method: str = ""
    path: str = ""
    merchant_id: str | None = None
    client_id: str | None = None
    scenario_id: str | None = None
    agreement_id: str | None = None
    token_id: str | None = None
    dataset_id: str | None = None
    mode: str | None = None
    fields: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    decision: str = "deny"
    status: int = 0
    reason: str | None = None
    reason_detail: str | None = None
    rows: int = 0
    response_sha256: str | None = None
    mark_id: str | None = None
    # Query answers only (gateway.tracing): the canary rows' ids, a digest of the delivered
    # rows' index entries, and those entries themselves (written to trace_rows, not logged).
    canaries: list[str] | None = None
    rows_digest: str | None = None
    trace_hashes: tuple[int, ...] = ()
    latency_us: int = 0
    remote: str | None = None

    def to_pending(self, now: dt.datetime) -> PendingRecord:
        self.latency_us = max(0, int((now - self.started_at).total_seconds() * 1_000_000))
        body = {
            "method": self.method,
            "path": self.path,
            "merchant": self.merchant_id,
            "client": self.client_id,
            "scenario": self.scenario_id,
            "agreement": self.agreement_id,
            "token_id": self.token_id,
            "dataset": self.dataset_id,
            "mode": self.mode,
            "fields": list(self.fields),
            "parameters": self.parameters,
            "decision": self.decision,
            "status": self.status,
            "reason": self.reason,
            "reason_detail": self.reason_detail,
            "rows": self.rows,
            "response_sha256": self.response_sha256,
            "mark_id": self.mark_id,
            "latency_us": self.latency_us,
            "remote": self.remote,
        }
        if self.rows_digest is not None:
            body["canaries"] = list(self.canaries or [])
            body["rows_digest"] = self.rows_digest
        return PendingRecord(
            stream="calls",
            kind=self.kind,
            recorded_at=self.started_at,
            body=body,
            merchant_id=self.merchant_id,
            scenario_id=self.scenario_id,
            dataset_id=self.dataset_id,
            decision=self.decision,
            # Only an answered delivery is indexed; its rows left with the answer.
            trace_hashes=self.trace_hashes if self.decision == "allow" else (),
        )
