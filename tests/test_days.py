"""Date-only periods are whole days in the deployment zone (Beijing by default), at the
day edges 23:59:59 and 00:00:00 +08:00, and migration 0011 moves the rows stored before."""

from __future__ import annotations

import datetime as dt
import importlib.util
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert, select

import gateway
from gateway.cli.demo import DEMO_MERCHANT, DEMO_SCENARIO, demo_scenario
from gateway.clock import utc
from gateway.db.schema import AgreementRow, ScenarioRow
from gateway.errors import ConfigError
from gateway.governance.models import Scenario, ScenarioStatus, parse_time_value
from gateway.governance.service import LOCAL_ADMIN
from gateway.settings import load_settings
from gateway.workflows.applications import ApplicationTerms
from tests.support.world import World

BEIJING = dt.timezone(dt.timedelta(hours=8))


def _at(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=BEIJING)


def test_a_date_is_midnight_in_beijing() -> None:
    assert parse_time_value("valid_from", "2026-12-06") == _at(2026, 12, 6)
    assert parse_time_value("valid_from", dt.date(2026, 12, 6)) == _at(2026, 12, 6)
    assert parse_time_value("valid_from", "2026-12-06").isoformat() == ("2026-12-05T16:00:00+00:00")
    # A timestamp keeps its own offset; the zone applies to dates only.
    assert parse_time_value("x", "2026-12-06T00:00:00Z") == dt.datetime(2026, 12, 6, tzinfo=dt.UTC)
    berlin = ZoneInfo("Europe/Berlin")
    assert parse_time_value("x", "2026-07-01", berlin) == dt.datetime(2026, 7, 1, tzinfo=berlin)


def test_a_date_only_scenario_period_covers_whole_beijing_days() -> None:
    data = demo_scenario(_at(2026, 12, 7)) | {
        "valid_from": "2026-12-06",
        "valid_until": "2027-01-01",  # half-open: 31 December is the last day
        "status": "published",
    }
    scenario = Scenario.from_dict(data)
    assert scenario.status is ScenarioStatus.PUBLISHED
    assert not scenario.usable_at(_at(2026, 12, 5, 23, 59, 59))
    assert scenario.usable_at(_at(2026, 12, 6, 0, 0, 0))
    assert scenario.usable_at(_at(2026, 12, 31, 23, 59, 59))
    assert not scenario.usable_at(_at(2027, 1, 1, 0, 0, 0))
    assert scenario.to_dict()["valid_from"] == "2026-12-05T16:00:00+00:00"


def test_a_date_only_application_period_in_another_zone() -> None:
    terms = ApplicationTerms.from_dict(
        {
            "purpose": "贷前核验",
            "safeguards": "专线",
            "period_start": "2026-12-06",
            "period_end": "2029-12-06",
        },
        ZoneInfo("Europe/Berlin"),
    )
    assert terms.starts_at == dt.datetime(2026, 12, 5, 23, tzinfo=dt.UTC)
    assert terms.ends_at == dt.datetime(2029, 12, 5, 23, tzinfo=dt.UTC)


def test_the_zone_setting_is_checked() -> None:
    assert load_settings(None, environ={}).timezone == "Asia/Shanghai"
    assert str(load_settings(None, environ={"DSGW_TIMEZONE": "Asia/Urumqi"}).zone) == "Asia/Urumqi"
    with pytest.raises(ConfigError, match="timezone 'Beijing' is not an IANA time zone"):
        load_settings(None, environ={"DSGW_TIMEZONE": "Beijing"})


async def test_an_agreement_granted_by_dates_starts_and_ends_on_beijing_days(
    world: World,
) -> None:
    gov = world.gateway.governance
    granted = await gov.agreements.grant_agreement(
        LOCAL_ADMIN,
        merchant_id=DEMO_MERCHANT,
        scenario_id=DEMO_SCENARIO,
        starts_at="2026-12-06",
        ends_at="2027-12-06",
        shares=(40, 30, 30),
    )
    assert granted.starts_at == _at(2026, 12, 6) and granted.ends_at == _at(2027, 12, 6)
    assert not granted.usable_at(_at(2026, 12, 5, 23, 59, 59))
    assert granted.usable_at(_at(2026, 12, 6, 0, 0, 0))
    assert granted.usable_at(_at(2027, 12, 5, 23, 59, 59))
    assert not granted.usable_at(_at(2027, 12, 6, 0, 0, 0))


