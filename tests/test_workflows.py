"""The authorization workflows over the domain services, on SQLite and PostgreSQL, with the
real working-day calendar and a clock the tests move."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy import select

from gateway.authorization.roles import Role
from gateway.cli.demo import demo_credit_code
from gateway.db.schema import LogEntryRow, MerchantRow
from gateway.errors import ConflictError, ForbiddenError, ValidationError
from gateway.governance.service import LOCAL_ADMIN, Actor
from gateway.runtime import Gateway
from gateway.settings import Settings
from gateway.workflows.exclusions import parse_exclusions_csv
from gateway.workflows.onboarding import OnboardingStatus
from gateway.workflows.service import WorkflowService
from tests.conftest import FixedClock, build_world

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
