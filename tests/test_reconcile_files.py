"""Reconciliation and the CLI's error handler with files made the way offices make them:
a GB18030 CSV with Chinese titles (what Excel on Chinese Windows saves), an XLSX written by
openpyxl with numbers and dates stored as Excel stores them, a UTF-8 CSV with a BOM, and a
ledger with every kind of discrepancy at once, all through the real ``dsgw`` process."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from aiohttp import encode_basic_auth
from click.testing import CliRunner
from openpyxl import Workbook

from gateway.authorization.roles import Role
from gateway.cli.demo import DEMO_MERCHANT, demo_credit_code
from gateway.cli.exits import ExitCode, HandledGroup, run_cli
from gateway.governance.service import LOCAL_ADMIN
from gateway.ledger.records import CallRecord
from gateway.runtime import Gateway
from gateway.settings import load_settings
from gateway.tabular import HeaderMap, open_table, parse_local_date
from tests.support.world import World
from tests.test_products import AUTHORITY, EXCHANGE, MERCHANT, OPERATOR, product, trade

DSGW = [sys.executable, "-m", "gateway.cli"]
BUYER = demo_credit_code("BY")
OTHER_BUYER = demo_credit_code("OT")
CHINESE = [
    "交易编号",
    "产品编号",
    "买方统一社会信用代码",
    "数量",
    "单价（元）",
    "成交金额",
    "成交时间",
]
ENGLISH = ["exchange_trade_id", "product", "buyer_code", "quantity", "unit_price", "amount"]


def dsgw(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSGW_")}
    env["COLUMNS"] = "250"
    return subprocess.run(
        [*DSGW, "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"{result.args}:\n{result.stdout}\n{result.stderr}"
    return result


def trades_of(report: dict[str, Any]) -> set[tuple[str, str]]:
    """The findings about this test's trades (the demo's own trade is not in the ledgers)."""
    return {
        (d["kind"], d["trade_id"])
        for d in report["discrepancies"]
        if not d["trade_id"].startswith("HNDE-") and d["kind"] != "unanchored"
    }


@pytest.fixture(scope="module")
def exchange_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with a listed product ``file-score`` (listing ``L-F``), five trades
    of three units at 12.34 yuan traded at 2026-11-02 09:00 Beijing time, four deliveries
    against ``F-1`` (one past what it bought) and one against a trade nobody made."""
    base = tmp_path_factory.mktemp("files")
    data_dir = base / "data"
    ok(dsgw(data_dir, "demo", "--no-serve", "--port", "0", "--rows", "200"))
    spec = {
        "id": "file-score",
        "name": "文件评分",
        "scenario": "enterprise-credit",
        "delivery": "report",
        "inputs": [{"dataset": "enterprises", "fields": ["credit_code", "status"]}],
        "outputs": [{"name": "n", "derivation": "count", "from": ["enterprises.status"]}],
        "unit_price": "12.34",
        "unit": "report",
    }
    (base / "product.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    ok(
        dsgw(
            data_dir, "product", "register", str(base / "product.json"), "--merchant", DEMO_MERCHANT
        )
    )
    ok(dsgw(data_dir, "product", "check", "file-score", "--approve"))
    ok(dsgw(data_dir, "product", "file", "file-score", "--number", "备-F"))
    ok(dsgw(data_dir, "product", "list-on-exchange", "file-score", "--listing", "L-F"))
    trades = [
        {
            "exchange_trade_id": f"F-{i}",
            "product": "file-score",
            "buyer_code": BUYER,
            "buyer_name": "买方",
            "quantity": 3,
            "unit_price": "12.34",
            "traded_at": "2026-11-02T09:00:00+08:00",
        }
        for i in range(5)
    ]
    # Written with a BOM, as Notepad on Windows saves UTF-8.
    (base / "trades.json").write_text(json.dumps(trades, ensure_ascii=False), encoding="utf-8-sig")
    ok(dsgw(data_dir, "exchange", "trade", str(base / "trades.json")))

    async def deliver() -> None:
        settings = load_settings(None, data_dir=data_dir, database_url=None)
        gateway = await Gateway.open(settings.replace(chain="none"))
        try:
            for trade_id in ["F-1"] * 4 + ["F-ghost"]:
                record = CallRecord(kind="delivery", started_at=gateway.clock.now())
                record.decision = "allow"
                record.status = 200
                record.merchant_id = DEMO_MERCHANT
                record.parameters = {"product": "file-score", "trade": trade_id, "buyer": BUYER}
                await gateway.log.append(record.to_pending(gateway.clock.now()))
        finally:
            await gateway.close()

    asyncio.run(deliver())
    return data_dir


