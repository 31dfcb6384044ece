"""Reconciling the exchange's own trade ledger with the products stream and with usage.

Three sources are compared, each keyed by the exchange's trade id:

- the exchange's export (CSV or JSON; columns below), what the exchange says it traded;
- the ``trade.recorded`` records of the products log stream, what the gateway recorded
  when the exchange reported each trade (anchored, so it cannot be rewritten quietly);
- the ``delivery`` call records, what was delivered against each trade.

Discrepancies:

=========================  ================================================================
``missing-in-gateway``     the exchange traded it; the products stream has no record
``missing-at-exchange``    the products stream records it; the exchange ledger does not
``terms-differ``           product, buyer, quantity, unit price or amount differ
``unanchored``             the trade's record is not yet covered by a final anchor
``ledger-altered``         the products stream no longer matches its checkpoints or anchors
``overuse``                more units delivered than the trade bought
``delivery-without-trade`` a delivery names a trade the exchange ledger does not have
=========================  ================================================================

Exchange ledger columns: ``exchange_trade_id, product, buyer_code, quantity, unit_price,
amount, traded_at`` (``product`` is the product id or the exchange's listing id); other
columns are ignored.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.chain.status import anchoring_status
from gateway.db.schema import AnchorRow, LogEntryRow, ProductRow
from gateway.errors import ValidationError
from gateway.ledger.audit import AnchoredRoot, audit_stream
from gateway.ledger.hashing import HashAlgorithm
from gateway.products.models import parse_money

__all__ = ["Discrepancy", "ExchangeTrade", "ReconcileReport", "read_exchange_ledger", "reconcile"]

REQUIRED = ("exchange_trade_id", "product", "buyer_code", "quantity", "unit_price", "amount")
Progress = Callable[[str, int], None]


@dataclass(frozen=True, slots=True)
class ExchangeTrade:
    trade_id: str
    product: str
    buyer_code: str
    quantity: int
    unit_price: Decimal
    amount: Decimal
    line: int


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


def _rows(path: Path) -> Iterator[tuple[int, Mapping[str, Any]]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        start = handle.read(64).lstrip()
        handle.seek(0)
        if path.suffix.lower() == ".json" or start.startswith(("[", "{")):
            try:
                document = json.load(handle)
            except ValueError as exc:
                raise ValidationError(f"exchange ledger {path}: not valid JSON ({exc})") from None
            items = document.get("trades") if isinstance(document, dict) else document
            if not isinstance(items, list):
                raise ValidationError(
                    f'exchange ledger {path}: expected a list of trades (or {{"trades": [...]}})'
                )
            for index, item in enumerate(items, start=1):
                if not isinstance(item, Mapping):
                    raise ValidationError(f"exchange ledger {path}: trade {index} is not an object")
                yield index, item
            return
        # Streamed: a ledger of millions of trades is never held in memory as text.
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise ValidationError(
                f"exchange ledger {path}: the header lacks {', '.join(missing)}; expected "
                + ",".join(REQUIRED)
                + ",traded_at"
            )
        for row in reader:
            yield reader.line_num, row


def read_exchange_ledger(path: Path) -> Iterator[ExchangeTrade]:
    """The trades of an exchange export; :class:`ValidationError` naming the line of the
    first malformed one."""
    for line, row in _rows(path):
        try:
            quantity = int(str(row["quantity"]).strip())
            trade = ExchangeTrade(
                trade_id=str(row["exchange_trade_id"]).strip(),
                product=str(row["product"]).strip(),
                buyer_code=str(row["buyer_code"]).strip().upper(),
                quantity=quantity,
                unit_price=parse_money("unit_price", str(row["unit_price"]).strip()),
                amount=parse_money("amount", str(row["amount"]).strip()),
                line=line,
            )
        except (KeyError, ValueError, ValidationError) as exc:
            detail = exc.detail if isinstance(exc, ValidationError) else repr(exc)
            raise ValidationError(f"exchange ledger {path} line {line}: {detail}") from None
        if not trade.trade_id:
            raise ValidationError(f"exchange ledger {path} line {line}: no exchange_trade_id")
        yield trade


async def reconcile(
    engine: AsyncEngine,
    ledger: Iterable[ExchangeTrade],
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
    for trade in ledger:
        if trade.trade_id in exchange:
            raise ValidationError(
                f"exchange ledger: trade {trade.trade_id} appears twice (lines "
                f"{exchange[trade.trade_id].line} and {trade.line})"
            )
        exchange[trade.trade_id] = trade
        if progress is not None and len(exchange) % batch == 0:
            progress("exchange ledger", batch)
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
    first_record: dict[str, str] = {}
    async for rows in _scan(engine, "calls", "delivery", batch, decision="allow"):
        for seq, payload in rows:
            trade_id = str(json.loads(payload).get("parameters", {}).get("trade"))
            used[trade_id] += 1
            first_record.setdefault(trade_id, f"calls/{seq}")
        report.deliveries += len(rows)
        if progress is not None:
            progress("deliveries", len(rows))
    for trade_id, count in sorted(used.items()):
        theirs = exchange.get(trade_id)
        if theirs is None:
            found(
                "delivery-without-trade",
                trade_id,
                f"{count} deliveries name trade {trade_id}, which the exchange ledger does not "
                "have",
                first_record[trade_id],
            )
        elif count > theirs.quantity:
            found(
                "overuse",
                trade_id,
                f"{count} units delivered against {theirs.quantity} bought",
                first_record[trade_id],
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
    return out
