"""Reconciling the exchange's own trade ledger with the products stream and with usage.

Three sources are compared, each keyed by the exchange's trade id:

- the exchange's export (CSV in UTF-8 or GB18030, XLSX, or JSON; columns below), what the
  exchange says it traded;
- the ``trade.recorded`` records of the products log stream, what the gateway recorded
  when the exchange reported each trade (anchored, so it cannot be rewritten quietly);
- the ``delivery`` call records, what was delivered against each trade.

Everything is found in one run: a bad row or a duplicated id is a finding like any other,
never the end of the run, so the exchange sees every discrepancy at once. Findings:

=========================  ================================================================
``unreadable-row``         a row of the exchange ledger cannot be read (named by its line)
``duplicate-trade-id``     the exchange ledger lists a trade id more than once
``amount-arithmetic``      in the exchange ledger, amount is not quantity × unit price
``missing-in-gateway``     the exchange traded it; the products stream has no record
``missing-at-exchange``    the products stream records it; the exchange ledger does not
``terms-differ``           product, buyer, quantity, unit price, amount or time differ
``unanchored``             the trade's record is not yet covered by a final anchor
``ledger-altered``         the products stream no longer matches its checkpoints or anchors
``overuse``                more units delivered than the trade bought (evidence: the first
                           delivery past the bought quantity)
``delivery-without-trade`` a delivery names a trade the exchange ledger does not have
=========================  ================================================================

The exchange ledger is read by :mod:`gateway.products.exchange_ledger`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.chain.status import anchoring_status
from gateway.db.schema import AnchorRow, LogEntryRow, ProductRow
from gateway.ledger.audit import AnchoredRoot, audit_stream
from gateway.ledger.hashing import HashAlgorithm
from gateway.products.exchange_ledger import (
    LEDGER_COLUMNS,
    LEDGER_ZONE,
    ExchangeTrade,
    LedgerRow,
    UnreadableRow,
    read_exchange_ledger,
)

__all__ = [
    "LEDGER_COLUMNS",
    "LEDGER_ZONE",
    "Discrepancy",
    "ExchangeTrade",
    "LedgerRow",
    "Progress",
    "ReconcileReport",
    "UnreadableRow",
    "read_exchange_ledger",
    "reconcile",
]


Progress = Callable[[str, int], None]


_CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class Discrepancy:
    kind: str
    trade_id: str
    detail: str
    record_id: str | None = None  # evidence: "products/17" or "calls/42"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "trade_id": self.trade_id,
            "detail": self.detail,
            "record_id": self.record_id,
        }


@dataclass(slots=True)
class ReconcileReport:
    exchange_trades: int = 0
    gateway_trades: int = 0
    deliveries: int = 0
    discrepancies: list[Discrepancy] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.discrepancies

    def counts(self) -> dict[str, int]:
        return dict(Counter(d.kind for d in self.discrepancies))

    def to_dict(self) -> dict[str, Any]:
        return {
            "exchange_trades": self.exchange_trades,
            "gateway_trades": self.gateway_trades,
            "deliveries": self.deliveries,
            "clean": self.clean,
            "counts": self.counts(),
            "discrepancies": [d.to_dict() for d in self.discrepancies],
        }


async def reconcile(
    engine: AsyncEngine,
    ledger: Iterable[LedgerRow],
    *,
    algorithm: HashAlgorithm,
    progress: Progress | None = None,
    batch: int = 20_000,
) -> ReconcileReport:
    """Compare ``ledger`` with the products stream and the deliveries; read-only."""
    report = ReconcileReport()

    def found(kind: str, trade_id: str, detail: str, record_id: str | None = None) -> None:
        report.discrepancies.append(Discrepancy(kind, trade_id, detail, record_id))

    async with engine.connect() as conn:
        listings = {
            str(listing): str(product)
            for product, listing in await conn.execute(select(ProductRow.id, ProductRow.listing_id))
            if listing
        }
    exchange: dict[str, ExchangeTrade] = {}
    duplicates: dict[str, list[int]] = {}
    unreadable: set[str] = set()
    for index, row in enumerate(ledger, start=1):
        if progress is not None and index % batch == 0:
            progress("exchange ledger", batch)
        if isinstance(row, UnreadableRow):
            found("unreadable-row", row.trade_id, row.detail)
            if row.trade_id:
                unreadable.add(row.trade_id)
            continue
        first = exchange.get(row.trade_id)
        if first is not None:
            duplicates.setdefault(row.trade_id, [first.line]).append(row.line)
            continue
        exchange[row.trade_id] = row
        expected = (row.unit_price * row.quantity).quantize(_CENT)
        if row.amount != expected:
            found(
                "amount-arithmetic",
                row.trade_id,
                f"line {row.line}: amount {row.amount} is not quantity {row.quantity} × unit "
                f"price {row.unit_price} = {expected}",
            )
    for trade_id, lines in duplicates.items():
        found(
            "duplicate-trade-id",
            trade_id,
            f"the exchange ledger lists trade {trade_id} {len(lines)} times (lines "
            + ", ".join(map(str, lines))
            + f"); the first, line {lines[0]}, is compared",
        )
    report.exchange_trades = len(exchange)

    # The products stream, and how far its final anchors reach.
    status = await anchoring_status(engine, streams=("products",))
    anchored_size = (status.streams[0].final_size or 0) if status.streams else 0
    recorded: set[str] = set()
    async for rows in _scan(engine, "products", "trade.recorded", batch):
        for seq, payload in rows:
            body = json.loads(payload)
            trade_id = str(body.get("exchange_trade_id"))
            record_id = f"products/{seq}"
            recorded.add(trade_id)
            theirs = exchange.get(trade_id)
            if theirs is None and trade_id in unreadable:
                continue  # already reported: the exchange's row for it cannot be read
            if theirs is None:
                found(
                    "missing-at-exchange",
                    trade_id,
                    f"recorded by the gateway ({body.get('amount')} yuan for "
                    f"{body.get('quantity')} units of {body.get('product_id')}), absent from "
                    "the exchange ledger",
                    record_id,
                )
            else:
                differences = _differences(theirs, body, listings)
                if differences:
                    found("terms-differ", trade_id, "; ".join(differences), record_id)
            if seq >= anchored_size:
                found(
                    "unanchored",
                    trade_id,
                    f"its record {record_id} is not covered by a final anchor yet (anchored "
                    f"size {anchored_size})",
                    record_id,
                )
        if progress is not None:
            progress("products stream", len(rows))
    report.gateway_trades = len(recorded)
    for trade_id, theirs in exchange.items():
        if trade_id not in recorded:
            found(
                "missing-in-gateway",
                trade_id,
                f"the exchange traded {theirs.quantity} units for {theirs.amount} yuan (line "
                f"{theirs.line}); the products stream has no record of it",
            )

    # The products stream against its own checkpoints and its anchors.
    async with engine.connect() as conn:
        anchors = [
            AnchoredRoot(int(size), bytes(root), f"recorded anchor of size {size}")
            for size, root in await conn.execute(
                select(AnchorRow.size, AnchorRow.root).where(
                    AnchorRow.stream == "products", AnchorRow.status == "final"
                )
            )
        ]
    audit = await audit_stream(
        engine, "products", algorithm=algorithm, checkpoint_key=None, anchored=anchors
    )
    for finding in audit.findings:
        found(
            "ledger-altered",
            "",
            f"products stream: {finding.kind}: {finding.detail}",
            f"products/{finding.seq}",
        )

    # Deliveries against the trades that entitle them.
    used: Counter[str] = Counter()
    # Evidence: a trade unknown to the exchange is shown by its first delivery; an overused
    # one by its first delivery past the bought quantity, the first that was not due.
    evidence: dict[str, str] = {}
    async for rows in _scan(engine, "calls", "delivery", batch, decision="allow"):
        for seq, payload in rows:
            trade_id = str(json.loads(payload).get("parameters", {}).get("trade"))
            used[trade_id] += 1
            theirs = exchange.get(trade_id)
            if used[trade_id] == (theirs.quantity + 1 if theirs is not None else 1):
                evidence[trade_id] = f"calls/{seq}"
        report.deliveries += len(rows)
        if progress is not None:
            progress("deliveries", len(rows))
    for trade_id, count in sorted(used.items()):
        theirs = exchange.get(trade_id)
        if theirs is None and trade_id in unreadable:
            continue
        if theirs is None:
            found(
                "delivery-without-trade",
                trade_id,
                f"{count} deliveries name trade {trade_id}, which the exchange ledger does not "
                "have",
                evidence[trade_id],
            )
        elif count > theirs.quantity:
            found(
                "overuse",
                trade_id,
                f"{count} units delivered against {theirs.quantity} bought; the first "
                f"past the bought quantity is delivery {theirs.quantity + 1}, "
                f"{evidence[trade_id]}",
                evidence[trade_id],
            )
    return report


async def _scan(
    engine: AsyncEngine,
    stream: str,
    kind: str,
    batch: int,
    *,
    decision: str | None = None,
) -> AsyncIterator[list[Any]]:
    """(seq, payload) of the records of one kind, in windows of ``batch`` positions.
    Positions have no gaps within a stream, so fixed windows replace ``LIMIT`` paging,
    whose plan degrades to a scan of the rest of the stream per page on a PostgreSQL table
    without statistics."""
    async with engine.connect() as conn:
        top = await conn.scalar(
            select(func.max(LogEntryRow.seq)).where(LogEntryRow.stream == stream)
        )
    if top is None:
        return
    for low in range(0, int(top) + 1, batch):
        query = (
            select(LogEntryRow.seq, LogEntryRow.payload)
            .where(
                LogEntryRow.stream == stream,
                LogEntryRow.seq >= low,
                LogEntryRow.seq < low + batch,
                LogEntryRow.kind == kind,
            )
            .order_by(LogEntryRow.seq)
        )
        if decision is not None:
            query = query.where(LogEntryRow.decision == decision)
        async with engine.connect() as conn:
            rows = list((await conn.execute(query)).all())
        if rows:
            yield rows


def _differences(
    theirs: ExchangeTrade, ours: Mapping[str, Any], listings: Mapping[str, str]
) -> list[str]:
    out = []
    product = listings.get(theirs.product, theirs.product)
    if product != ours.get("product_id"):
        out.append(f"product: exchange {theirs.product}, gateway {ours.get('product_id')}")
    if theirs.buyer_code != ours.get("buyer_code"):
        out.append(f"buyer: exchange {theirs.buyer_code}, gateway {ours.get('buyer_code')}")
    if theirs.quantity != ours.get("quantity"):
        out.append(f"quantity: exchange {theirs.quantity}, gateway {ours.get('quantity')}")
    if theirs.unit_price != Decimal(str(ours.get("unit_price"))):
        out.append(f"unit price: exchange {theirs.unit_price}, gateway {ours.get('unit_price')}")
    if theirs.amount != Decimal(str(ours.get("amount"))):
        out.append(f"amount: exchange {theirs.amount}, gateway {ours.get('amount')}")
    time_difference = _time_difference(theirs.traded_at, ours.get("traded_at"))
    if time_difference:
        out.append(time_difference)
    return out


def _time_difference(theirs: dt.datetime | dt.date | None, ours: object) -> str | None:
    """The exchange's and the gateway's trade times, when they differ: instants compared
    as instants, a date alone with the gateway's time's day in :data:`LEDGER_ZONE`."""
    if theirs is None or not isinstance(ours, str):
        return None
    try:
        recorded = dt.datetime.fromisoformat(ours.replace("Z", "+00:00"))
    except ValueError:
        return f"traded at: exchange {theirs.isoformat()}, gateway {ours!r} (unreadable)"
    if recorded.tzinfo is None:
        recorded = recorded.replace(tzinfo=dt.UTC)
    if isinstance(theirs, dt.datetime):
        if theirs == recorded:
            return None
        return f"traded at: exchange {theirs.isoformat()}, gateway {recorded.isoformat()}"
    local_day = recorded.astimezone(LEDGER_ZONE).date()
    if theirs == local_day:
        return None
    return (
        f"traded on: exchange {theirs.isoformat()}, gateway {local_day.isoformat()} "
        f"({recorded.isoformat()})"
    )