def _agreeing_rows() -> list[list[Any]]:
    return [[f"F-{i}", "L-F", BUYER, 3, "12.34", "37.02", "2026-11-02 09:00:00"] for i in range(5)]


def test_gb18030_ledger_with_every_discrepancy_at_once(exchange_dir: Path, tmp_path: Path) -> None:
    rows = _agreeing_rows()
    rows[0][5] = "37.00"  # F-0: amount is not 3 × 12.34, and not what the gateway recorded
    rows[2][6] = "2026-11-03 09:00:00"  # F-2: traded a day later than recorded
    del rows[3]  # F-3: only the gateway knows it
    rows.append(["F-4", "L-F", BUYER, 3, "12.34", "37.02", "2026-11-02 09:00:00"])  # twice
    rows.append(["F-new", "L-F", OTHER_BUYER, 1, "12.34", "12.34", "2026-11-05"])  # exchange only
    rows.append(["F-bad", "L-F", BUYER, "三", "12.34", "37.02", "2026-11-02"])  # unreadable
    ledger = tmp_path / "台账.csv"
    with ledger.open("w", encoding="gb18030", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(CHINESE)
        writer.writerows(rows)

    result = dsgw(exchange_dir, "reconcile", str(ledger), "--json")
    assert result.returncode == ExitCode.DISCREPANCIES, result.stderr
    report = json.loads(result.stdout)
    assert trades_of(report) == {
        ("amount-arithmetic", "F-0"),
        ("terms-differ", "F-0"),
        ("terms-differ", "F-2"),
        ("missing-at-exchange", "F-3"),
        ("duplicate-trade-id", "F-4"),
        ("missing-in-gateway", "F-new"),
        ("unreadable-row", "F-bad"),
        ("overuse", "F-1"),
        ("delivery-without-trade", "F-ghost"),
    }
    by_kind = {d["kind"]: d for d in report["discrepancies"] if d["trade_id"].startswith("F-")}
    assert "traded at" in next(
        d["detail"]
        for d in report["discrepancies"]
        if d["kind"] == "terms-differ" and d["trade_id"] == "F-2"
    )
    assert "lines 5, 6" in by_kind["duplicate-trade-id"]["detail"]
    assert by_kind["unreadable-row"]["detail"].startswith("line 8: ")
    # Overuse points at the fourth delivery of F-1, the first past the three bought.
    calls = sorted(
        int(d["record_id"].split("/")[1])
        for d in report["discrepancies"]
        if d["kind"] in ("overuse", "delivery-without-trade")
    )
    assert by_kind["overuse"]["record_id"] == f"calls/{calls[1] - 1}"
    assert by_kind["delivery-without-trade"]["record_id"] == f"calls/{calls[1]}"


def test_xlsx_ledger_with_excel_numbers_and_dates(exchange_dir: Path, tmp_path: Path) -> None:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["交易号", "产品编号", "统一社会信用代码", "数量", "单价", "金额", "交易时间"])
    for i in range(5):
        # As Excel stores them: numbers as doubles (3 × 12.34 is 37.019999...), a date-time
        # as a date-time in local (Beijing) time.
        sheet.append([f"F-{i}", "L-F", BUYER, 3.0, 12.34, 3 * 12.34, dt.datetime(2026, 11, 2, 9)])
    ledger = tmp_path / "ledger.xlsx"
    book.save(ledger)
    report = json.loads(dsgw(exchange_dir, "reconcile", str(ledger), "--json").stdout)
    # Only what the deliveries did wrong: every term, time and sum agrees.
    assert trades_of(report) == {("overuse", "F-1"), ("delivery-without-trade", "F-ghost")}


