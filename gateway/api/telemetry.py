"""Counters and histograms of one gateway process, for ``GET /metrics``.

Each app has its own registry (tests build many apps in one process; a process-wide one
would refuse the second). Labels are bounded: the call kind, the scenario (created by the
authority, so few), the decision and the status class; never a merchant, a token or a
parameter value.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["Telemetry"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "dsgw_requests",
            "Logged calls, by kind (data, token, admin, account, delivery, public), scenario, "
            "decision (allow, deny, error) and status class.",
            ["kind", "scenario", "decision", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "dsgw_request_duration_seconds",
            "Time from a logged call's arrival to its record being durable, by kind.",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batches = Histogram(
            "dsgw_log_commit_batch_records",
            "Records per group commit of the call-log writer.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )

    def observe_call(
        self, kind: str, scenario: str | None, decision: str, status: int, seconds: float
    ) -> None:
        self.requests.labels(kind, scenario or "", decision, f"{status // 100}xx").inc()
        self.latency.labels(kind).observe(seconds)

    def observe_batch(self, records: int) -> None:
        self.batches.observe(records)
