"""The quarterly security report and the periodic operations report, on SQLite and
PostgreSQL: facts inside and outside the quarter, counted only when inside (in Beijing
time), written as Markdown and as self-contained HTML, by the CLI and over HTTP."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jinja2
import jwt
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import insert, update

from gateway.authorization.roles import Role
from gateway.chain.status import anchoring_status
from gateway.cli.demo import DEMO_MERCHANT, DEMO_SCENARIO, demo_credit_code
from gateway.cli.main import cli
from gateway.clock import FixedClock
from gateway.db.schema import (
    AlertRow,
    AnchorRegistryRow,
    AnchorRow,
    AnchorTransactionRow,
    LogEntryRow,
    MeasureRow,
    ReviewRow,
    UseApplicationRow,
)
from gateway.errors import ValidationError
from gateway.governance.models import MerchantStatus, ScenarioStatus
from gateway.governance.service import LOCAL_ADMIN, Actor
from gateway.ledger.log import PendingRecord
from gateway.reports import charts
from gateway.reports.audit_section import ChainAccess
from gateway.reports.blocks import Document, Para
from gateway.reports.operations import OperationsReport
from gateway.reports.periods import parse_period, parse_quarter
from gateway.reports.render import (
    operations_html,
    operations_markdown,
    security_html,
    security_markdown,
)
from gateway.reports.security import SecurityReport
from gateway.reports.service import chain_for_server, operations_report, security_report
from gateway.reports.templating import JoinLines, layout
from gateway.runtime import initialise
from gateway.settings import load_settings
from tests.support.enrolment import enrol_merchant
from tests.support.world import World, build_world
from tests.test_products import product, trade

CST = dt.timezone(dt.timedelta(hours=8))
UTC = dt.UTC
EVIL = "<script>alert(1)</script>"
SUPERVISOR = Actor("sup-1", Role.SUPERVISOR)
OPERATOR = Actor("op-1", Role.OPERATOR)
MERCHANT = Actor("xc-app", merchant_id=DEMO_MERCHANT)
NO_CHAIN = ChainAccess(None, "not in this test", backend="none")


@pytest.fixture
def clock() -> FixedClock:
    # 22:00 on 30 June 2026 in Beijing: the world (catalog, merchant, agreement) is made in
    # the second quarter, the facts the reports count follow in the third.
    return FixedClock(dt.datetime(2026, 6, 30, 14, tzinfo=UTC))


def at(world: World, year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> None:
    world.clock.set(dt.datetime(year, month, day, hour, minute, tzinfo=UTC))


async def verify(world: World, token: str) -> int:
    status, _body, _ = await world.data(
        token,
        "enterprises",
        "verify",
        {"values": {"credit_code": world.sample["credit_code"], "name": world.sample["name"]}},
    )
    return status


async def refused_query(world: World, token: str) -> int:
    status, _body, _ = await world.data(
        token,
        "enterprises",
        "query",
        {
            "filters": {"credit_code": world.sample["credit_code"]},
            "fields": ["credit_code", "legal_rep_id"],
        },
    )
    return status


def _onboarding(code: str, merchant_id: str) -> dict[str, Any]:
    return {
        "merchant_id": merchant_id,
        "name": "岚山数据科技有限公司",
        "credit_code": code,
        "licence": {
            "legal_representative": "王岚",
            "registered_address": "长沙市岳麓区麓谷大道 1 号",
            "business_scope": "数据处理和存储支持服务",
        },
        "contacts": [{"name": "李明", "phone": "13912345678", "email": "li@lanshan.example"}],
    }


def _alert(
    alert_id: int,
    rule: str,
    severity: str,
    status: str,
    first_seen: dt.datetime,
    handled_at: dt.datetime | None = None,
    merchant_id: str | None = DEMO_MERCHANT,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "id": alert_id,
        "rule": rule,
        "key": f"{rule}:{merchant_id}:{alert_id}",
        "severity": severity,
        "status": status,
        "merchant_id": merchant_id,
        "scenario_id": DEMO_SCENARIO,
        "title": f"{rule} on {merchant_id}",
        "detail": "test",
        "evidence": {"records": ["calls/1"]},
        "occurrences": 1,
        "first_seen": first_seen,
        "last_seen": first_seen,
        "handled_by": "op-1" if handled_at else None,
        "handled_at": handled_at,
        "resolution": extra.get("resolution"),
        "measure_id": extra.get("measure_id"),
        "webhook_status": "none",
        "webhook_attempts": 0,
        "webhook_next_at": None,
    }


def _measure(
    measure_id: str,
    kind: str,
    target: str,
    imposed_at: dt.datetime,
    lifted_at: dt.datetime | None = None,
) -> dict[str, Any]:
    return {
        "id": measure_id,
        "target_kind": kind,
        "target_id": target,
        "status": "lifted" if lifted_at else "active",
        "reason": f"reason of {measure_id}",
        "basis": "ZW art. 27",
        "imposed_by": "sup-1",
        "imposed_at": imposed_at,
        "lifted_by": "sup-1" if lifted_at else None,
        "lifted_at": lifted_at,
        "lift_reason": "fixed" if lifted_at else None,
    }


@dataclass
class Store:
    onboarding_open: str


async def build_store(world: World) -> Store:
    """Facts in the second, third and fourth quarters of 2026; the reports are of Q3."""
    gw = world.gateway
    gov = gw.governance
    # Q2: 23:00 on 30 June in Beijing.
    at(world, 2026, 6, 30, 15)
    assert await verify(world, await world.token()) == 200
    # Q3 already: 00:30 on 1 July in Beijing, still 30 June in UTC.
    at(world, 2026, 6, 30, 16, 30)
    assert await verify(world, await world.token()) == 200

    # Onboarding: one answered in 2 working days, one left open past its deadline.
    at(world, 2026, 7, 6, 2)  # Monday 10:00
    first = await gw.workflows.submit_onboarding(
        LOCAL_ADMIN, _onboarding(demo_credit_code("LS"), "lanshan-data")
    )
    at(world, 2026, 7, 8, 2)
    await gw.workflows.decide_onboarding(OPERATOR, first.id, approve=True)
    at(world, 2026, 9, 1, 2)
    second = await gw.workflows.submit_onboarding(
        LOCAL_ADMIN, _onboarding(demo_credit_code("SC"), "second-co")
    )

    # Q3 calls and governance changes, 10 August.
    at(world, 2026, 8, 10, 2)
    token = await world.token()
    status, _, _ = await world.data(
        token, "enterprises", "query", {"filters": {"credit_code": world.sample["credit_code"]}}
    )
    assert status == 200
    assert await refused_query(world, token) == 403
    assert await refused_query(world, token) == 403
    evil = await enrol_merchant(
        gov,
        "evil-merchant",
        EVIL,
        DEMO_SCENARIO,
        world.clock.now(),
        days=300,
        credit_code=demo_credit_code("EV"),
        agreement_id="agr-evil",
    )
    assert evil.secret is not None
    evil_token = await world.token(creds=(evil.client.client_id, evil.secret))
    assert await verify(world, evil_token) == 200
    await gov.merchants.set_merchant_status(
        SUPERVISOR, "evil-merchant", MerchantStatus.SUSPENDED, "探测"
    )
    await gov.merchants.set_merchant_status(
        LOCAL_ADMIN, "evil-merchant", MerchantStatus.ACTIVE, "整改"
    )
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    await gov.clients.revoke_token(SUPERVISOR, jti, "leaked token")
    await gw.checkpointer.checkpoint("calls")

    # Products: listed, traded in Q3 and settled for August; another trade in Q4.
    at(world, 2026, 8, 12, 2)
    await gw.products.register(MERCHANT, DEMO_MERCHANT, product())
    await gw.products.check_export(OPERATOR, "credit-score", approve=True)
    await gw.products.file(Actor("auth", Role.AUTHORITY), "credit-score", "备-2026-001")
    await gw.products.list_on_exchange(Actor("ex", Role.EXCHANGE), "credit-score", "SZDE-1")
    at(world, 2026, 8, 16, 2)
    exchange = Actor("ex", Role.EXCHANGE)
    await gw.products.record_trade(exchange, trade("T-1", traded_at="2026-08-15T10:00:00+08:00"))
    await gw.products.record_trade(
        exchange,
        trade("T-3", quantity=3, unit_price="33.33", traded_at="2026-08-16T09:00:00+08:00"),
    )
    at(world, 2026, 9, 6, 2)
    await gw.products.record_settlement(
        exchange,
        {
            "settlement_id": "S-2026-08",
            "period": "2026-08",
            "trades": ["T-1"],
            "settled_at": "2026-09-05T18:00:00+08:00",
            "amount": "500.00",
        },
    )

    # Records appended to the call log at the quarter's last second (23:59:59 in Beijing)
    # and after it (01:00 on 1 October in Beijing, 30 September in UTC).
    for when, decision, reason in (
        (dt.datetime(2026, 9, 30, 15, 59, 59, tzinfo=UTC), "deny", "rate-limited"),
        (dt.datetime(2026, 9, 30, 17, 0, 0, tzinfo=UTC), "allow", None),
    ):
        world.clock.set(when)
        await gw.log.append(
            PendingRecord(
                stream="calls",
                kind="data",
                recorded_at=when,
                body={
                    "merchant": DEMO_MERCHANT,
                    "scenario": DEMO_SCENARIO,
                    "dataset": "enterprises",
                    "mode": "verify",
                    "decision": decision,
                    "reason": reason,
                },
                merchant_id=DEMO_MERCHANT,
                scenario_id=DEMO_SCENARIO,
                dataset_id="enterprises",
                decision=decision,
            )
        )

    # Q4: a call, a trade and a suspension that the Q3 reports must not count.
    at(world, 2026, 10, 2, 2)
    assert await verify(world, await world.token()) == 200
    await gw.products.record_trade(exchange, trade("T-2", traded_at="2026-10-02T09:00:00+08:00"))
    await gov.scenarios.set_scenario_status(
        SUPERVISOR, DEMO_SCENARIO, ScenarioStatus.SUSPENDED, "检查"
    )

    async with gw.engine.begin() as conn:
        await conn.execute(
            insert(AlertRow),
            [
                _alert(
                    1,
                    "volume-spike",
                    "high",
                    "acknowledged",
                    dt.datetime(2026, 7, 5, 2, tzinfo=UTC),
                    dt.datetime(2026, 7, 5, 4, tzinfo=UTC),
                ),
                _alert(
                    2,
                    "enumeration",
                    "critical",
                    "resolved",
                    dt.datetime(2026, 8, 1, 2, tzinfo=UTC),
                    dt.datetime(2026, 8, 2, 2, tzinfo=UTC),
                    merchant_id="evil-merchant",
                    resolution="channel closed",
                    measure_id="m-1",
                ),
                # 23:00 on 30 September in Beijing: Q3; still open.
                _alert(
                    3, "refusal-burst", "warning", "open", dt.datetime(2026, 9, 30, 15, tzinfo=UTC)
                ),
                # Resolved only after the quarter: unhandled at its end.
                _alert(
                    4,
                    "audit-divergence",
                    "critical",
                    "resolved",
                    dt.datetime(2026, 9, 10, 2, tzinfo=UTC),
                    dt.datetime(2026, 10, 5, 2, tzinfo=UTC),
                    merchant_id=None,
                ),
                # Carried over from Q2, still open.
                _alert(5, "out-of-hours", "info", "open", dt.datetime(2026, 6, 20, 2, tzinfo=UTC)),
                # 00:30 on 1 October in Beijing: Q4.
                _alert(
                    6,
                    "invalid-tokens",
                    "high",
                    "open",
                    dt.datetime(2026, 9, 30, 16, 30, tzinfo=UTC),
                ),
            ],
        )
        await conn.execute(
            insert(MeasureRow),
            [
                _measure(
                    "m-1",
                    "merchant-channel",
                    "evil-merchant",
                    dt.datetime(2026, 8, 2, 2, tzinfo=UTC),
                    dt.datetime(2026, 8, 20, 2, tzinfo=UTC),
                ),
                _measure(
                    "m-2", "dataset-supply", "vehicles", dt.datetime(2026, 9, 15, 2, tzinfo=UTC)
                ),
                _measure(
                    "m-3",
                    "product",
                    "credit-score",
                    dt.datetime(2026, 6, 1, 2, tzinfo=UTC),
                    dt.datetime(2026, 10, 3, 2, tzinfo=UTC),
                ),
                _measure("m-4", "scenario", DEMO_SCENARIO, dt.datetime(2026, 10, 2, 2, tzinfo=UTC)),
            ],
        )
        # A use application checked in 2 working days; one department answered in 5, the
        # other stayed silent and was deemed to approve after 10. A second one waits past
        # its compliance deadline.
        for app_id, submitted, due, checked, app_status in (
            (
                "ua-1",
                dt.datetime(2026, 7, 1, 2, tzinfo=UTC),
                dt.datetime(2026, 7, 8, 16, tzinfo=UTC),
                dt.datetime(2026, 7, 3, 2, tzinfo=UTC),
                "approved",
            ),
            (
                "ua-2",
                dt.datetime(2026, 9, 18, 2, tzinfo=UTC),
                dt.datetime(2026, 9, 25, 16, tzinfo=UTC),
                None,
                "compliance-check",
            ),
        ):
            await conn.execute(
                insert(UseApplicationRow).values(
                    id=app_id,
                    merchant_id=DEMO_MERCHANT,
                    scenario_id=DEMO_SCENARIO,
                    requirements=[],
                    terms={},
                    status=app_status,
                    submitted_at=submitted,
                    compliance_due_at=due,
                    checked_at=checked,
                    checked_by="op-1" if checked else None,
                    reasons=[],
                    updated_at=submitted,
                )
            )
        opened = dt.datetime(2026, 7, 3, 2, tzinfo=UTC)
        review_due = dt.datetime(2026, 7, 17, 16, tzinfo=UTC)
        for department, review_status, decided in (
            ("市场监督管理局", "approved", dt.datetime(2026, 7, 10, 2, tzinfo=UTC)),
            ("人力资源和社会保障局", "deemed-approved", review_due),
        ):
            await conn.execute(
                insert(ReviewRow).values(
                    application_id="ua-1",
                    department=department,
                    datasets=[],
                    status=review_status,
                    opened_at=opened,
                    due_at=review_due,
                    decided_at=decided,
                    decided_by="dept" if review_status == "approved" else "deadline",
                    reasons=[],
                )
            )
    at(world, 2026, 10, 10, 2)
    return Store(onboarding_open=second.id)


# -- periods ---------------------------------------------------------------------------------


def test_periods_are_calendar_periods_in_beijing_time() -> None:
    q3 = parse_quarter("2026Q3")
    assert (q3.first_day, q3.last_day) == (dt.date(2026, 7, 1), dt.date(2026, 9, 30))
    assert q3.start == dt.datetime(2026, 6, 30, 16, tzinfo=UTC)
    assert q3.end == dt.datetime(2026, 9, 30, 16, tzinfo=UTC)
    assert not q3.contains(dt.datetime(2026, 9, 30, 17, tzinfo=UTC))  # 1 October, 01:00
    assert q3.contains(dt.datetime(2026, 9, 30, 15, 59, 59, tzinfo=UTC))
    assert parse_quarter("2026q4").label == "2026Q4" == parse_period("2026-Q4").label
    month = parse_period("2026-02")
    assert (month.first_day, month.last_day, month.days) == (
        dt.date(2026, 2, 1),
        dt.date(2026, 2, 28),
        28,
    )
    year = parse_period("2026")
    assert year.granularity == "month" and len(year.buckets()) == 12
    assert year.whole_months()[0] == "2026-01" and len(year.whole_months()) == 12
    span = parse_period("2026-07-15..2026-09-10")
    assert span.granularity == "day" and len(span.buckets()) == 58
    assert span.whole_months() == ["2026-08"]
    assert span.buckets()[0][1] == dt.datetime(2026, 7, 14, 16, tzinfo=UTC)
    for bad, message in (
        ("2026Q5", "not one of the forms"),
        ("2026-13", "month 13"),
        ("1999", "outside"),
        ("2026-09-31..2026-10-01", "not a calendar date"),
        ("2026-10-01..2026-09-01", "before the first"),
        ("2020-01-01..2026-01-01", "longer than"),
        ("", "not one of the forms"),
        ("Q3 2026", "not one of the forms"),
    ):
        with pytest.raises(ValidationError, match=message):
            parse_period(bad)
    with pytest.raises(ValidationError, match="2026Q3"):
        parse_quarter("2026-07")


def test_charts_are_deterministic_and_escape_their_labels() -> None:
    items = [(EVIL, 3.0), ("长沙星辰征信服务有限公司长沙星辰征信服务有限公司", 10.0)]
    first = charts.bar_chart("calls & refusals", items)
    assert first == charts.bar_chart("calls & refusals", items)
    assert "<script>" not in first and "&lt;script&gt;" in first and "&amp; refusals" in first
    line = charts.line_chart("per day", ["07-01", "07-02"], [("allowed", [1, 5])])
    assert "<polyline" in line and line.count("<circle") == 2
    assert "no data" in charts.stacked_bar_chart("empty", [], [])
    assert "no data" in charts.line_chart("empty", [], [])


def test_template_prose_wraps_but_values_keep_their_whitespace() -> None:
    env = jinja2.Environment(extensions=[JoinLines], undefined=jinja2.StrictUndefined)
    template = env.from_string("{% set v = 'a\\n  b' %}one\n    two {{ v }}\n  three")
    assert template.render() == "one two a\n  b three"


def test_a_value_missing_from_a_report_fails_its_template() -> None:
    with pytest.raises(jinja2.UndefinedError):
        layout("security.j2", report=SimpleNamespace(header=SimpleNamespace()))
    document = Document()
    assert document.p(caller=lambda: "body", note=True) == ""
    assert document.blocks == [Para("body", note=True)]


# -- the security report ---------------------------------------------------------------------


def _assert_html(document: str, *, merchant_named_script: bool = True) -> None:
    class Parser(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.tags: list[str] = []
            self.lang = ""

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.tags.append(tag)
            if tag == "html":
                self.lang = dict(attrs).get("lang") or ""

    parser = Parser()
    parser.feed(document)
    parser.close()
    assert parser.lang == "zh-CN"
    assert "svg" in parser.tags and "table" in parser.tags
    assert "script" not in parser.tags
    assert "<script>" not in document.lower()
    assert ("&lt;script&gt;" in document) is merchant_named_script
    assert "http://" not in document.replace('xmlns="http://www.w3.org/2000/svg"', "")


async def test_reports_count_only_the_quarter_in_beijing_time(world: World) -> None:
    store = await build_store(world)
    await _security_figures(world)
    await _operations_figures(world, store)


async def _security_figures(world: World) -> None:
    report: SecurityReport = await security_report(
        world.gateway,
        parse_quarter("2026Q3"),
        actor=LOCAL_ADMIN,
        generated_by="test",
        chain=NO_CHAIN,
    )
    assert report.header.complete
    assert (report.calls.allowed, report.calls.refused) == (3, 3)

    audit = report.audit
    assert audit.clean and audit.chain_status == "not-run"
    assert {s.stream for s in audit.streams} == {"calls", "governance", "products"}
    heads = {h.stream: h for h in report.header.heads}
    assert heads["calls"].checkpoint_size == heads["calls"].records  # signed just before
    assert [a.id for a in audit.divergence_alerts] == [4]

    perms = report.permissions
    assert dict(perms.by_kind) == {
        "onboarding.submitted": 2,
        "onboarding.approved": 1,
        "merchant.registered": 1,
        "agreement.granted": 1,
        "client.issued": 1,
        "merchant.suspended": 1,
        "merchant.active": 1,
        "token.revoked": 1,
    }
    assert dict(perms.by_group) == {
        "grants": 4,
        "revocations": 1,
        "suspensions": 1,
        "lifts": 1,
        "reviews": 2,
    }
    (suspension,) = [c for c in perms.changes if c.kind == "merchant.suspended"]
    assert suspension.actor == "sup-1 (supervisor)" and "evil-merchant" in suspension.subject
    assert suspension.reason == "探测"

    alerts = report.alerts
    assert alerts.raised == 4
    assert dict(alerts.by_severity) == {"critical": 2, "high": 1, "warning": 1}
    assert [s for s, _ in alerts.by_severity] == ["critical", "high", "warning"]
    assert (alerts.handled, alerts.resolved) == (2, 1)
    assert alerts.median_time_to_handle == dt.timedelta(hours=13)
    assert alerts.max_time_to_handle == dt.timedelta(hours=24)
    assert sorted(a.id for a in alerts.open_at_end) == [3, 4, 5]

    measures = report.measures
    assert [m.id for m in measures.imposed] == ["m-1", "m-2"]
    assert [m.id for m in measures.lifted] == ["m-1"]
    assert sorted(m.id for m in measures.active_at_end) == ["m-2", "m-3"]
    assert [c.kind for c in measures.status_changes] == ["merchant.suspended", "merchant.active"]

    anchoring = report.anchoring
    assert not anchoring.enabled and anchoring.final_anchors == 0
    (calls_health,) = [s for s in anchoring.streams if s.stream == "calls"]
    assert calls_health.checkpoints == 1 and calls_health.final_size_at_end == 0

    markdown = security_markdown(report)
    assert "| `merchant.suspended` | 暂停与关闭 Suspensions | 1 |" in markdown
    assert "| critical | 2 |" in markdown
    assert "Anchoring is off in this deployment" in markdown
    assert "Chain audit: not run: not in this test." in markdown
    assert f"`{heads['calls'].checkpoint_root}`" in markdown
    assert "<script>" not in markdown and "\\<script\\>" in markdown
    assert "Q4" not in markdown.replace("2026Q3", "")  # nothing of the fourth quarter
    html_text = security_html(report)
    assert html_text == security_html(report)  # deterministic
    _assert_html(html_text)
    assert "Alerts by rule and severity" in html_text


async def test_security_report_finds_tampering_and_measures_anchoring_lag(world: World) -> None:
    gw = world.gateway
    at(world, 2026, 7, 1, 2)
    for _ in range(3):
        assert await verify(world, await world.token()) == 200
    at(world, 2026, 7, 2, 2)
    assert await verify(world, await world.token()) == 200
    async with gw.engine.begin() as conn:
        await conn.execute(
            insert(AnchorRegistryRow).values(
                chain_id=31337,
                address="0x" + "ab" * 20,
                backend="anvil",
                created_at=world.clock.now(),
                updated_at=world.clock.now(),
            )
        )
        rows = []
        # Final anchors of calls at sizes 2 and 6; the first record the second one newly
        # covered (calls/2) was recorded on 1 July 02:00 UTC, the anchor final 2 days later.
        for anchor_id, size, final_at in (
            (1, 2, dt.datetime(2026, 7, 1, 3, tzinfo=UTC)),
            (2, 6, dt.datetime(2026, 7, 3, 2, tzinfo=UTC)),
        ):
            rows.append(
                {
                    "id": anchor_id,
                    "chain_id": 31337,
                    "contract": "0x" + "ab" * 20,
                    "stream": "calls",
                    "size": size,
                    "root": b"\x01" * 32,
                    "status": "final",
                    "block_number": anchor_id,
                    "block_hash": b"\x02" * 32,
                    "tx_hash": bytes([anchor_id]) * 32,
                    "confirmations": 3,
                    "requeues": anchor_id - 1,
                    "last_error": None,
                    "created_at": final_at - dt.timedelta(minutes=5),
                    "updated_at": final_at,
                    "final_at": final_at,
                }
            )
        await conn.execute(insert(AnchorRow), rows)
        for tx_id, status in ((1, "replaced"), (2, "mined")):
            await conn.execute(
                insert(AnchorTransactionRow).values(
                    id=tx_id,
                    anchor_id=2,
                    chain_id=31337,
                    account="0x" + "cd" * 20,
                    nonce=7,
                    tx_hash=bytes([tx_id + 10]) * 32,
                    raw=b"raw",
                    gas=50_000,
                    max_fee=tx_id,
                    priority_fee=1,
                    status=status,
                    created_at=dt.datetime(2026, 7, 2, 2, tzinfo=UTC),
                    updated_at=dt.datetime(2026, 7, 2, 2, tzinfo=UTC),
                )
            )
        # Someone edits a call record after the fact.
        await conn.execute(
            update(LogEntryRow)
            .where(LogEntryRow.stream == "calls", LogEntryRow.seq == 1)
            .values(payload='{"kind":"data","edited":true}')
        )
    at(world, 2026, 10, 1, 2)
    report = await security_report(
        world.gateway,
        parse_quarter("2026Q3"),
        actor=LOCAL_ADMIN,
        generated_by="test",
        chain=ChainAccess(None, "not in this test", backend="anvil"),
    )
    assert not report.audit.clean
    (finding,) = [f for s in report.audit.streams for f in s.findings if f.kind == "edited"]
    assert finding.seq == 1
    anchoring = report.anchoring
    assert anchoring.enabled and anchoring.contract == "0x" + "ab" * 20
    (calls_health,) = [s for s in anchoring.streams if s.stream == "calls"]
    assert calls_health.final_in_quarter == 2 and calls_health.final_size_at_end == 6
    assert calls_health.max_lag == dt.timedelta(days=2) and calls_health.max_lag_record == "calls/2"
    assert calls_health.requeues == 1
    assert dict(anchoring.transactions) == {"mined": 1, "replaced": 1}
    assert anchoring.resent_anchors == 1
    markdown = security_markdown(report)
    assert "FINDING(S)" in markdown and "`calls/1`" in markdown
    assert "2 d 0 h (calls/2)" in markdown


# -- the operations report -------------------------------------------------------------------


async def _operations_figures(world: World, store: Store) -> None:
    report: OperationsReport = await operations_report(
        world.gateway, parse_period("2026Q3"), actor=LOCAL_ADMIN, generated_by="test"
    )
    calls = report.calls
    assert (calls.totals.allowed, calls.totals.refused) == (3, 3)
    assert [(c.id, c.allowed, c.refused) for c in calls.by_scenario] == [(DEMO_SCENARIO, 3, 3)]
    assert [(c.id, c.name, c.allowed, c.refused) for c in calls.by_merchant] == [
        (DEMO_MERCHANT, "长沙星辰征信服务有限公司", 2, 3),
        ("evil-merchant", EVIL, 1, 0),
    ]
    assert calls.granularity == "day" and len(calls.series) == 92
    series = {b.label: (b.allowed, b.refused) for b in calls.series}
    assert series["2026-07-01"] == (1, 0)  # 00:30 in Beijing, still 30 June in UTC
    assert series["2026-09-30"] == (0, 1)  # 23:59:59 in Beijing
    assert series["2026-08-10"] == (2, 2)
    assert dict(calls.refusal_reasons) == {"out-of-scope": 2, "rate-limited": 1}
    assert dict(calls.other_calls)["token"] == 3

    steps = {s.step: s for s in report.timeliness.steps}
    onboarding = steps["onboarding"]
    assert (onboarding.decided, onboarding.on_time, onboarding.median_working_days) == (1, 1, 2)
    assert (onboarding.open_at_end, onboarding.overdue_at_end) == (1, 1)
    compliance = steps["compliance"]
    assert (compliance.decided, compliance.on_time, compliance.median_working_days) == (1, 1, 2)
    assert (compliance.open_at_end, compliance.overdue_at_end) == (1, 1)
    review = steps["review"]
    assert (review.decided, review.on_time, review.deemed) == (2, 1, 1)
    assert review.median_working_days == 7.5 and review.share_on_time == 0.5
    overdue = {(o.step, o.subject) for o in report.timeliness.overdue}
    assert overdue == {("onboarding", store.onboarding_open), ("compliance", "ua-2")}

    products = report.products
    assert dict(products.by_status) == {"listed": 1}
    assert (products.registered, products.trades, products.quantity) == (1, 2, 1003)
    assert str(products.amount) == "599.99"  # summed in cents, exact on SQLite as well
    assert [(p.id, p.trades, str(p.amount)) for p in products.by_product] == [
        ("credit-score", 2, "599.99")
    ]
    assert [(s.id, s.trades, str(s.amount)) for s in products.settlements] == [
        ("S-2026-08", 1, "500.00")
    ]
    assert products.revenue_months == ("2026-08",)
    assert products.months_without_settlement == ("2026-07", "2026-09")
    assert {(r.role, str(r.total)) for r in products.revenue} == {
        ("owner", "200.00"),
        ("operator", "175.00"),
        ("processor", "125.00"),
    }

    markdown = operations_markdown(report)
    assert "| 长沙星辰征信服务有限公司 (xingchen-credit) | 5 | 2 | 3 | 0 | 60.0 % |" in markdown
    assert "\\<script\\>alert(1)\\</script\\> (evil-merchant)" in markdown
    assert "| `/problems/out-of-scope` | 2 |" in markdown
    html_text = operations_html(report)
    _assert_html(html_text)
    assert "Data calls per day" in html_text

    # The fourth quarter has its own call, trade and no settlement.
    q4 = await operations_report(
        world.gateway, parse_period("2026-10"), actor=LOCAL_ADMIN, generated_by="test"
    )
    assert (q4.calls.totals.allowed, q4.calls.totals.refused) == (2, 0)
    assert q4.products.trades == 1 and q4.products.revenue == ()
    assert not q4.header.complete  # generated on 10 October
    assert "not over yet" in operations_markdown(q4)


# -- HTTP and CLI ----------------------------------------------------------------------------


async def test_http_and_cli_reports(world: World, tmp_path: Path) -> None:
    await build_store(world)
    await _http_reports_by_role_and_media_type(world)
    await _cli_report_commands(world, tmp_path)


async def _http_reports_by_role_and_media_type(world: World) -> None:
    operator = {"Authorization": f"Bearer {await world.staff_token(Role.OPERATOR)}"}
    resp = await world.client.get("/admin/reports/security?quarter=2026Q3", headers=operator)
    text = await resp.text()
    assert resp.status == 200, text
    assert resp.content_type == "text/markdown" and resp.charset == "utf-8"
    assert resp.headers["Dsgw-Record-Id"].startswith("calls/")
    assert text.startswith("# 数据安全季度报告") and "(operator)" in text
    resp = await world.client.get(
        "/admin/reports/operations?period=2026-08",
        headers=operator | {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"},
    )
    assert resp.status == 200 and resp.content_type == "text/html"
    assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
    _assert_html(await resp.text())
    resp = await world.client.get(
        "/admin/reports/operations?period=2026-07-01..2026-07-31&format=md",
        headers=operator | {"Accept": "text/html"},
    )
    assert resp.status == 200 and resp.content_type == "text/markdown"
    supervisor = {"Authorization": f"Bearer {await world.staff_token(Role.SUPERVISOR)}"}
    resp = await world.client.get(
        "/admin/reports/security?quarter=2026Q3&format=html", headers=supervisor
    )
    assert resp.status == 200 and resp.content_type == "text/html"

    for path, slug in (
        ("/admin/reports/security?quarter=2026-07", "validation"),
        ("/admin/reports/security", "validation"),
        ("/admin/reports/security?quarter=2027Q1", "validation"),  # not begun
        ("/admin/reports/operations?period=2026-13", "validation"),
        ("/admin/reports/operations?period=2026-07&format=pdf", "validation"),
    ):
        resp = await world.client.get(path, headers=operator)
        problem = await resp.json(content_type="application/problem+json")
        assert resp.status == 400 and problem["type"] == f"/problems/{slug}", (path, problem)

    exchange = await world.gateway.governance.clients.issue_client(LOCAL_ADMIN, role=Role.EXCHANGE)
    assert exchange.secret is not None
    exchange_token = await world.token("admin", (exchange.client.client_id, exchange.secret))
    resp = await world.client.get(
        "/admin/reports/operations?period=2026-08",
        headers={"Authorization": f"Bearer {exchange_token}"},
    )
    assert resp.status == 403
    assert (await resp.json(content_type=None))["action"] == "reports.read"
    merchant = {"Authorization": f"Bearer {await world.token('account')}"}
    resp = await world.client.get("/admin/reports/security?quarter=2026Q3", headers=merchant)
    assert resp.status in (401, 403)
    resp = await world.client.get("/admin/reports/security?quarter=2026Q3")
    assert resp.status == 401


async def _cli_report_commands(world: World, tmp_path: Path) -> None:
    settings = world.gateway.settings
    options = ["--data-dir", str(settings.data_dir)]
    if settings.database.url:
        options += ["--database-url", settings.database.url]
    env = {"DSGW_KEYSTORE_PASSPHRASE": "test passphrase", "DSGW_CHAIN": "none"}

    # In a thread: the CLI runs its own event loop, beside the test's.
    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, [*options, *args], env=env, catch_exceptions=False)

    markdown = await asyncio.to_thread(invoke, "report", "operations", "--period", "2026Q3")
    assert markdown.exit_code == 0, markdown.output
    assert markdown.stdout.startswith("# 授权运营情况报告 Operations report 2026Q3")
    assert "| `S-2026-08` | 2026-08 | 1 | 500.00 |" in markdown.stdout
    out = tmp_path / "security.html"
    done = await asyncio.to_thread(
        invoke, "report", "security", "--quarter", "2026Q3", "-o", str(out)
    )
    assert done.exit_code == 0, done.output
    assert "security report 2026Q3 written to" in done.stderr
    document = out.read_text(encoding="utf-8")
    _assert_html(document)
    assert "Chain audit: not run: no chain is configured" in document
    explicit = tmp_path / "operations.txt"
    done = await asyncio.to_thread(
        invoke,
        "report",
        "operations",
        "--period",
        "2026-08",
        "--format",
        "html",
        "-o",
        str(explicit),
    )
    assert done.exit_code == 0, done.output
    _assert_html(explicit.read_text(encoding="utf-8"))
    for args, message in (
        (("report", "security", "--quarter", "2026Q9"), "2026Q3"),
        (("report", "operations", "--period", "last month"), "not one of the forms"),
        (("report", "operations", "--period", "2027-01"), "has not begun"),
    ):
        bad = await asyncio.to_thread(invoke, *args)
        assert bad.exit_code == 2 and message in bad.stderr, bad.output


async def test_dsgw_report_as_a_separate_process(tmp_path: Path) -> None:
    """As a user runs it, on a fresh store (SQLite: what runs here is the command line, the
    store under it is covered above): HTML chosen by the file name, the chain audit reported
    as not done when the configured chain was never used."""
    data_dir = tmp_path / "data"
    settings = load_settings(
        None, environ={}, data_dir=data_dir, keystore_passphrase="test passphrase", chain="none"
    )
    await initialise(settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSGW_")}
    env |= {"DSGW_KEYSTORE_PASSPHRASE": "test passphrase"}
    command = [sys.executable, "-m", "gateway.cli", "--data-dir", str(data_dir), "report"]
    out = tmp_path / "security.html"
    done = subprocess.run(
        [*command, "security", "--quarter", "2026Q3", "-o", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    document = out.read_text(encoding="utf-8")
    _assert_html(document, merchant_named_script=False)
    assert "Chain audit: NOT done" in document and "anvil" in document


async def test_security_report_checks_the_chain_the_gateway_anchors_on(
    tmp_path: Path, source_dir: Path, clock: FixedClock
) -> None:
    """With a chain connection (the in-process chain), the report's audit compares every
    anchored root with the rebuilt trees, and the anchoring section counts final anchors.
    SQLite only: the chain path is the same whatever the store, which is covered above."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "sources").symlink_to(source_dir / "sources")
    settings = load_settings(
        None,
        environ={},
        data_dir=data_dir,
        keystore_passphrase="test passphrase",
        secret_hash_time_cost=1,
        secret_hash_memory_kib=8192,
        chain="embedded",
    )
    gateway, _creds = await build_world(settings, clock)
    try:
        anchoring = gateway.anchoring
        assert anchoring is not None
        await asyncio.wait_for(anchoring.ready.wait(), 60)
        head = await gateway.checkpointer.checkpoint("governance")
        assert head is not None
        for _ in range(400):
            status = await anchoring_status(gateway.engine)
            (governance,) = [s for s in status.streams if s.stream == "governance"]
            if governance.final_size == head.size:
                break
            anchoring.notify()
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the governance checkpoint was not anchored in time")
        report = await security_report(
            gateway,
            parse_quarter("2026Q2"),
            actor=LOCAL_ADMIN,
            generated_by="test",
            chain=chain_for_server(gateway),
        )
        audit = report.audit
        assert audit.clean and audit.chain_status == "checked"
        assert status.contract is not None and status.contract in audit.chain_detail
        (stream,) = [s for s in audit.streams if s.stream == "governance"]
        assert stream.anchors is not None and stream.anchors >= 1
        anchoring_section = report.anchoring
        assert anchoring_section.backend == "embedded" and anchoring_section.final_anchors >= 1
        (health,) = [s for s in anchoring_section.streams if s.stream == "governance"]
        assert health.final_size_at_end == head.size and health.max_lag is not None
        markdown = security_markdown(report)
        assert "Chain audit: checked against registry" in markdown
        assert "anchoring is off" not in markdown
    finally:
        await gateway.close()