def test_utf8_bom_ledger_with_english_titles(exchange_dir: Path, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.csv"
    with ledger.open("w", encoding="utf-8-sig", newline="") as out:
        writer = csv.writer(out)
        writer.writerow([*ENGLISH, "traded_at"])
        for row in _agreeing_rows():
            writer.writerow([*row[:6], "2026-11-02T01:00:00Z"])  # the same instant in UTC
    result = dsgw(exchange_dir, "reconcile", str(ledger))
    assert result.returncode == ExitCode.DISCREPANCIES
    assert "Traceback" not in result.stderr
    report = json.loads(dsgw(exchange_dir, "reconcile", str(ledger), "--json").stdout)
    assert trades_of(report) == {("overuse", "F-1"), ("delivery-without-trade", "F-ghost")}


def test_json_on_every_outcome_and_markup_printed_literally(
    exchange_dir: Path, tmp_path: Path
) -> None:
    titles_only = tmp_path / "bad.csv"
    titles_only.write_text("交易编号,数量\nF-0,3\n", encoding="gb18030")
    for args in (
        [str(titles_only)],
        [str(tmp_path / "absent.csv")],
        [str(tmp_path)],  # a directory
    ):
        result = dsgw(exchange_dir, "reconcile", *args, "--json")
        assert result.returncode == ExitCode.INVALID, result
        error = json.loads(result.stdout)["error"]
        assert error["exit_code"] == 2 and error["detail"]
        assert "Traceback" not in result.stderr
    lacks = json.loads(dsgw(exchange_dir, "reconcile", str(titles_only), "--json").stdout)
    assert "header lacks" in lacks["error"]["detail"] and "成交时间" in lacks["error"]["detail"]

    # A trade id with markup in it: the table shows it as written.
    ledger = tmp_path / "marked.csv"
    ledger.write_text(
        "\n".join(
            [",".join([*ENGLISH, "traded_at"]), f"[/x][b]T,L-F,{BUYER},1,1.00,1.00,2026-11-02"]
        )
        + "\n",
        encoding="utf-8",
    )
    table = dsgw(exchange_dir, "reconcile", str(ledger))
    assert table.returncode == ExitCode.DISCREPANCIES, table.stderr
    assert "[/x][b]T" in table.stdout and "Traceback" not in table.stderr
    # An error message with markup in it, on stderr.
    missing = dsgw(exchange_dir, "merchant", "suspend", "[/x]", "--reason", "[b]test[/b]")
    assert missing.returncode in (ExitCode.INVALID, ExitCode.NOT_FOUND), missing.stderr
    assert "[/x]" in missing.stderr and "Traceback" not in missing.stderr


def test_unexpected_errors_are_one_line_with_a_distinct_code(
    capsys: pytest.CaptureFixture[str],
) -> None:
    @click.group(cls=HandledGroup)
    @click.option("--debug", is_flag=True)
    def group(debug: bool) -> None:
        pass

    @group.command()
    @click.option("--json", "as_json", is_flag=True)
    def broken(as_json: bool) -> None:
        raise RuntimeError("no [/x] here")

    assert run_cli(group, ["broken"], "dsgw") == ExitCode.INTERNAL == 70
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: no [/x] here" in err and "please report" in err
    assert "Traceback" not in err
    assert run_cli(group, ["--debug", "broken"], "dsgw") == ExitCode.INTERNAL
    assert "Traceback" in capsys.readouterr().err
    assert run_cli(group, ["broken", "--json"], "dsgw") == ExitCode.INTERNAL
    assert json.loads(capsys.readouterr().out)["error"]["type"] == "internal"
    assert run_cli(group, ["nothing"], "dsgw") == ExitCode.INVALID
    # Called as click's own runner calls it, the group exits through the same handler.
    result = CliRunner().invoke(group, ["broken"])
    assert result.exit_code == ExitCode.INTERNAL and result.exception is not None
    assert isinstance(result.exception, SystemExit) and "please report" in result.output


async def test_retried_trade_with_other_terms_is_refused(world: World) -> None:
    products = world.gateway.products
    await products.register(MERCHANT, DEMO_MERCHANT, product())
    await products.check_export(OPERATOR, "credit-score", approve=True)
    await products.file(AUTHORITY, "credit-score", "备-1")
    await products.list_on_exchange(EXCHANGE, "credit-score", "SZDE-001")
    client = await world.gateway.governance.clients.issue_client(LOCAL_ADMIN, role=Role.EXCHANGE)
    assert client.secret
    resp = await world.client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": "admin"},
        headers={"Authorization": encode_basic_auth(client.client.client_id, client.secret)},
    )
    token = (await resp.json())["access_token"]

    async def post(body: dict[str, Any]) -> tuple[int, Any]:
        answer = await world.client.post(
            "/admin/trades", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        return answer.status, await answer.json(content_type=None)

    first = trade("T-9", quantity=2)
    assert (await post(first))[0] == 201
    assert (await post(first))[0] == 201  # the same terms again: a harmless retry
    for change in (
        {"traded_at": "2026-11-21T10:00:00+08:00"},
        {"buyer_name": "另一家公司"},
        {"quantity": 3},
        {"unit_price": "0.51"},
    ):
        status, problem = await post(first | change)
        assert status == 409, problem
        assert problem["type"].endswith("/conflict") and "other terms" in problem["detail"]
        assert next(iter(change)) in problem["detail"]
    (kept,) = [t for t in await products.trades() if t.exchange_trade_id == "T-9"]
    assert kept.quantity == 2


def test_exclusion_lists_from_gb18030_and_xlsx(exchange_dir: Path, tmp_path: Path) -> None:
    first, second = demo_credit_code("X1"), demo_credit_code("X2")
    gb = tmp_path / "失信名单.csv"
    gb.write_text(
        "统一社会信用代码,企业名称,类别,列入机关,列入日期,移出日期\n"
        f"{first},某某贸易有限公司,失信被执行人,长沙市中级人民法院,2026年1月5日,\n",
        encoding="gb18030",
    )
    ok(dsgw(exchange_dir, "exclusions", "import", str(gb)))
    found = json.loads(ok(dsgw(exchange_dir, "exclusions", "check", first, "--json")).stdout)
    assert found[0]["category"] == "dishonest-debtor" and found[0]["listed_on"] == "2026-01-05"

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["统一社会信用代码", "名称", "类别", "来源", "列入日期"])
    sheet.append([second, "某某科技有限公司", "tax-violator", "税务局", dt.datetime(2026, 2, 1)])
    book.save(tmp_path / "list.xlsx")
    ok(dsgw(exchange_dir, "exclusions", "import", str(tmp_path / "list.xlsx")))
    found = json.loads(ok(dsgw(exchange_dir, "exclusions", "check", second, "--json")).stdout)
    assert found[0]["listed_on"] == "2026-02-01"

    bad = tmp_path / "bad.csv"
    bad.write_text("名称,类别\n某,失信被执行人\n", encoding="gb18030")
    refused = dsgw(exchange_dir, "exclusions", "import", str(bad))
    assert refused.returncode == ExitCode.INVALID and "统一社会信用代码" in refused.stderr


