"""Data-quality objections over a real server on loopback, on SQLite and PostgreSQL: filed
about data the merchant received and refused otherwise, answered in time and late at the
edges of Beijing days, each step a governance record, counted in the circular."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from gateway.authorization.roles import Role
from gateway.cli.demo import DEMO_SCENARIO, demo_credit_code
from gateway.cli.main import cli
from gateway.clock import FixedClock
from gateway.db.schema import LogEntryRow
from gateway.governance.service import LOCAL_ADMIN, Actor
from gateway.reports.periods import parse_period
from gateway.reports.render import operations_markdown
from gateway.reports.service import operations_report
from gateway.runtime import derive_key
from gateway.settings import Settings
from gateway.tracing.index import identity_hash
from gateway.tracing.normalize import normalize
from gateway.workdays import default_calendar
from keys.keystore import KeyPurpose
from tests.support.enrolment import enrol_merchant
from tests.support.world import World

CST = dt.timezone(dt.timedelta(hours=8))
MARKET = "市场监督管理局"
POLICE = "公安局"


@pytest.fixture
def clock() -> FixedClock:
    # Wednesday 28 October 2026, 10:00 in Beijing: the world is made before the objections.
    return FixedClock(dt.datetime(2026, 10, 28, 10, tzinfo=CST))


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # A canary after every enterprise row delivered without an identity filter, so that the
    # test of objections about canary rows has one to object to.
    return settings.replace(trace_canary_rate=1)


def at(world: World, *args: int) -> None:
    world.clock.set(dt.datetime(*args, tzinfo=CST))


async def _call(
    world: World, method: str, path: str, token: str | None = None, body: Any = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = await world.client.request(method, path, json=body, headers=headers)
    return resp.status, await resp.json(content_type=None)


async def _data(
    world: World, mode: str, body: Any, token: str | None = None
) -> tuple[int, Any, str]:
    """A data call of the demo merchant; returns the status, answer and record id."""
    status, answer, headers = await world.data(
        token or await world.token(), "enterprises", mode, body
    )
    return status, answer, headers["Dsgw-Record-Id"]


async def _staff(world: World, role: Role, department: str | None = None) -> str:
    issued = await world.gateway.governance.clients.issue_client(
        LOCAL_ADMIN, role=role, department=department
    )
    assert issued.secret
    return await world.token("admin", (issued.client.client_id, issued.secret))


def _objection(
    record: str | None, field: str = "registered_capital", **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "dataset": "enterprises",
        "field": field,
        "category": "wrong",
        "description": "注册资本与营业执照不符",
        "evidence": "营业执照载明注册资本 500 万元",
    }
    if record is not None:
        body["record"] = record
    return body | extra


async def _governance(world: World, prefix: str = "objection.") -> list[tuple[str, dict[str, Any]]]:
    async with world.gateway.engine.connect() as conn:
        rows = await conn.execute(
            select(LogEntryRow.kind, LogEntryRow.payload)
            .where(LogEntryRow.stream == "governance", LogEntryRow.kind.startswith(prefix))
            .order_by(LogEntryRow.seq)
        )
        return [(kind, json.loads(payload)) for kind, payload in rows]


async def test_merchant_objects_to_what_it_received_and_nothing_else(world: World) -> None:
    credit_code = world.sample["credit_code"]
    account = await world.token("account")
    status, _, own = await _data(world, "query", {"filters": {"credit_code": credit_code}})
    assert status == 200

    status, filed = await _call(
        world, "POST", "/v1/objections", account, _objection(own, subject_key=credit_code)
    )
    assert status == 201, filed
    assert filed["department"] == MARKET and filed["status"] == "open"
    assert filed["subject_checked"] is True and filed["record"]["id"] == own
    assert "merchant_id" not in filed and "canary" not in filed
    filed_at = dt.datetime.fromisoformat(filed["filed_at"])
    # Counted like every other deadline: the end of the 10th working day after filing.
    assert dt.datetime.fromisoformat(filed["due_at"]) == default_calendar().deadline(filed_at, 10)

    # Another merchant's record reads exactly like one that does not exist.
    gov = world.gateway.governance
    other = await enrol_merchant(
        gov,
        "lanshan-data",
        "岚山数据",
        DEMO_SCENARIO,
        world.clock.now(),
        days=300,
        credit_code=demo_credit_code("LS"),
    )
    assert other.secret
    other_token = await world.token(creds=(other.client.client_id, other.secret))
    status, _, theirs = await _data(
        world, "query", {"filters": {"credit_code": credit_code}}, other_token
    )
    assert status == 200
    seen = {}
    for record in (theirs, "calls/999999"):
        status, problem = await _call(world, "POST", "/v1/objections", account, _objection(record))
        assert status == 422 and problem["type"] == "/problems/not-received", problem
        seen[record] = problem["detail"].replace(record, "calls/N")
    assert seen[theirs] == seen["calls/999999"]

    # A refused call delivered nothing.
    status, _, refused = await _data(
        world, "query", {"filters": {"credit_code": credit_code}, "fields": ["legal_rep_id"]}
    )
    assert status == 403
    status, problem = await _call(world, "POST", "/v1/objections", account, _objection(refused))
    assert status == 422 and "refused" in problem["detail"]
    # Not the dataset, not the field, not the subject it received.
    wrong = _objection(own) | {"dataset": "social-insurance", "field": "amount"}
    status, problem = await _call(world, "POST", "/v1/objections", account, wrong)
    assert status == 422 and "not social-insurance" in problem["detail"]
    status, problem = await _call(
        world, "POST", "/v1/objections", account, _objection(own, "legal_rep_id")
    )
    assert status == 422 and "did not deliver field legal_rep_id" in problem["detail"]
    stranger = _objection(own, subject_key=demo_credit_code("ZZ"))
    status, problem = await _call(world, "POST", "/v1/objections", account, stranger)
    assert status == 422 and "not among the rows" in problem["detail"]
    # A merchant names its record; a field the dataset lacks is bad input.
    status, problem = await _call(world, "POST", "/v1/objections", account, _objection(None))
    assert status == 400 and problem["field"] == "record"
    status, problem = await _call(world, "POST", "/v1/objections", account, _objection(own, "nope"))
    assert status == 400
    for bad in ("42", "calls/-1", "governance/3", "calls/01"):
        status, problem = await _call(world, "POST", "/v1/objections", account, _objection(bad))
        assert status == 400 and problem["field"] == "record", bad

    # An aggregate is about groups: a field, never a subject.
    status, _, grouped = await _data(
        world, "aggregate", {"group_by": ["district"], "measures": [{"fn": "count"}]}
    )
    assert status == 200
    body = _objection(grouped, "district", subject_key=credit_code)
    assert (await _call(world, "POST", "/v1/objections", account, body))[0] == 400
    status, filed_aggregate = await _call(
        world, "POST", "/v1/objections", account, _objection(grouped, "district")
    )
    assert status == 201, filed_aggregate
    # A verify answer: the subject is the key the call sent.
    status, _, verified = await _data(
        world, "verify", {"values": {"credit_code": credit_code, "name": "别的名字"}}
    )
    assert status == 200
    body = _objection(verified, "name", subject_key=credit_code, category="stale")
    assert (await _call(world, "POST", "/v1/objections", account, body))[0] == 201
    body = _objection(verified, "name", subject_key=demo_credit_code("ZZ"))
    assert (await _call(world, "POST", "/v1/objections", account, body))[0] == 422
    # A data token is not the account surface.
    assert (await _call(world, "POST", "/v1/objections", await world.token(), _objection(own)))[
        0
    ] == 401

    # The department sees the objection and of the record only its time and mode; another
    # department sees nothing; staff see who filed it.
    market = await _staff(world, Role.SOURCE, MARKET)
    police = await _staff(world, Role.SOURCE, POLICE)
    status, shown = await _call(world, "GET", f"/admin/objections/{filed['id']}", market)
    assert status == 200 and set(shown["record"]) == {"id", "recorded_at", "mode"}
    assert "merchant_id" not in shown and shown["subject_key"] == credit_code
    assert (await _call(world, "GET", f"/admin/objections/{filed['id']}", police))[0] == 404
    assert (await _call(world, "GET", "/admin/objections", police))[1]["objections"] == []
    operator = await world.staff_token(Role.OPERATOR)
    status, shown = await _call(world, "GET", f"/admin/objections/{filed['id']}", operator)
    assert shown["merchant_id"] == world.merchant_id and shown["canary"] is False
    status, mine = await _call(world, "GET", "/v1/objections", account)
    assert status == 200 and len(mine["objections"]) == 3
    status, none = await _call(
        world,
        "GET",
        "/v1/objections",
        await world.token("account", (other.client.client_id, other.secret)),
    )
    assert none["objections"] == []

    # Each filing is a governance record holding digests, not the subject key or the text.
    records = await _governance(world)
    assert [kind for kind, _ in records] == ["objection.filed"] * 3
    first = records[0][1]
    assert first["objection_id"] == filed["id"] and first["department"] == MARKET
    assert first["record"] == own and first["actor"]["merchant_id"] == world.merchant_id
    text = json.dumps(records, ensure_ascii=False)
    assert credit_code not in text and "注册资本与营业执照不符" not in text
    assert first["subject_key_digest"] and first["description_sha256"]


async def _file_at(world: World, when: tuple[int, ...], **extra: Any) -> dict[str, Any]:
    """A query by the demo merchant and its objection about it, both at ``when`` (Beijing)."""
    at(world, *when)
    credit_code = world.sample["credit_code"]
    status, _, record = await _data(world, "query", {"filters": {"credit_code": credit_code}})
    assert status == 200
    body = _objection(record, subject_key=credit_code) | extra
    status, filed = await _call(world, "POST", "/v1/objections", await world.token("account"), body)
    assert status == 201, filed
    return filed


async def _tasks(
    world: World, token: str, path: str = "/admin/tasks"
) -> list[tuple[str, str, bool]]:
    status, body = await _call(world, "GET", path, token)
    assert status == 200, body
    return [(t["kind"], t["subject"], t["overdue"]) for t in body["tasks"]]


async def test_answers_in_time_and_late_at_beijing_day_edges(world: World) -> None:
    # Filed in the last second of Sunday 1 November and in the first of Monday 2 November
    # (Beijing): the count starts the day after filing, so the deadlines are three working
    # days apart (end of Friday 13th and of Monday 16th).
    a = await _file_at(world, (2026, 11, 1, 23, 59, 59))
    b = await _file_at(world, (2026, 11, 2, 0, 0, 0))
    c = await _file_at(world, (2026, 11, 2, 0, 0, 0), category="stale")
    due_a = dt.datetime(2026, 11, 14, tzinfo=CST)
    due_b = dt.datetime(2026, 11, 17, tzinfo=CST)
    assert dt.datetime.fromisoformat(a["due_at"]) == due_a
    assert dt.datetime.fromisoformat(b["due_at"]) == due_b == dt.datetime.fromisoformat(c["due_at"])

    market = await _staff(world, Role.SOURCE, MARKET)
    assert [k for k, _, _ in await _tasks(world, market)] == ["objection"] * 3

    # In time: the last second before the deadline.
    world.clock.set(due_a - dt.timedelta(seconds=1))
    market = await _staff(world, Role.SOURCE, MARKET)
    answer = f"/admin/objections/{a['id']}/answer"
    police = await _staff(world, Role.SOURCE, POLICE)
    assert (await _call(world, "POST", answer, police, {"answer": "accepted"}))[0] == 404
    operator = await world.staff_token(Role.OPERATOR)
    status, problem = await _call(world, "POST", answer, operator, {"answer": "accepted"})
    assert status == 403 and problem["type"] == "/problems/forbidden"
    status, answered = await _call(world, "POST", answer, market, {"answer": "accepted"})
    assert status == 200, answered
    assert answered["status"] == "accepted" and answered["in_time"] is True
    assert (await _call(world, "POST", answer, market, {"answer": "rejected", "reasons": ["x"]}))[
        0
    ] == 409

    # At the deadline's first instant the other two are overdue, recorded as such, and
    # still open: never deemed answered.
    world.clock.set(due_b)
    operator = await world.staff_token(Role.OPERATOR)
    supervisor = await world.staff_token(Role.SUPERVISOR)
    market = await _staff(world, Role.SOURCE, MARKET)
    status, overdue = await _call(world, "GET", "/admin/objections?overdue=true", operator)
    assert status == 200
    assert sorted(o["id"] for o in overdue["objections"]) == sorted([b["id"], c["id"]])
    assert all(o["status"] == "open" and o["overdue"] for o in overdue["objections"])
    assert (await _call(world, "GET", "/admin/objections?overdue=maybe", operator))[0] == 400
    assert sorted(
        s for k, s, due in await _tasks(world, supervisor) if k == "objection" and due
    ) == sorted([b["id"], c["id"]])
    follow_ups = [s for k, s, _ in await _tasks(world, operator) if k == "objection-overdue"]
    assert sorted(follow_ups) == sorted([b["id"], c["id"]])

    # Late answers are answers, counted as late. A rejection needs its reasons.
    body = {"answer": "corrected", "version": "2026-11-16", "fixed_on": "2026-11-16"}
    status, corrected = await _call(
        world, "POST", f"/admin/objections/{b['id']}/answer", market, body
    )
    assert status == 200, corrected
    assert corrected["status"] == "corrected" and corrected["in_time"] is False
    assert corrected["correction"] == {"version": "2026-11-16", "fixed_on": "2026-11-16"}
    reject = f"/admin/objections/{c['id']}/answer"
    for bad in (
        {"answer": "rejected"},
        {"answer": "rejected", "reasons": []},
        {"answer": "rejected", "reasons": ["  "]},
        {"answer": "corrected"},
        {"answer": "corrected", "fixed_on": "2026-11-18"},
        {"answer": "accepted", "version": "v2"},
        {"answer": "maybe"},
    ):
        status, problem = await _call(world, "POST", reject, market, bad)
        assert status == 400 and problem["type"] == "/problems/validation", bad
    body = {"answer": "rejected", "reasons": ["登记机关数据与营业执照一致"]}
    status, rejected = await _call(world, "POST", reject, market, body)
    assert status == 200 and rejected["status"] == "rejected" and rejected["in_time"] is False
    # The accepted one is corrected later; its first answer stays "accepted".
    body = {"answer": "corrected", "fixed_on": "2026-11-16"}
    status, fixed = await _call(world, "POST", answer, market, body)
    assert status == 200 and fixed["status"] == "corrected" and fixed["answer"] == "accepted"
    assert fixed["in_time"] is True

    # The filer is told: each answer is a task until acknowledged.
    account = await world.token("account")
    mine = [s for k, s, _ in await _tasks(world, account, "/v1/tasks") if k == "objection-answer"]
    assert sorted(mine) == sorted([a["id"], b["id"], c["id"]])
    status, seen = await _call(world, "GET", f"/v1/objections/{c['id']}", account)
    assert seen["reasons"] == ["登记机关数据与营业执照一致"] and "answered_by" not in seen
    status, acked = await _call(world, "POST", f"/v1/objections/{c['id']}/acknowledgement", account)
    assert status == 200 and acked["acknowledged_at"]
    mine = [s for k, s, _ in await _tasks(world, account, "/v1/tasks") if k == "objection-answer"]
    assert sorted(mine) == sorted([a["id"], b["id"]])
    assert (await _call(world, "POST", f"/v1/objections/{c['id']}/acknowledgement", account))[
        0
    ] == 200
    assert await _tasks(world, market) == []

    # Every step is its own governance record.
    kinds = [kind for kind, _ in await _governance(world)]
    assert sorted(kinds) == sorted(
        ["objection.filed"] * 3
        + ["objection.accepted", "objection.overdue", "objection.overdue"]
        + ["objection.corrected", "objection.rejected", "objection.corrected"]
        + ["objection.acknowledged"]
    )
    overdue_records = [
        body for kind, body in await _governance(world) if kind == "objection.overdue"
    ]
    assert {r["objection_id"] for r in overdue_records} == {b["id"], c["id"]}
    assert all(r["actor"]["role"] == "system" for r in overdue_records)

    # A review by the same department, decided two working days after it opened.
    applications = world.gateway.applications
    at(world, 2026, 11, 3, 10)
    submitted = await applications.submit(
        Actor("xc", merchant_id=world.merchant_id),
        world.merchant_id,
        {
            "scenario": DEMO_SCENARIO,
            "requirements": [
                {"dataset": "enterprises", "modes": ["verify"], "fields": ["credit_code", "name"]}
            ],
            "purpose": "贷前核验",
            "period_start": "2026-11-03",
            "period_end": "2027-11-02",
            "safeguards": "专线",
        },
    )
    await applications.check_compliance(Actor("op", Role.OPERATOR), submitted.id, approve=True)
    at(world, 2026, 11, 5, 16)
    reviewer = Actor("mkt", Role.SOURCE, department=MARKET)
    await applications.review(reviewer, submitted.id, approve=True)

    # The circular of November counts exactly these records.
    at(world, 2026, 12, 1, 9)
    report = await operations_report(
        world.gateway, parse_period("2026-11"), actor=LOCAL_ADMIN, generated_by="test"
    )
    (row,) = [d for d in report.departments.departments if d.department == MARKET]
    records = await _governance(world)
    filed = [
        body for kind, body in records if kind == "objection.filed" and body["department"] == MARKET
    ]
    firsts = [
        body for kind, body in records if kind != "objection.filed" and body.get("first_answer")
    ]
    assert row.objections.received == len(filed) == 3
    assert row.objections.answered == len(firsts) == 3
    assert row.objections.in_time == sum(1 for body in firsts if body["in_time"]) == 1
    assert row.objections.late == 2
    assert row.objections.accepted == sum(1 for b in firsts if b["answer"] != "rejected") == 2
    assert row.objections.rejected == 1
    assert row.objections.corrected == sum(1 for k, _ in records if k == "objection.corrected") == 2
    assert row.objections.open_at_end == row.objections.overdue_at_end == 0
    # Working days from filing to answer: 10 (a), 11 (b), 11 (c).
    assert row.objections.median_working_days == 11
    assert (row.reviews.decided, row.reviews.on_time, row.reviews.deemed) == (1, 1, 0)
    assert row.reviews.median_working_days == 2 and row.reviews.overdue_at_end == 0
    (entry,) = row.entries
    assert entry.dataset_id == "enterprises" and entry.stale_objections == 1
    assert entry.days_since_update == (dt.date(2026, 11, 30) - dt.date(2026, 10, 28)).days
    assert row.entries_updated == 0
    text = operations_markdown(report)
    assert "数源部门通报 Circular on source departments" in text
    assert "年度评价" not in text  # a month is not a year

    # While November ran, the same report showed both open ones as overdue at its end.
    world.clock.set(due_b + dt.timedelta(hours=-1))
    early = await operations_report(
        world.gateway, parse_period("2026-11"), actor=LOCAL_ADMIN, generated_by="test"
    )
    (row,) = [d for d in early.departments.departments if d.department == MARKET]
    assert (row.objections.answered, row.objections.open_at_end, row.objections.overdue_at_end) == (
        1,
        2,
        0,
    )


async def test_objection_about_a_canary_row_is_kept_from_the_department(world: World) -> None:
    """A canary row's subject does not exist at the source: the department would answer "no
    such subject" and so tell the merchant which rows are canaries. Such an objection looks
    the same to the merchant, but the operator answers it and the department never sees it."""
    token = await world.token()
    status, answer, record = await _data(
        world, "query", {"filters": {"district": world.sample["district"]}}, token
    )
    assert status == 200
    status, entry = await _call(world, "GET", f"/v1/{record}", token)
    canaries = set(entry["record"]["canaries"])
    assert canaries
    keystore = world.gateway.keystore
    trace_key = derive_key(
        keystore.secret(keystore.active(KeyPurpose.MARK).kid), "dsgw trace row hashes v1"
    )

    def canary(row: dict[str, Any]) -> bool:
        digest = identity_hash(
            trace_key, "enterprises", "credit_code", normalize(row["credit_code"])
        )
        return f"{digest:016x}" in canaries

    fake = next(row for row in answer["rows"] if canary(row))
    real = next(row for row in answer["rows"] if not canary(row))
    account = await world.token("account")
    filed = {}
    for name, row in (("fake", fake), ("real", real)):
        body = _objection(record, subject_key=row["credit_code"])
        status, filed[name] = await _call(world, "POST", "/v1/objections", account, body)
        assert status == 201, filed[name]
    assert filed["fake"].keys() == filed["real"].keys()
    assert filed["fake"]["department"] == filed["real"]["department"] == MARKET

    market = await _staff(world, Role.SOURCE, MARKET)
    status, listed = await _call(world, "GET", "/admin/objections", market)
    assert [o["id"] for o in listed["objections"]] == [filed["real"]["id"]]
    assert [s for _, s, _ in await _tasks(world, market)] == [filed["real"]["id"]]
    path = f"/admin/objections/{filed['fake']['id']}"
    assert (await _call(world, "GET", path, market))[0] == 404
    assert (await _call(world, "POST", f"{path}/answer", market, {"answer": "accepted"}))[0] == 404
    operator = await world.staff_token(Role.OPERATOR)
    assert ("objection", filed["fake"]["id"], False) in await _tasks(world, operator)
    status, shown = await _call(world, "GET", path, operator)
    assert shown["canary"] is True and shown["answering_party"] == "operator"
    body = {"answer": "rejected", "reasons": ["经核实，该数据与登记信息一致"]}
    status, answered = await _call(world, "POST", f"{path}/answer", operator, body)
    assert status == 200 and answered["status"] == "rejected"
    status, seen = await _call(world, "GET", f"/v1/objections/{filed['fake']['id']}", account)
    assert "canary" not in seen and seen["reasons"] == body["reasons"]
    # The circular counts what the department answers, not the canaries.
    world.clock.advance(dt.timedelta(minutes=1))
    report = await operations_report(
        world.gateway, parse_period("2026Q4"), actor=LOCAL_ADMIN, generated_by="test"
    )
    (row,) = [d for d in report.departments.departments if d.department == MARKET]
    assert row.objections.received == 1 and row.objections.answered == 0


def _form(kind: str, closes_on: str = "2026-12-31", **extra: Any) -> dict[str, Any]:
    return {
        "year": 2026,
        "rater_kind": kind,
        "criteria": [
            {"id": "timeliness", "title": "审核与答复及时性", "max": 5},
            {"id": "support", "title": "技术支撑与服务", "max": 10},
        ],
        "closes_on": closes_on,
    } | extra


async def test_ratings_one_per_rater_per_year_in_the_yearly_report(world: World) -> None:
    authority = await world.staff_token(Role.AUTHORITY)
    operator = await world.staff_token(Role.OPERATOR)
    for kind in ("source", "district", "merchant"):
        status, form = await _call(world, "POST", "/admin/rating-forms", authority, _form(kind))
        assert status == 200 and form["rater_kind"] == kind, form
    assert (await _call(world, "POST", "/admin/rating-forms", operator, _form("source")))[0] == 403
    for bad in (
        _form("source", closes_on="2028-01-01"),
        _form("source", criteria=[{"id": "a", "title": "A", "max": 5}] * 2),
        _form("source", criteria=[{"id": "a", "title": "A", "max": 0}]),
        _form("bureau"),
        _form("source", year=1999),
    ):
        assert (await _call(world, "POST", "/admin/rating-forms", authority, bad))[0] == 400, bad

    market = await _staff(world, Role.SOURCE, MARKET)
    police = await _staff(world, Role.SOURCE, POLICE)
    district = await _staff(world, Role.DISTRICT, "芙蓉区数据局")
    account = await world.token("account")
    assert ("rating", "rating-2026", False) in await _tasks(world, market)
    assert ("rating", "rating-2026", False) in await _tasks(world, district)
    assert ("rating", "rating-2026", False) in await _tasks(world, account, "/v1/tasks")
    status, forms = await _call(world, "GET", "/admin/rating-forms?year=2026", market)
    assert status == 200 and len(forms["forms"]) == 3
    status, forms = await _call(world, "GET", "/v1/rating-forms", account)
    assert [f["rater_kind"] for f in forms["forms"]] == ["merchant"]

    rating = {"year": 2026, "scores": {"timeliness": 4, "support": 9}, "comment": "配合良好"}
    status, rated = await _call(world, "POST", "/admin/ratings", market, rating)
    assert status == 201 and rated["rater"] == MARKET and rated["rater_kind"] == "source"
    status, problem = await _call(world, "POST", "/admin/ratings", market, rating)
    assert status == 409 and "once a year" in problem["detail"]
    assert ("rating", "rating-2026", False) not in await _tasks(world, market)
    for bad in (
        {"year": 2026, "scores": {"timeliness": 4}},
        {"year": 2026, "scores": {"timeliness": 6, "support": 1}},
        {"year": 2026, "scores": {"timeliness": 4, "support": 1, "extra": 1}},
        {"year": 2026, "scores": {"timeliness": 4.5, "support": 1}},
        {"year": 2025, "scores": {"timeliness": 4, "support": 1}},
        {"year": 2026, "scores": {"timeliness": 4, "support": 1}, "rater": "someone"},
    ):
        status, problem = await _call(world, "POST", "/admin/ratings", police, bad)
        assert status in (400, 404), (bad, problem)
    rating_low = {"year": 2026, "scores": {"timeliness": 2, "support": 5}}
    assert (await _call(world, "POST", "/admin/ratings", police, rating_low))[0] == 201
    assert (await _call(world, "POST", "/admin/ratings", district, rating))[0] == 201
    assert (await _call(world, "POST", "/admin/ratings", operator, rating))[0] == 403
    assert (await _call(world, "POST", "/v1/ratings", account, rating))[0] == 201
    assert (await _call(world, "POST", "/v1/ratings", account, rating))[0] == 409
    # The form cannot change under its ratings.
    assert (await _call(world, "POST", "/admin/rating-forms", authority, _form("source")))[0] == 409

    # The bureau reads every rating; a rater its own; the rated operator none.
    status, every = await _call(world, "GET", "/admin/ratings?year=2026", authority)
    assert status == 200 and len(every["ratings"]) == 4
    assert (await _call(world, "GET", "/admin/ratings", operator))[0] == 403
    status, own = await _call(world, "GET", "/admin/ratings", market)
    assert [r["rater"] for r in own["ratings"]] == [MARKET]
    status, own = await _call(world, "GET", "/v1/ratings", account)
    assert [r["rater"] for r in own["ratings"]] == [world.merchant_id]
    assert (await _call(world, "GET", "/admin/objections", district))[0] == 403

    # The form closes at the end of its last day, Beijing time.
    at(world, 2026, 12, 31, 23, 59, 59)
    hr = await _staff(world, Role.SOURCE, "人力资源和社会保障局")
    assert (await _call(world, "POST", "/admin/ratings", hr, rating))[0] == 201
    at(world, 2027, 1, 1, 0, 0, 0)
    traffic = await _staff(world, Role.SOURCE, "公安局交通警察支队")
    status, problem = await _call(world, "POST", "/admin/ratings", traffic, rating)
    assert status == 409 and "closed on 2026-12-31" in problem["detail"]
    assert not [t for t in await _tasks(world, traffic) if t[0] == "rating"]

    kinds = [kind for kind, _ in await _governance(world, "rating.")]
    assert kinds == ["rating.form-set"] * 3 + ["rating.submitted"] * 5

    # The yearly report shows them beside the measured figures; one merchant's scores are
    # not shown.
    world.clock.advance(dt.timedelta(seconds=1))
    report = await operations_report(
        world.gateway, parse_period("2026"), actor=LOCAL_ADMIN, generated_by="test"
    )
    assert report.evaluation is not None and report.evaluation.year == 2026
    by_kind = {k.rater_kind: k for k in report.evaluation.kinds}
    source = by_kind["source"]
    assert source.ratings == 3 and set(source.raters) == {MARKET, POLICE, "人力资源和社会保障局"}
    timeliness = next(c for c in source.criteria if c.id == "timeliness")
    assert (timeliness.mean, timeliness.lowest, timeliness.highest) == (10 / 3, 2, 4)
    assert by_kind["district"].ratings == 1 and by_kind["district"].raters == ("芙蓉区数据局",)
    merchant = by_kind["merchant"]
    assert merchant.ratings == 1 and merchant.withheld and merchant.raters == ()
    assert all(c.mean is None for c in merchant.criteria) and merchant.overall is None
    text = operations_markdown(report)
    assert "年度评价 Yearly evaluation 2026" in text
    assert "Fewer than 3 merchants rated" in text
    assert "| 评价 Rated | 数源部门 Source departments: 3 rating(s) |" in text


async def test_cli_verbs(world: World, tmp_path: Path) -> None:
    """``dsgw objection`` and ``dsgw rating`` act as the local administrator on the same
    services (the CLI runs on the system clock; nothing here depends on today's date)."""
    filed = await _file_at(world, (2026, 11, 2, 10, 0, 0))
    settings = world.gateway.settings
    options = ["--data-dir", str(settings.data_dir)]
    if settings.database.url:
        options += ["--database-url", settings.database.url]
    env = {"DSGW_KEYSTORE_PASSPHRASE": "test passphrase", "DSGW_CHAIN": "none"}

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, [*options, *args], env=env, catch_exceptions=False)

    async def dsgw(*args: str) -> Result:
        return await asyncio.to_thread(invoke, *args)

    listed = await dsgw("objection", "list", "--json")
    assert listed.exit_code == 0, listed.output
    (seen,) = json.loads(listed.stdout)
    assert seen["id"] == filed["id"] and seen["merchant_id"] == world.merchant_id
    shown = await dsgw("objection", "show", filed["id"])
    assert json.loads(shown.stdout)["department"] == MARKET
    refused = await dsgw("objection", "answer", filed["id"], "--answer", "rejected")
    assert refused.exit_code == 2 and "reasons" in refused.stderr
    done = await dsgw(
        "objection", "answer", filed["id"], "--answer", "corrected", "--version", "v2026.11"
    )
    assert done.exit_code == 0, done.output
    assert "corrected" in done.stdout
    assert (await dsgw("objection", "acknowledge", filed["id"])).exit_code == 0

    bad = tmp_path / "objection.json"
    bad.write_text(json.dumps(_objection("calls/999999")), encoding="utf-8")
    refused = await dsgw("objection", "file", str(bad), "--merchant", world.merchant_id)
    assert refused.exit_code == 4 and "is not an answer" in refused.stderr

    form = tmp_path / "form.json"
    form.write_text(json.dumps(_form("source", closes_on="2027-12-31")), encoding="utf-8")
    assert (await dsgw("rating", "form", str(form))).exit_code == 0
    forms = await dsgw("rating", "forms", "--year", "2026", "--json")
    assert [f["rater_kind"] for f in json.loads(forms.stdout)] == ["source"]
    tasks = await dsgw("tasks", "--role", "source", "--department", POLICE, "--json")
    assert [t["kind"] for t in json.loads(tasks.stdout)] == ["rating"]
    rate = ("--year", "2026", "--rater-kind", "source", "--rater", MARKET)
    scores = ("--score", "timeliness=4", "--score", "support=8")
    assert (await dsgw("rating", "submit", *rate, *scores)).exit_code == 0
    again = await dsgw("rating", "submit", *rate, *scores)
    assert again.exit_code == 4 and "once a year" in again.stderr
    ratings = await dsgw("rating", "list", "--json")
    assert [r["rater"] for r in json.loads(ratings.stdout)] == [MARKET]

    kinds = [kind for kind, _ in await _governance(world, "")]
    assert kinds.count("objection.corrected") == kinds.count("rating.submitted") == 1


