"""Reconciliation of a generated exchange ledger with the products stream and deliveries:
clean when they agree, and each kind of discrepancy found when they do not."""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path

from sqlalchemy import func, update

from gateway.cli.demo import DEMO_MERCHANT
from gateway.db.schema import LogEntryRow
from gateway.ledger.records import CallRecord
from gateway.products.reconcile import UnreadableRow, read_exchange_ledger, reconcile
from gateway.runtime import Gateway
from gateway.settings import Settings
from tests.support.world import FixedClock, build_world
from tests.test_products import AUTHORITY, EXCHANGE, MERCHANT, OPERATOR, product, trade

COLUMNS = [
    "exchange_trade_id",
    "product",
    "buyer_code",
    "quantity",
    "unit_price",
    "amount",
    "traded_at",
]


async def _deliver(gateway: Gateway, trade_id: str, times: int = 1) -> None:
    """Delivery call records as the delivery endpoint writes them."""
    for _ in range(times):
        record = CallRecord(kind="delivery", started_at=gateway.clock.now())
        record.decision = "allow"
        record.status = 200
        record.merchant_id = DEMO_MERCHANT
        record.parameters = {"product": "credit-score", "trade": trade_id, "buyer": "x"}
        await gateway.log.append(record.to_pending(gateway.clock.now()))


async def _anchor_products(gateway: Gateway) -> None:
    head = await gateway.checkpointer.checkpoint("products")
    assert head is not None and gateway.anchoring is not None
    for _ in range(400):
        gateway.anchoring.notify()
        bundle = await gateway.evidence.bundle("products", head.size - 1)
        anchor = bundle["anchor"]
        if isinstance(anchor, dict) and anchor["size"] == head.size:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the products stream was not anchored in time")


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


async def test_reconciliation(settings: Settings, clock: FixedClock, tmp_path: Path) -> None:
    chained = settings.replace(chain="embedded")
    gateway, _creds = await build_world(chained, clock)
    try:
        assert gateway.anchoring is not None
        await asyncio.wait_for(gateway.anchoring.ready.wait(), 60)
        products = gateway.products
        await products.register(MERCHANT, DEMO_MERCHANT, product())
        await products.check_export(OPERATOR, "credit-score", approve=True)
        await products.file(AUTHORITY, "credit-score", "备-1")
        await products.list_on_exchange(EXCHANGE, "credit-score", "SZDE-001")
        for i in range(12):
            await products.record_trade(EXCHANGE, trade(f"T-{i}", quantity=5))
        await _deliver(gateway, "T-0", 5)
        await _deliver(gateway, "T-1", 2)
        await _anchor_products(gateway)
        ledger = [
            {
                "exchange_trade_id": t.exchange_trade_id,
                "product": "SZDE-001",  # the exchange's listing id
                "buyer_code": t.buyer_code,
                "quantity": t.quantity,
                "unit_price": str(t.unit_price),
                "amount": str(t.amount),
                "traded_at": t.traded_at.isoformat(),
            }
            for t in await products.trades()
        ]
        clean = await reconcile(
            gateway.engine,
            read_exchange_ledger(_write(tmp_path / "clean.csv", ledger)),
            algorithm="sha256",
        )
        assert clean.clean, clean.to_dict()
        assert (clean.exchange_trades, clean.gateway_trades, clean.deliveries) == (12, 12, 7)
        as_json = tmp_path / "clean.json"
        as_json.write_text(json.dumps({"trades": ledger}))
        assert (
            await reconcile(gateway.engine, read_exchange_ledger(as_json), algorithm="sha256")
        ).clean

        # Now make every kind of discrepancy.
        await products.record_trade(EXCHANGE, trade("T-late", quantity=1))  # not anchored yet
        await _deliver(gateway, "T-2", 6)  # bought 5
        await _deliver(gateway, "T-ghost")  # no such trade
        broken = [row for row in ledger if row["exchange_trade_id"] != "T-3"]
        broken[0] = broken[0] | {"amount": "2.49"}  # T-0
        broken.append(ledger[0] | {"exchange_trade_id": "T-only-at-exchange"})
        broken.append(
            ledger[0] | {"exchange_trade_id": "T-late"} | {"quantity": 1, "amount": "0.50"}
        )
        report = await reconcile(
            gateway.engine,
            read_exchange_ledger(_write(tmp_path / "broken.csv", broken)),
            algorithm="sha256",
        )
        found = {(d.kind, d.trade_id) for d in report.discrepancies}
        assert found == {
            ("missing-at-exchange", "T-3"),
            ("missing-in-gateway", "T-only-at-exchange"),
            ("terms-differ", "T-0"),
            ("amount-arithmetic", "T-0"),  # 2.49 is not 5 × 0.50 in the exchange's own row
            ("unanchored", "T-late"),
            ("overuse", "T-2"),
            ("delivery-without-trade", "T-ghost"),
        }, report.to_dict()
        evidence = {d.kind: d.record_id for d in report.discrepancies}
        assert evidence["missing-at-exchange"].startswith("products/")
        assert evidence["overuse"].startswith("calls/")
        assert "amount: exchange 2.49, gateway 2.50" in next(
            d.detail for d in report.discrepancies if d.kind == "terms-differ"
        )

        # Someone edits a trade record in the database: the anchored products stream says so.
        async with gateway.engine.begin() as conn:
            await conn.execute(
                update(LogEntryRow)
                .where(LogEntryRow.stream == "products", LogEntryRow.kind == "trade.recorded")
                .where(LogEntryRow.payload.contains('"T-5"'))
                .values(payload=func.replace(LogEntryRow.payload, '"quantity":5', '"quantity":50'))
            )
        tampered = await reconcile(
            gateway.engine,
            read_exchange_ledger(_write(tmp_path / "clean2.csv", ledger)),
            algorithm="sha256",
        )
        kinds = {d.kind for d in tampered.discrepancies}
        assert "ledger-altered" in kinds and ("terms-differ", "T-5") in {
            (d.kind, d.trade_id) for d in tampered.discrepancies
        }
    finally:
        await gateway.close()


def test_malformed_exchange_ledgers_are_refused(tmp_path: Path) -> None:
    import pytest

    from gateway.errors import ValidationError

    bad = tmp_path / "bad.csv"
    bad.write_text("exchange_trade_id,product\nT-1,p\n")
    with pytest.raises(ValidationError, match="header lacks"):
        list(read_exchange_ledger(bad))
    row = {c: "x" for c in COLUMNS} | {"quantity": "1", "amount": "1.001", "unit_price": "1"}
    row |= {"traded_at": "2026-12-01T10:00:00+08:00"}
    # A bad row is a finding of its own (reconcile reports it with the rest), not an abort.
    (unreadable,) = list(read_exchange_ledger(_write(tmp_path / "money.csv", [row])))
    assert isinstance(unreadable, UnreadableRow)
    assert unreadable.detail.startswith("line 2: ") and unreadable.trade_id == "x"
    (tmp_path / "bad.json").write_text('{"trades": 3}')
    with pytest.raises(ValidationError, match="list of trades"):
        list(read_exchange_ledger(tmp_path / "bad.json"))