async def test_exclusion_list_upload_as_xlsx(world: World, tmp_path: Path) -> None:
    operator = await world.staff_token(Role.OPERATOR)
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["统一社会信用代码", "名称", "类别", "来源", "列入日期"])
    sheet.append([demo_credit_code("XL"), "某", "大额罚款", "市场监管局", dt.datetime(2026, 3, 1)])
    path = tmp_path / "upload.xlsx"
    book.save(path)
    resp = await world.client.post(
        "/admin/exclusions",
        data=path.read_bytes(),
        headers={
            "Authorization": f"Bearer {operator}",
            "Content-Type": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        },
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["added"] == 1
    resp = await world.client.post(
        "/admin/exclusions",
        data="统一社会信用代码,名称\n".encode("gb18030"),
        headers={"Authorization": f"Bearer {operator}", "Content-Type": "text/csv"},
    )
    assert resp.status == 400 and "类别" in (await resp.json())["detail"]


def test_header_titles_and_dates_as_offices_write_them(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("\ufeff交易编号 ; 单价（元）;ＡＭＯＵＮＴ\nT-1;1.5;3\n", encoding="utf-8")
    columns = HeaderMap(
        "test", {"trade_id": ("交易编号",), "unit_price": ("单价",), "amount": ()}, ()
    )
    with open_table(path) as table:
        assert list(columns.records(table)) == [
            (2, {"trade_id": "T-1", "unit_price": "1.5", "amount": "3"})
        ]
    for text in ("2026-12-01", "2026/12/1", "2026.12.01", "2026年12月1日", "2026-12-01 08:00"):
        assert parse_local_date(text) == dt.date(2026, 12, 1)
    with pytest.raises(ValueError):
        parse_local_date("12/01/2026")