async def test_bad_input_is_a_problem_never_a_500(world: World) -> None:
    account = await world.token("account")
    authority = await world.staff_token(Role.AUTHORITY)
    market = await _staff(world, Role.SOURCE, MARKET)
    status, _, record = await _data(world, "query", {"filters": {"credit_code": "x"}})
    good = _objection(record)
    bad_objections: list[Any] = [
        [],
        good | {"record": 42},
        good | {"record": "calls/99999999999999999999"},
        good | {"dataset": "Not An Id"},
        good | {"field": 7},
        good | {"subject_key": 7},
        good | {"subject_key": "x" * 201},
        good | {"category": 1},
        good | {"description": "x" * 4001},
        good | {"evidence": ["x"]},
        good | {"documents": "x"},
        good | {"documents": [{"title": "t", "reference": "r", "sha256": "zz"}]},
        good | {"documents": [{}] * 11},
        good | {"extra": 1},
        {"dataset": "enterprises"},
    ]
    for body in bad_objections:
        status, problem = await _call(world, "POST", "/v1/objections", account, body)
        assert 400 <= status < 500 and problem["type"].startswith("/problems/"), (body, problem)
    status, filed = await _call(world, "POST", "/v1/objections", account, good)
    assert status in (201, 422), filed
    answer = "/admin/objections/obj-000000000000/answer"
    for body in (
        [],
        {"answer": "rejected", "reasons": "x"},
        {"answer": "rejected", "reasons": [1]},
        {"answer": "corrected", "fixed_on": "2026-13-01"},
        {"answer": "corrected", "fixed_on": 20261101},
        {"answer": "corrected", "version": "v" * 65},
        {"answer": None},
    ):
        status, problem = await _call(world, "POST", answer, market, body)
        assert 400 <= status < 500, (body, problem)
    for path in (
        "/admin/objections?status=x",
        "/admin/objections?overdue=1",
        "/admin/objections/" + "x" * 300,
        "/admin/rating-forms?year=abc",
        "/admin/rating-forms?year=1999",
        "/admin/rating-forms?rater_kind=x",
        "/admin/ratings?year=٢٠٢٦",
    ):
        status, problem = await _call(world, "GET", path, authority)
        assert 400 <= status < 500, (path, problem)
    for body in (
        [],
        _form("source") | {"criteria": "x"},
        _form("source") | {"criteria": [1]},
        _form("source") | {"criteria": [{"id": "a", "title": "", "max": 5}]},
        _form("source") | {"criteria": [{"id": "a", "title": "A", "max": True}]},
        _form("source") | {"closes_on": 20261231},
        _form("source") | {"year": True},
        _form("source") | {"year": "2026x"},
    ):
        status, problem = await _call(world, "POST", "/admin/rating-forms", authority, body)
        assert status == 400, (body, problem)
    assert (await _call(world, "POST", "/admin/rating-forms", authority, _form("source")))[0] == 200
    for body in (
        [],
        {"year": 2026},
        {"year": "x", "scores": {}},
        {"year": 2026, "scores": []},
        {"year": 2026, "scores": {"timeliness": True, "support": 1}},
        {"year": 2026, "scores": {"timeliness": 1, "support": 1}, "comment": 5},
        {"year": 2026, "scores": {"timeliness": 1, "support": 1}, "comment": "x" * 4001},
    ):
        status, problem = await _call(world, "POST", "/admin/ratings", market, body)
        assert 400 <= status < 500, (body, problem)
