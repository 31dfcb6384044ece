"""``GET /metrics``: the gateway's state in the Prometheus text format.

The figures are read at scrape time from the database (log sizes, anchoring backlog and
lag, as ``dsgw status`` shows them) and from this process's anchoring worker (whether the
chain answers), so they are right even for a process that just started, and every gateway
process reports the same backlog. Scrapes need a staff token with ``metrics.read``
(operator, supervisor): Prometheus gets one itself with its ``oauth2`` client-credentials
scrape setting. Scrapes are not call records: they read no data.

When the store does not answer, the figures read from it are left out and the scrape still
succeeds: ``dsgw_dependency_up`` says why (:mod:`gateway.dependencies`).

The request counters and histograms follow (:mod:`gateway.api.telemetry`): this process's,
or, when the gateway runs several worker processes (``PROMETHEUS_MULTIPROC_DIR``), the sum
over all of them, whichever worker the scrape lands on. The figures above are built as plain
metric families, never as ``Gauge`` objects, which in multiprocess mode would be written to
the shared directory and exported a second time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from gateway.api.appkeys import GATEWAY, TELEMETRY
from gateway.api.merchant import bearer_token
from gateway.chain.figures import store_figures
from gateway.governance.actor import Actor

__all__ = ["add_routes"]

# Seconds the store may take to give its figures before a scrape goes without them.
_STORE_TIMEOUT = 2.0


class _Figures(Collector):
    """A collector of figures already read: metric families are plain data, so building
    them never writes to the multiprocess directory as a ``Gauge`` would."""

    def __init__(self) -> None:
        self.families: list[GaugeMetricFamily] = []

    def gauge(self, name: str, documentation: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, documentation, labels=list(labels))
        self.families.append(family)
        return family

    def collect(self) -> Iterator[GaugeMetricFamily]:
        return iter(self.families)


async def metrics(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    # During an outage the scrape is authenticated against the last policy loaded
    # (PolicyStore.current_or_last): it reads no data, and it is how operators see the outage.
    snapshot = await gateway.policy.current_or_last()
    claims = await gateway.tokens.verify(bearer_token(request), admin=True, snapshot=snapshot)
    assert claims.role is not None
    actor = Actor(claims.client_id, claims.role)

    figures = _Figures()
    records = figures.gauge("dsgw_log_records", "Records in each log stream.", ["stream"])
    checkpoint = figures.gauge(
        "dsgw_checkpoint_size", "Size of each stream's newest checkpoint.", ["stream"]
    )
    final = figures.gauge(
        "dsgw_anchored_size", "Size of each stream's newest final anchor on chain.", ["stream"]
    )
    backlog = figures.gauge(
        "dsgw_anchoring_backlog_checkpoints",
        "Checkpoints of each stream not yet covered by a final anchor.",
        ["stream"],
    )
    backlog_records = figures.gauge(
        "dsgw_anchoring_backlog_records",
        "Records of each stream checkpointed but not yet covered by a final anchor.",
        ["stream"],
    )
    lag = figures.gauge(
        "dsgw_anchoring_lag_seconds",
        "Age of each stream's oldest checkpoint not yet anchored final (0 when none).",
        ["stream"],
    )
    try:
        async with asyncio.timeout(_STORE_TIMEOUT):
            # Refuses a role without metrics.read before it reads anything.
            read = await store_figures(gateway.engine, actor)
        status, sizes = read.anchoring, read.sizes
    except TimeoutError:
        gateway.health.failed("database", f"no answer within {_STORE_TIMEOUT:g} s")
        status, sizes = None, ()
    except Exception as exc:
        # The store is down: the figures read from it are left out; the rest (request
        # counters, dsgw_dependency_up) still tell the scraper what is going on.
        if gateway.health.observe(exc) is None:
            raise
        status, sizes = None, ()
    now = gateway.clock.now()
    for stream, size in sizes:
        records.add_metric([stream], size)
    for item in status.streams if status is not None else ():
        checkpoint.add_metric([item.stream], item.checkpoint_size or 0)
        final.add_metric([item.stream], item.final_size or 0)
        backlog.add_metric([item.stream], item.unanchored_checkpoints)
        backlog_records.add_metric([item.stream], item.unanchored_entries)
        oldest = item.oldest_unanchored_at
        lag.add_metric([item.stream], max((now - oldest).total_seconds(), 0.0) if oldest else 0)
    if gateway.leadership is not None:  # servers: which process runs the background work
        figures.gauge(
            "dsgw_leader",
            "1 when this process leads the deployment (checkpoints, anchoring, monitor), else "
            "0; the chain figures below come from the leader only.",
        ).add_metric([], 1 if gateway.leadership.leading else 0)
    if gateway.anchoring is not None:  # absent when anchoring is off or another process leads
        worker = gateway.anchoring.worker  # None until the chain first answered
        health = worker.health if worker is not None else None
        figures.gauge(
            "dsgw_chain_reachable",
            "1 when this process's anchoring worker last reached the chain, else 0.",
        ).add_metric([], 1 if health is not None and health.reachable else 0)
        figures.gauge(
            "dsgw_anchoring_consecutive_failures",
            "Anchoring passes failed in a row in this process.",
        ).add_metric([], health.consecutive_failures if health is not None else 0)
        if worker is not None:
            try:
                async with asyncio.timeout(1.0):
                    head = await gateway.anchoring.backend.w3.eth.block_number
            except Exception:
                head = None
            if head is not None:
                figures.gauge(
                    "dsgw_chain_head_block",
                    "The chain's newest block number, as this process's node reports it.",
                ).add_metric([], int(head))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(figures)
    # Figures read now, then the request counters: this process's, or with several worker
    # processes all of theirs (distinct metric names).
    body = generate_latest(registry) + request.app[TELEMETRY].exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics, allow_head=False)
