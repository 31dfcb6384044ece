"""The authorization workflows over the domain services, on SQLite and PostgreSQL, with the
real working-day calendar and a clock the tests move."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from connectors import synthetic
from gateway.authorization.roles import Role
from gateway.cli.demo import demo_credit_code, demo_scenario
from gateway.db.schema import AlertRow, LogEntryRow, MerchantRow
from gateway.errors import ConflictError, ForbiddenError, NotFoundError, ValidationError
from gateway.governance.models import ScenarioStatus
from gateway.governance.service import LOCAL_ADMIN, Actor
from gateway.ledger.log import read_entries
from gateway.runtime import Gateway
from gateway.settings import Settings
from gateway.workdays.notice import parse_notice
from gateway.workflows.applications import ApplicationStatus, ReviewStatus
from gateway.workflows.exclusions import parse_exclusions_csv
from gateway.workflows.onboarding import OnboardingStatus
from gateway.workflows.service import WorkflowService
from gateway.workflows.task import Task
from gateway.workflows.tasks import tasks_for
from tests.support.world import FixedClock, build_world

OPERATOR = Actor("op-1", Role.OPERATOR)
SHANGHAI = dt.timezone(dt.timedelta(hours=8))


@dataclass
class Flow:
    gateway: Gateway
    clock: FixedClock
    workflows: WorkflowService


@pytest.fixture
async def flow(settings: Settings) -> AsyncIterator[Flow]:
    # Monday 28 September 2026, 10:00 in Shanghai: the National Day holiday is ahead.
    clock = FixedClock(dt.datetime(2026, 9, 28, 10, tzinfo=SHANGHAI))
    gateway, _creds = await build_world(settings, clock)
    try:
        yield Flow(gateway, clock, gateway.workflows)
    finally:
        await gateway.close()


def _application(code: str, merchant_id: str = "lanshan-data") -> dict[str, object]:
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


async def _tasks(flow: Flow, actor: Actor) -> list[tuple[str, str, dt.datetime | None]]:
    found = await tasks_for(
        actor,
        flow.gateway.engine,
        flow.workflows,
        flow.gateway.applications,
        flow.clock.now(),
    )
    return [(t.kind, t.subject, t.due_at) for t in found]


async def _task_objects(flow: Flow) -> list[Task]:
    return await tasks_for(
        LOCAL_ADMIN,
        flow.gateway.engine,
        flow.workflows,
        flow.gateway.applications,
        flow.clock.now(),
    )


async def _kinds(flow: Flow) -> list[str]:
    async with flow.gateway.engine.connect() as conn:
        return list(
            await conn.scalars(
                select(LogEntryRow.kind)
                .where(LogEntryRow.stream == "governance")
                .order_by(LogEntryRow.seq)
            )
        )


# --- exclusion list -------------------------------------------------------------------------


def test_exclusion_csv_is_checked_line_by_line() -> None:
    good = demo_credit_code("EX")
    header = "credit_code,name,category,source,listed_on,lifted_on\n"
    entries = parse_exclusions_csv(
        "\ufeff"
        + header
        + f"{good},某公司,dishonest-debtor,最高人民法院失信被执行人名单,2025-03-01,\n"
    )
    assert entries[0].credit_code == good and entries[0].lifted_on is None
    for row, message in [
        (f"{good[:-1]}0,x,tax-violator,s,2025-01-01,", "line 2.*not a valid"),
        (f"{good},x,bankrupt,s,2025-01-01,", "category must be one of"),
        (f"{good},x,tax-violator,s,01/02/2025,", "listed_on .* not a YYYY-MM-DD"),
        (f"{good},x,tax-violator,s,2025-01-02,2025-01-01", "lifted_on is before"),
        (f"{good},,tax-violator,s,2025-01-02,", "name and source"),
    ]:
        with pytest.raises(ValidationError, match=message):
            parse_exclusions_csv(header + row + "\n")
    with pytest.raises(ValidationError, match="header lacks category"):
        parse_exclusions_csv("credit_code,name,source,listed_on\n")


async def test_exclusion_import_is_idempotent_and_records_lifts(flow: Flow) -> None:
    code = demo_credit_code("EX")
    header = "credit_code,name,category,source,listed_on,lifted_on\n"
    listed = header + f"{code},某公司,tax-violator,国家税务总局重大税收违法失信主体,2026-01-05,\n"
    first = await flow.workflows.import_exclusions(OPERATOR, parse_exclusions_csv(listed))
    again = await flow.workflows.import_exclusions(OPERATOR, parse_exclusions_csv(listed))
    assert (first.added, again.added, again.unchanged) == (1, 0, 1)
    assert len(await flow.workflows.exclusions_of(code, dt.date(2026, 9, 28))) == 1
    lifted = listed.replace("2026-01-05,", "2026-01-05,2026-09-01")
    assert (
        await flow.workflows.import_exclusions(OPERATOR, parse_exclusions_csv(lifted))
    ).updated == 1
    assert await flow.workflows.exclusions_of(code, dt.date(2026, 9, 28)) == []
    assert len(await flow.workflows.exclusions_of(code, dt.date(2026, 8, 31))) == 1
    assert (await _kinds(flow)).count("exclusions.imported") == 3
    with pytest.raises(ForbiddenError):
        await flow.workflows.import_exclusions(Actor("x", Role.SOURCE), [])


# --- merchant onboarding --------------------------------------------------------------------


async def test_onboarding_deadline_is_five_working_days_across_national_day(flow: Flow) -> None:
    application = await flow.workflows.submit_onboarding(
        LOCAL_ADMIN, _application(demo_credit_code("LS"))
    )
    assert application.status is OnboardingStatus.SUBMITTED
    # Tue 29 and Wed 30 September, then 1-7 October off, Thu 8, Fri 9 and the make-up
    # working Saturday 10 October: the answer is due by the end of 10 October, Shanghai time.
    assert application.due_at == dt.datetime(2026, 10, 11, tzinfo=SHANGHAI)
    flow.clock.set(dt.datetime(2026, 10, 10, 23, 59, tzinfo=SHANGHAI))
    assert not application.overdue(flow.clock.now())
    flow.clock.set(dt.datetime(2026, 10, 11, tzinfo=SHANGHAI))
    assert application.overdue(flow.clock.now())


async def test_onboarding_approval_registers_the_merchant(flow: Flow) -> None:
    code = demo_credit_code("LS")
    application = await flow.workflows.submit_onboarding(LOCAL_ADMIN, _application(code))
    with pytest.raises(ConflictError, match="already open"):
        await flow.workflows.submit_onboarding(LOCAL_ADMIN, _application(code, "other-id"))
    with pytest.raises(ForbiddenError):
        await flow.workflows.decide_onboarding(
            Actor("a", Role.AUTHORITY), application.id, approve=True
        )
    decided, merchant = await flow.workflows.decide_onboarding(
        OPERATOR, application.id, approve=True
    )
    assert decided.status is OnboardingStatus.APPROVED and decided.decided_by == "op-1"
    assert merchant is not None and merchant.credit_code == code
    async with flow.gateway.engine.connect() as conn:
        assert await conn.scalar(select(MerchantRow.name).where(MerchantRow.id == "lanshan-data"))
    with pytest.raises(ConflictError, match="decided already"):
        await flow.workflows.decide_onboarding(
            OPERATOR, application.id, approve=False, reasons=["x"]
        )
    kinds = await _kinds(flow)
    assert kinds[-2:] == ["onboarding.submitted", "onboarding.approved"]


async def test_onboarding_rejection_needs_reasons_and_excluded_companies_are_refused(
    flow: Flow,
) -> None:
    code = demo_credit_code("BD")
    csv_text = (
        "credit_code,name,category,source,listed_on\n"
        f"{code},岚山数据科技有限公司,dishonest-debtor,失信被执行人名单,2026-03-01\n"
    )
    await flow.workflows.import_exclusions(OPERATOR, parse_exclusions_csv(csv_text))
    application = await flow.workflows.submit_onboarding(LOCAL_ADMIN, _application(code))
    assert [hit["category"] for hit in application.exclusion_hits] == ["dishonest-debtor"]
    with pytest.raises(ConflictError, match="exclusion list"):
        await flow.workflows.decide_onboarding(OPERATOR, application.id, approve=True)
    for reasons in ([], ["  "], ["ok", ""]):
        with pytest.raises(ValidationError, match="reasons"):
            await flow.workflows.decide_onboarding(
                OPERATOR, application.id, approve=False, reasons=reasons
            )
    decided, merchant = await flow.workflows.decide_onboarding(
        OPERATOR, application.id, approve=False, reasons=["列入失信被执行人名单 (CS23 第十八条)"]
    )
    assert merchant is None and decided.status is OnboardingStatus.REJECTED
    assert decided.reasons == ("列入失信被执行人名单 (CS23 第十八条)",)
    assert (await flow.workflows.onboarding(application.id)).reasons == decided.reasons


async def test_onboarding_submission_is_validated(flow: Flow) -> None:
    good = _application(demo_credit_code("LS"))
    bad_cases: list[tuple[dict[str, object], str]] = [
        ({**good, "credit_code": "91430100MA4L00000X"}, "not a valid unified social credit"),
        ({**good, "licence": {"legal_representative": "王"}}, "licence"),
        ({**good, "contacts": []}, "contacts must list"),
        ({**good, "contacts": [{"name": "李"}]}, "phone or an email"),
        ({**good, "contacts": [{"name": "李", "phone": "12345"}]}, "mobile"),
        ({**good, "merchant_id": "Bad Id!"}, "merchant"),
        ({**good, "extra": 1}, "extra"),
    ]
    for data, message in bad_cases:
        with pytest.raises(ValidationError, match=message):
            await flow.workflows.submit_onboarding(LOCAL_ADMIN, data)


# --- scenario publication: one scenario, one plan, one evaluation ---------------------------


async def test_scenario_needs_plan_and_passing_evaluation_to_be_published(flow: Flow) -> None:
    gov = flow.gateway.governance
    authority = Actor("auth-1", Role.AUTHORITY)
    draft = demo_scenario(flow.clock.now()) | {"id": "housing", "plan": None, "evaluation": None}
    await gov.scenarios.create_scenario(authority, draft)
    with pytest.raises(ConflictError, match=r"its plan .* and an evaluation record"):
        await gov.scenarios.set_scenario_status(authority, "housing", ScenarioStatus.PUBLISHED)
    plan = {"title": "住房公积金场景方案", "reference": "P-1", "sha256": "ab" * 32}
    with pytest.raises(ValidationError, match="sha256"):
        await gov.scenarios.record_scenario_plan(authority, "housing", plan | {"sha256": "xyz"})
    with pytest.raises(ForbiddenError):
        await gov.scenarios.record_scenario_plan(OPERATOR, "housing", plan)
    await gov.scenarios.record_scenario_plan(authority, "housing", plan)
    with pytest.raises(ConflictError, match="an evaluation record"):
        await gov.scenarios.set_scenario_status(authority, "housing", ScenarioStatus.PUBLISHED)
    evaluation = {
        "evaluator": "市数据局评估组",
        "conclusion": "fail",
        "evaluated_on": "2026-09-20",
        "report": {"title": "评估报告", "reference": "E-1", "sha256": "cd" * 32},
    }
    await gov.scenarios.record_scenario_evaluation(authority, "housing", evaluation)
    with pytest.raises(ConflictError, match="did not pass"):
        await gov.scenarios.set_scenario_status(authority, "housing", ScenarioStatus.PUBLISHED)
    await gov.scenarios.record_scenario_evaluation(
        authority, "housing", evaluation | {"conclusion": "pass"}
    )
    published = await gov.scenarios.set_scenario_status(
        authority, "housing", ScenarioStatus.PUBLISHED
    )
    assert published.plan is not None and published.plan.sha256 == "ab" * 32
    with pytest.raises(ConflictError, match="fixed once published"):
        await gov.scenarios.record_scenario_plan(authority, "housing", plan)
    kinds = await _kinds(flow)
    assert kinds.count("scenario.evaluation") == 2 and "scenario.plan" in kinds


# --- use applications: from onboarding to the first data call -------------------------------

MARKET = "市场监督管理局"
SOCIAL = "人力资源和社会保障局"


def _clear_scenario(now: dt.datetime) -> dict[str, object]:
    scenario = demo_scenario(now) | {"id": "credit-clear", "valid_until": "2031-01-01"}
    grants = [dict(g) for g in scenario["grants"]]  # type: ignore[union-attr]
    grants[0]["clear_fields"] = ["legal_rep_name"]
    return scenario | {"grants": grants}


def _use_application(**overrides: object) -> dict[str, object]:
    return {
        "scenario": "credit-clear",
        "requirements": [
            {
                "dataset": "enterprises",
                "modes": ["verify", "query"],
                "fields": ["credit_code", "name", "legal_rep_name", "legal_rep_id", "district"],
            },
            {
                "dataset": "social-insurance",
                "modes": ["aggregate"],
                "fields": ["district", "insurance_type", "amount"],
            },
        ],
        "purpose": "小微企业贷前核验与经营状况评估",
        "period_start": "2026-10-01",
        "period_end": "2029-09-30",
        "safeguards": "专线接入, 结果仅用于授信审批, 日志留存三年",
    } | overrides


async def test_whole_path_from_onboarding_to_the_first_data_call(flow: Flow) -> None:
    from aiohttp import encode_basic_auth
    from aiohttp.test_utils import TestClient, TestServer

    from gateway.api.app import create_app

    gov, apps, clock = flow.gateway.governance, flow.gateway.applications, flow.clock
    authority = Actor("auth-1", Role.AUTHORITY)
    market = Actor("market-1", Role.SOURCE, department=MARKET)
    social = Actor("social-1", Role.SOURCE, department=SOCIAL)

    # Onboarding, then credentials for the new merchant.
    onboarding = await flow.workflows.submit_onboarding(
        LOCAL_ADMIN, _application(demo_credit_code("LS"))
    )
    assert ("onboarding", onboarding.id, onboarding.due_at) in await _tasks(flow, OPERATOR)
    await flow.workflows.decide_onboarding(OPERATOR, onboarding.id, approve=True)
    merchant = Actor("lanshan-app", merchant_id="lanshan-data")
    issued = await gov.clients.issue_client(LOCAL_ADMIN, merchant_id="lanshan-data")
    assert issued.secret is not None
    await gov.scenarios.create_scenario(authority, _clear_scenario(clock.now()))
    await gov.scenarios.set_scenario_status(authority, "credit-clear", ScenarioStatus.PUBLISHED)

    # The application: refused beyond the scenario or beyond 3 years.
    bad = _use_application(
        requirements=[
            {"dataset": "enterprises", "modes": ["query"], "fields": ["address", "district"]}
        ]
    )
    with pytest.raises(ValidationError, match="does not grant field"):
        await apps.submit(merchant, "lanshan-data", bad)
    with pytest.raises(ValidationError, match="at most 3 years"):
        await apps.submit(merchant, "lanshan-data", _use_application(period_end="2029-10-02"))
    application = await apps.submit(merchant, "lanshan-data", _use_application())
    assert application.compliance_due_at == dt.datetime(2026, 10, 11, tzinfo=SHANGHAI)

    # Compliance check on Tuesday 29 September opens one review per source department, due
    # 10 working days later: the National Day week does not count, the make-up Saturday does.
    clock.set(dt.datetime(2026, 9, 29, 9, tzinfo=SHANGHAI))
    with pytest.raises(ForbiddenError):
        await apps.check_compliance(market, application.id, approve=True)
    checked = await apps.check_compliance(OPERATOR, application.id, approve=True)
    assert checked.status is ApplicationStatus.DEPARTMENT_REVIEW
    assert {r.department: r.datasets for r in checked.reviews} == {
        MARKET: ("enterprises",),
        SOCIAL: ("social-insurance",),
    }
    due = dt.datetime(2026, 10, 20, tzinfo=SHANGHAI)
    assert all(r.due_at == due for r in checked.reviews)
    assert await _tasks(flow, market) == [("review", application.id, due)]
    assert await _tasks(flow, merchant) == []

    # The market regulator approves; social insurance stays silent past its deadline.
    await apps.review(market, application.id, approve=True)
    with pytest.raises(ForbiddenError, match="reviews only for it"):
        await apps.review(market, application.id, approve=True, department=SOCIAL)
    clock.set(due - dt.timedelta(seconds=1))
    assert await apps.sweep() == 0
    clock.set(due)
    assert await apps.sweep() == 1
    approved = await apps.get(merchant, application.id)
    assert approved.status is ApplicationStatus.APPROVED
    (deemed,) = [r for r in approved.reviews if r.department == SOCIAL]
    assert deemed.status is ReviewStatus.DEEMED_APPROVED and deemed.decided_at == due
    assert deemed.to_dict()["label"] == "deemed approved (timeout)"
    assert (await _kinds(flow)).count("review.deemed-approved") == 1
    # Another process that read the pending review before this one recorded it: inside its
    # transaction it sees nothing left to do, and appends no second record.
    assert not await apps._deem(application.id, SOCIAL, due, False, due)
    assert (await _kinds(flow)).count("review.deemed-approved") == 1
    with pytest.raises(ConflictError, match="is approved"):
        await apps.review(social, application.id, approve=False, reasons=["too late"])

    assert ("agreement", application.id, None) in await _tasks(flow, authority)

    # The agreement: exactly the requirement list, the application's period.
    agreement = await apps.conclude_agreement(
        authority,
        application.id,
        shares=("40", "35", "25"),
        fees="按调用次数计费, 每千次 20 元",
        termination="违反安全要求或超范围使用时终止",
    )
    assert agreement.scope is not None
    assert [g.dataset_id for g in agreement.scope] == ["enterprises", "social-insurance"]
    assert (await apps.get(merchant, application.id)).agreement_id == agreement.id

    # The first data call, through the HTTP API.
    client = TestClient(TestServer(create_app(flow.gateway), host="127.0.0.1"))
    await client.start_server()
    try:

        async def token() -> tuple[int, dict[str, object]]:
            resp = await client.post(
                "/oauth/token",
                data={"grant_type": "client_credentials", "scope": "scenario:credit-clear"},
                headers={
                    "Authorization": encode_basic_auth(issued.client.client_id, issued.secret)
                },
            )
            return resp.status, await resp.json()

        async def call(mode: str, dataset: str, body: dict[str, object]) -> tuple[int, object]:
            status, issued_token = await token()
            assert status == 200, issued_token
            resp = await client.post(
                f"/v1/scenarios/credit-clear/datasets/{dataset}/{mode}",
                json=body,
                headers={"Authorization": f"Bearer {issued_token['access_token']}"},
            )
            return resp.status, await resp.json(content_type=None)

        sample = next(synthetic.generate("enterprises", 1, seed=7))
        query = {
            "fields": ["credit_code", "legal_rep_name"],
            "filters": {"credit_code": sample["credit_code"]},
        }
        status, body = await call("query", "enterprises", query)
        assert status == 200, body
        assert body["masked_fields"] == ["legal_rep_name"]  # type: ignore[index]
        # Outside the requirement list: a field, a mode, a dataset mode.
        status, body = await call(
            "query", "enterprises", query | {"fields": ["credit_code", "registered_capital"]}
        )
        assert status == 403, body
        status, body = await call("aggregate", "enterprises", {"group_by": ["district"]})
        assert status == 403 and "approved requirement list" in str(body)

        # The subjects' letters of authorization unmask the scenario's clear fields.
        await apps.add_subject_authorization(
            authority,
            agreement.id,
            {
                "dataset": "enterprises",
                "letter": {"title": "法定代表人授权书", "reference": "L-1", "sha256": "ef" * 32},
            },
        )
        status, body = await call("query", "enterprises", query)
        assert status == 200 and body["masked_fields"] == []  # type: ignore[index]
        assert body["rows"][0]["legal_rep_name"] == sample["legal_rep_name"]  # type: ignore[index]

        # Three months before the end the merchant is reminded to re-apply, once. The
        # period ends with 2029-09-29, a Beijing day: at 2029-09-30T00:00+08:00.
        beijing = dt.timezone(dt.timedelta(hours=8))
        clock.set(dt.datetime(2029, 6, 29, 23, 59, 59, tzinfo=beijing))
        await apps.sweep()
        assert await _tasks(flow, merchant) == []
        clock.set(dt.datetime(2029, 6, 30, tzinfo=beijing))
        await apps.sweep()
        await apps.sweep()
        end = dt.datetime(2029, 9, 30, tzinfo=beijing)
        assert await _tasks(flow, merchant) == [("renewal", agreement.id, end)]
        assert (await _kinds(flow)).count("agreement.renewal-due") == 1

        # At the end of the period token issuance stops by itself.
        clock.set(dt.datetime(2029, 9, 29, 23, 59, 59, tzinfo=beijing))
        status, _ = await token()
        assert status == 200
        clock.set(dt.datetime(2029, 9, 30, tzinfo=beijing))
        status, refused = await token()
        assert status in (400, 403) and "agreement" in str(refused)
    finally:
        await client.close()


async def test_rejection_reasons_reach_the_merchant(flow: Flow) -> None:
    apps = flow.gateway.applications
    merchant = Actor("xc-app", merchant_id="xingchen-credit")
    other = Actor("someone", merchant_id="other-merchant")
    await flow.gateway.governance.scenarios.create_scenario(
        LOCAL_ADMIN, _clear_scenario(flow.clock.now())
    )
    await flow.gateway.governance.scenarios.set_scenario_status(
        LOCAL_ADMIN, "credit-clear", ScenarioStatus.PUBLISHED
    )
    application = await apps.submit(merchant, "xingchen-credit", _use_application())
    with pytest.raises(ForbiddenError):
        await apps.submit(other, "xingchen-credit", _use_application())
    with pytest.raises(NotFoundError):
        await apps.get(other, application.id)
    await apps.check_compliance(OPERATOR, application.id, approve=True)
    with pytest.raises(ValidationError, match="reasons"):
        await apps.review(Actor("s", Role.SOURCE, department=SOCIAL), application.id, approve=False)
    # One extension, before the deadline, with a reason.
    social = Actor("s", Role.SOURCE, department=SOCIAL)
    extended = await apps.extend_review(
        social, application.id, working_days=5, reason="需核对参保数据口径"
    )
    (review,) = [r for r in extended.reviews if r.department == SOCIAL]
    assert review.extended_until is not None and review.due_at is not None
    assert review.extended_until > review.due_at
    with pytest.raises(ConflictError, match="extended once"):
        await apps.extend_review(social, application.id, working_days=1, reason="again")
    flow.clock.set(review.due_at + dt.timedelta(days=1))  # past the first deadline only
    # The silent market regulator is deemed to approve; the extended review is not.
    assert await apps.sweep() == 1
    (market,) = [
        r for r in (await apps.get(merchant, application.id)).reviews if r.department == MARKET
    ]
    assert market.status is ReviewStatus.DEEMED_APPROVED
    rejected = await apps.review(
        social, application.id, approve=False, reasons=["参保数据不支持该用途"]
    )
    assert rejected.status is ApplicationStatus.REJECTED
    seen = await apps.get(merchant, application.id)
    assert seen.reasons == (f"{SOCIAL}: 参保数据不支持该用途",)
    with pytest.raises(ConflictError, match="rejected"):
        await apps.conclude_agreement(
            LOCAL_ADMIN, application.id, shares=("40", "35", "25"), fees="x", termination="y"
        )


async def test_deadline_in_a_year_without_schedule_is_provisional_then_recomputed(
    flow: Flow,
) -> None:
    """Before the 2027 notice is loaded a deadline reaching into 2027 is accepted, counted
    on weekends alone and marked provisional; loading the notice counts it again."""
    gateway = flow.gateway
    beijing = dt.timezone(dt.timedelta(hours=8))
    # Monday 2026-12-28, 23:59:59 in Beijing: the count starts after the 28th.
    flow.clock.set(dt.datetime(2026, 12, 28, 23, 59, 59, tzinfo=beijing))
    submitted = await flow.workflows.submit_onboarding(
        LOCAL_ADMIN, _application(demo_credit_code("LS"))
    )
    # 29, 30, 31 December, then Friday 1 and Monday 4 January counted as working days.
    assert submitted.due_at == dt.datetime(2027, 1, 5, tzinfo=beijing)
    assert submitted.provisional and submitted.to_dict()["provisional"] is True
    (task,) = [t for t in await _task_objects(flow) if t.kind == "onboarding"]
    assert task.provisional and task.to_dict()["provisional"] is True

    # One second later it is Tuesday the 29th in Beijing: the count starts a day later.
    flow.clock.set(dt.datetime(2026, 12, 29, tzinfo=beijing))
    later = await flow.workflows.submit_onboarding(
        LOCAL_ADMIN, _application(demo_credit_code("LT"), merchant_id="later-data")
    )
    assert later.due_at == dt.datetime(2027, 1, 6, tzinfo=beijing) and later.provisional

    # The operator is alerted once for 2027, however often the check runs.
    await gateway.schedules.alert_missing()
    await gateway.schedules.alert_missing()
    async with gateway.engine.connect() as conn:
        alerts = (
            await conn.execute(
                select(AlertRow.key).where(AlertRow.rule == "workdays-schedule-missing")
            )
        ).all()
    assert [row.key for row in alerts] == ["year:2027"]

    # Loading the notice: 元旦 1-3 January is off, so both deadlines move by a day.
    notice = (Path(__file__).parent / "data" / "notices" / "notice-2027-test.txt").read_text(
        "utf-8"
    )
    loaded, moved = await gateway.schedules.load(
        LOCAL_ADMIN, parse_notice(notice), loaded_by="张敏"
    )
    assert loaded is not None and loaded.loaded_by == "张敏"
    assert sorted(moved) == sorted([submitted.id, later.id])
    again = await flow.workflows.onboarding(submitted.id)
    assert again.due_at == dt.datetime(2027, 1, 6, tzinfo=beijing)
    assert not again.provisional
    assert (await flow.workflows.onboarding(later.id)).due_at == dt.datetime(
        2027, 1, 7, tzinfo=beijing
    )
    # New deadlines are final at once, and the load is a governance record naming who.
    assert gateway.calendar.current.covers(2027)
    kinds = await _kinds(flow)
    assert kinds.count("workdays.schedule-loaded") == 1
    entries = await read_entries(gateway.engine, "governance", limit=500, newest_first=False)
    (record,) = [e for e in entries if e.kind == "workdays.schedule-loaded"]
    body = json.loads(record.payload)
    assert body["loaded_by"] == "张敏" and body["year"] == 2027
    # The same notice again changes nothing and records nothing.
    assert await gateway.schedules.load(LOCAL_ADMIN, parse_notice(notice), loaded_by="张敏") == (
        None,
        [],
    )
    assert (await _kinds(flow)).count("workdays.schedule-loaded") == 1


async def test_loading_a_schedule_counts_open_checks_and_reviews_again(flow: Flow) -> None:
    """Compliance checks and department reviews counted through 2027 before its notice was
    loaded move with it, as onboardings do (one moved id per moved deadline)."""
    gateway, apps, clock = flow.gateway, flow.gateway.applications, flow.clock
    gov = gateway.governance
    authority = Actor("auth-1", Role.AUTHORITY)
    merchant = Actor("lanshan-app", merchant_id="lanshan-data")
    # Monday 28 December 2026 in Beijing: 5 and 10 working days both run into January.
    clock.set(dt.datetime(2026, 12, 28, 10, tzinfo=SHANGHAI))
    onboarding = await flow.workflows.submit_onboarding(
        LOCAL_ADMIN, _application(demo_credit_code("LS"))
    )
    await flow.workflows.decide_onboarding(OPERATOR, onboarding.id, approve=True)
    await gov.scenarios.create_scenario(authority, _clear_scenario(clock.now()))
    await gov.scenarios.set_scenario_status(authority, "credit-clear", ScenarioStatus.PUBLISHED)
    period = {"period_start": "2027-01-04", "period_end": "2029-12-31"}
    waiting = await apps.submit(merchant, "lanshan-data", _use_application(**period))
    reviewed = await apps.submit(merchant, "lanshan-data", _use_application(**period))
    checked = await apps.check_compliance(OPERATOR, reviewed.id, approve=True)
    # 29, 30, 31 December, then Friday 1 and Monday 4 January counted as working days.
    assert waiting.compliance_due_at == dt.datetime(2027, 1, 5, tzinfo=SHANGHAI)
    before = {r.department: r.due_at for r in checked.reviews}
    assert len(before) == 2

    notice = (Path(__file__).parent / "data" / "notices" / "notice-2027-test.txt").read_text(
        "utf-8"
    )
    loaded, moved = await gateway.schedules.load(
        LOCAL_ADMIN, parse_notice(notice), loaded_by="张敏"
    )
    assert loaded is not None
    # 元旦 (1 January, a Friday, counted as a working day until now) is off: a day later each.
    assert sorted(moved) == sorted([waiting.id, reviewed.id, reviewed.id])
    again = await apps.get(OPERATOR, waiting.id)
    assert again.compliance_due_at == waiting.compliance_due_at + dt.timedelta(days=1)
    after = {r.department: r.due_at for r in (await apps.get(OPERATOR, reviewed.id)).reviews}
    assert after == {d: due + dt.timedelta(days=1) for d, due in before.items()}