def _migration() -> Any:
    path = Path(gateway.__file__).parent / "migrations/versions/0011_time.py"
    spec = importlib.util.spec_from_file_location("migration_0011", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _move(connection: Any, direction: str) -> None:
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    module = _migration()
    with Operations.context(MigrationContext.configure(connection)):
        module._move(getattr(module, direction), ZoneInfo("Asia/Shanghai"))


async def test_migration_moves_bounds_stored_at_utc_midnight(world: World) -> None:
    """Rows written before this release (a date stored as 00:00 UTC) move to 00:00 Beijing;
    timestamps given with a time of day stay; the downgrade moves them back."""
    engine, now = world.gateway.engine, world.clock.now()
    legacy = demo_scenario(now) | {
        "id": "legacy-scenario",
        "valid_from": "2026-12-06T00:00:00+00:00",
        "valid_until": "2028-01-01T00:00:00+00:00",
    }
    timed = demo_scenario(now) | {
        "id": "timed-scenario",
        "valid_from": "2026-12-06T09:30:00+00:00",
        "valid_until": "2028-01-01T00:00:00+00:00",
    }
    async with engine.begin() as conn:
        for definition in (legacy, timed):
            await conn.execute(
                insert(ScenarioRow).values(
                    id=definition["id"],
                    name=definition["name"],
                    status="published",
                    definition=definition,
                    created_at=now,
                    updated_at=now,
                )
            )
        await conn.execute(
            insert(AgreementRow).values(
                id="agr-legacy",
                merchant_id=DEMO_MERCHANT,
                scenario_id="legacy-scenario",
                starts_at=dt.datetime(2026, 12, 6, tzinfo=dt.UTC),
                ends_at=dt.datetime(2027, 12, 6, 12, 30, tzinfo=dt.UTC),
                share_owner=40,
                share_operator=30,
                share_processor=30,
                status="active",
                terms={},
                created_at=now,
                updated_at=now,
            )
        )
        await conn.run_sync(_move, "_to_zone")

    async def stored() -> tuple[dict[str, Any], dict[str, Any], Any]:
        async with engine.connect() as conn:
            rows = {
                row.id: row.definition
                for row in (await conn.execute(select(ScenarioRow.id, ScenarioRow.definition)))
            }
            agreement = (
                await conn.execute(
                    select(AgreementRow.starts_at, AgreementRow.ends_at).where(
                        AgreementRow.id == "agr-legacy"
                    )
                )
            ).one()
        return rows["legacy-scenario"], rows["timed-scenario"], agreement

    moved, kept, agreement = await stored()
    assert moved["valid_from"] == "2026-12-05T16:00:00+00:00"
    assert moved["valid_until"] == "2027-12-31T16:00:00+00:00"
    assert kept["valid_from"] == "2026-12-06T09:30:00+00:00"  # a time of day: not a date
    assert kept["valid_until"] == "2027-12-31T16:00:00+00:00"
    assert utc(agreement.starts_at) == _at(2026, 12, 6)
    assert utc(agreement.ends_at) == dt.datetime(2027, 12, 6, 12, 30, tzinfo=dt.UTC)

    async with engine.begin() as conn:
        await conn.run_sync(_move, "_from_zone")
    moved, kept, agreement = await stored()
    assert moved["valid_from"] == "2026-12-06T00:00:00+00:00"
    assert utc(agreement.starts_at) == dt.datetime(2026, 12, 6, tzinfo=dt.UTC)


def test_daily_quota_and_report_days_follow_the_zone() -> None:
    from gateway.authorization.quotas import day_bounds
    from gateway.reports.periods import parse_period

    # 23:59:59 and 00:00:00 in Beijing are on two quota days.
    assert day_bounds(_at(2026, 12, 6, 23, 59, 59)) == (_at(2026, 12, 6), _at(2026, 12, 7))
    assert day_bounds(_at(2026, 12, 7, 0, 0, 0)) == (_at(2026, 12, 7), _at(2026, 12, 8))
    berlin = ZoneInfo("Europe/Berlin")
    start, end = day_bounds(dt.datetime(2026, 10, 25, 12, tzinfo=dt.UTC), berlin)
    assert end - start == dt.timedelta(hours=25)  # the day daylight saving ends
    period = parse_period("2026-12")
    assert period.start == _at(2026, 12, 1) and period.end == _at(2027, 1, 1)
    assert period.contains(_at(2026, 12, 31, 23, 59, 59))
    assert not period.contains(_at(2027, 1, 1, 0, 0, 0))
    assert "Beijing time" in period.describe()
    elsewhere = parse_period("2026-12", berlin)
    assert elsewhere.start == dt.datetime(2026, 12, 1, tzinfo=berlin)
    assert "Europe/Berlin" in elsewhere.describe()


def test_an_overdue_deadline_in_a_year_without_schedule_is_provisional_in_reports() -> None:
    from gateway.reports.timeliness import _Step
    from gateway.workdays import default_calendar

    step = _Step("onboarding", 5, default_calendar())
    as_of = _at(2027, 2, 1)
    step.still_open("on-1", "operator", _at(2026, 12, 31), as_of)  # last day 2026-12-30
    step.still_open("on-2", "operator", _at(2027, 1, 6), as_of)  # last day 2027-01-05
    first, second = step.overdue
    assert not first.provisional and second.provisional
    assert second.working_days_overdue is None  # not counted in a year without schedule


async def test_a_schedule_loaded_by_another_process_is_used_after_the_policy_reload(
    world: World,
) -> None:
    """Two gateway processes on one store: one loads the 2027 notice, the other counts with
    it once it reloads the policy (as it does on the change announcement), no restart."""
    from gateway.runtime import Gateway
    from gateway.workdays.notice import parse_notice

    here = world.gateway
    other = await Gateway.open(here.settings, clock=world.clock, anchoring=False)
    try:
        await here.policy.current()
        assert not here.calendar.current.covers(2027)
        notice = Path(__file__).parent / "data" / "notices" / "notice-2027-test.txt"
        loaded, _ = await other.schedules.load(
            LOCAL_ADMIN, parse_notice(notice.read_text("utf-8")), loaded_by="张敏"
        )
        assert loaded is not None and other.calendar.current.covers(2027)
        await here.policy.current()  # the epoch moved: reload, and the hook with it
        assert here.calendar.current.covers(2027)
        start = _at(2026, 12, 31, 10)
        assert here.calendar.deadline(start, 1) == _at(2027, 1, 5)  # 1-3 January off
        assert here.calendar.provisional_years(start, _at(2027, 1, 5)) == ()
    finally:
        await other.close()
