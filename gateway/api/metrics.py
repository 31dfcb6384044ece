"""``GET /metrics``: the gateway's state in the Prometheus text format.

The figures are read at scrape time from the database (log sizes, anchoring backlog and
lag, as ``dsgw status`` shows them) and from this process's anchoring worker (whether the
chain answers), so they are right even for a process that just started, and every gateway
process reports the same backlog. Scrapes need a staff token with ``metrics.read``
(operator, supervisor): Prometheus gets one itself with its ``oauth2`` client-credentials
scrape setting. Scrapes are not call records: they read no data.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from gateway.api.appkeys import GATEWAY, TELEMETRY
from gateway.api.merchant import bearer_token
from gateway.authorization.roles import Action
from gateway.chain.status import anchoring_status
from gateway.governance.service import Actor
from gateway.ledger.log import STREAMS, stream_size

__all__ = ["add_routes"]


async def metrics(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    claims = await gateway.tokens.verify(bearer_token(request), admin=True)
    assert claims.role is not None
    Actor(claims.client_id, claims.role).may(Action.READ_METRICS)

    registry = CollectorRegistry(auto_describe=False)
    records = Gauge(
        "dsgw_log_records", "Records in each log stream.", ["stream"], registry=registry
    )
    checkpoint = Gauge(
        "dsgw_checkpoint_size",
        "Size of each stream's newest checkpoint.",
        ["stream"],
        registry=registry,
    )
    final = Gauge(
        "dsgw_anchored_size",
        "Size of each stream's newest final anchor on chain.",
        ["stream"],
        registry=registry,
    )
    backlog = Gauge(
        "dsgw_anchoring_backlog_checkpoints",
        "Checkpoints of each stream not yet covered by a final anchor.",
        ["stream"],
        registry=registry,
    )
    backlog_records = Gauge(
        "dsgw_anchoring_backlog_records",
        "Records of each stream checkpointed but not yet covered by a final anchor.",
        ["stream"],
        registry=registry,
    )
    lag = Gauge(
        "dsgw_anchoring_lag_seconds",
        "Age of each stream's oldest checkpoint not yet anchored final (0 when none).",
        ["stream"],
        registry=registry,
    )
    status = await anchoring_status(gateway.engine)
    now = gateway.clock.now()
    for stream in STREAMS:
        records.labels(stream).set(await stream_size(gateway.engine, stream))
    for item in status.streams:
        checkpoint.labels(item.stream).set(item.checkpoint_size or 0)
        final.labels(item.stream).set(item.final_size or 0)
        backlog.labels(item.stream).set(item.unanchored_checkpoints)
        backlog_records.labels(item.stream).set(item.unanchored_entries)
        oldest = item.oldest_unanchored_at
        lag.labels(item.stream).set(max((now - oldest).total_seconds(), 0.0) if oldest else 0)
    if gateway.anchoring is not None:  # absent when anchoring is off
        worker = gateway.anchoring.worker  # None until the chain first answered
        health = worker.health if worker is not None else None
        Gauge(
            "dsgw_chain_reachable",
            "1 when this process's anchoring worker last reached the chain, else 0.",
            registry=registry,
        ).set(1 if health is not None and health.reachable else 0)
        Gauge(
            "dsgw_anchoring_consecutive_failures",
            "Anchoring passes failed in a row in this process.",
            registry=registry,
        ).set(health.consecutive_failures if health is not None else 0)
        if worker is not None:
            try:
                async with asyncio.timeout(1.0):
                    head = await gateway.anchoring.backend.w3.eth.block_number
            except Exception:
                head = None
            if head is not None:
                Gauge(
                    "dsgw_chain_head_block",
                    "The chain's newest block number, as this process's node reports it.",
                    registry=registry,
                ).set(int(head))
    # Figures read now, then this process's counters (distinct metric names).
    body = generate_latest(registry) + generate_latest(request.app[TELEMETRY].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics, allow_head=False)
