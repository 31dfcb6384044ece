"""Reading the exchange's own trade ledger: CSV (UTF-8 or GB18030), XLSX or JSON.

Every row is read or reported unreadable (by its line), never the end of the read, so
reconciliation (:mod:`gateway.products.reconcile`) can report every finding at once.

Exchange ledger columns (:data:`LEDGER_COLUMNS`, English or Chinese titles): ``trade_id``
(交易编号), ``product`` (产品编号; the product id or the exchange's listing id),
``buyer_code`` (买方统一社会信用代码), ``quantity`` (数量), ``unit_price`` (单价), ``amount``
(金额), ``traded_at`` (成交时间); other columns are ignored. A time without an offset, and
an Excel date, is Beijing time (:data:`LEDGER_ZONE`); a date alone is compared by day.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.errors import ValidationError
from gateway.products.models import parse_money
from gateway.tabular import HeaderMap, open_table, parse_local_date, read_text_file

__all__ = [
    "LEDGER_COLUMNS",
    "LEDGER_ZONE",
    "ExchangeTrade",
    "LedgerRow",
    "UnreadableRow",
    "read_exchange_ledger",
]

LEDGER_ZONE = ZoneInfo("Asia/Shanghai")
"""The exchange's clock: a ledger time without an offset (and every Excel date) is local."""

LEDGER_COLUMNS = HeaderMap(
    "exchange ledger",
    {
        "trade_id": (
            "exchange_trade_id",
            "交易编号",
            "交易号",
            "成交编号",
            "交易流水号",
            "订单编号",
        ),
        "product": ("product_id", "产品编号", "产品代码", "挂牌编号", "数据产品编号", "产品"),
        "buyer_code": (
            "buyer",
            "买方统一社会信用代码",
            "买方信用代码",
            "买方代码",
            "统一社会信用代码",
            "买方",
        ),
        "quantity": ("数量", "成交数量", "购买数量"),
        "unit_price": ("price", "单价", "成交单价", "成交价格"),
        "amount": ("金额", "成交金额", "交易金额", "总金额"),
        "traded_at": ("成交时间", "交易时间", "成交日期", "交易日期"),
    },
    required=("trade_id", "product", "buyer_code", "quantity", "unit_price", "amount", "traded_at"),
)
"""Field → accepted column titles of an exchange ledger (compared without case, spaces,
``_``, full-width forms or a trailing unit such as ``（元）``)."""


@dataclass(frozen=True, slots=True)
class ExchangeTrade:
    trade_id: str
    product: str
    buyer_code: str
    quantity: int
    unit_price: Decimal
    amount: Decimal
    line: int
    traded_at: dt.datetime | dt.date | None = None


@dataclass(frozen=True, slots=True)
class UnreadableRow:
    """A ledger row that could not be read: a finding, not the end of the run."""

    line: int
    trade_id: str
    detail: str


LedgerRow = ExchangeTrade | UnreadableRow


def _json_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    document = read_text_file(path)
    try:
        parsed = json.loads(document)
    except ValueError as exc:
        raise ValidationError(f"exchange ledger {path.name}: not valid JSON ({exc})") from None
    items = parsed.get("trades") if isinstance(parsed, dict) else parsed
    if not isinstance(items, list):
        raise ValidationError(
            f'exchange ledger {path.name}: expected a list of trades (or {{"trades": [...]}})'
        )
    aliases = {
        key: field for field, titles in LEDGER_COLUMNS.aliases.items() for key in (field, *titles)
    }
    for index, item in enumerate(items, start=1):
        if not isinstance(item, Mapping):
            raise ValidationError(f"exchange ledger {path.name}: trade {index} is not an object")
        yield (
            index,
            {
                aliases[str(k)]: "" if v is None else str(v).strip()
                for k, v in item.items()
                if str(k) in aliases
            },
        )


def _ledger_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    try:
        with path.open("rb") as handle:
            start = handle.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError as exc:
        raise ValidationError(
            f"exchange ledger {path.name}: cannot open: {exc.strerror or exc}"
        ) from exc
    if path.suffix.lower() == ".json" or start.startswith((b"[", b"{")):
        yield from _json_rows(path)
        return
    # Streamed: a ledger of millions of trades is never held in memory as text.
    with open_table(path) as table:
        yield from LEDGER_COLUMNS.records(table)


def _traded_at(value: str) -> dt.datetime | dt.date:
    text = value.strip()
    if not text:
        raise ValueError("no traded_at")
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("/", "-"))
    except ValueError:
        return parse_local_date(text)
    if len(text) <= 10:
        return moment.date()
    return moment if moment.tzinfo else moment.replace(tzinfo=LEDGER_ZONE)


def _quantity(value: str) -> int:
    number = Decimal(value.replace(",", ""))
    if number != number.to_integral_value() or number < 1:
        raise ValueError(f"quantity {value!r} is not a positive whole number")
    return int(number)


def read_exchange_ledger(path: Path) -> Iterator[LedgerRow]:
    """The rows of an exchange export, each an :class:`ExchangeTrade` or, when it cannot
    be read, an :class:`UnreadableRow` naming its line. Raises :class:`ValidationError`
    only for a file that cannot be read at all (not a table, no header)."""
    for line, row in _ledger_rows(path):
        trade_id = row.get("trade_id", "")
        try:
            if not trade_id:
                raise ValueError("no trade id")
            missing = [f for f in LEDGER_COLUMNS.required if not row.get(f)]
            if missing:
                raise ValueError(f"empty {', '.join(missing)}")
            yield ExchangeTrade(
                trade_id=trade_id,
                product=row["product"],
                buyer_code=row["buyer_code"].upper(),
                quantity=_quantity(row["quantity"]),
                unit_price=parse_money("unit_price", row["unit_price"].replace(",", "")),
                amount=parse_money("amount", row["amount"].replace(",", "")),
                line=line,
                traded_at=_traded_at(row["traded_at"]),
            )
        except (ArithmeticError, ValueError, ValidationError) as exc:
            detail = exc.detail if isinstance(exc, ValidationError) else str(exc)
            yield UnreadableRow(line, trade_id, f"line {line}: {detail}")
