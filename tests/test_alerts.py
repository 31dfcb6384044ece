"""Misuse monitoring: each rule fires on misuse and stays quiet on its close ordinary case,
alerts are deduplicated, survive a restart, are handled over HTTP by the right roles, are
pushed to a real webhook receiver with a valid signature, and a failing `dsgw audit` raises
a critical alert. Calls go through the real HTTP server; long baselines are appended to the
log directly (the same records the server writes), and time moves with the fixed clock."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
from collections.abc import AsyncIterator
from itertools import islice
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from sqlalchemy import select, update

from connectors import synthetic
from gateway.authorization.roles import Role
from gateway.cli.demo import DEMO_SCENARIO, demo_scenario
from gateway.db.schema import AlertRow, LogEntryRow
from gateway.errors import ConfigError, ValidationError
from gateway.governance.models import Scenario, ScenarioHours
from gateway.governance.service import LOCAL_ADMIN
from gateway.identifiers import uscc_check_char
from gateway.ledger.log import read_entries
from gateway.ledger.records import CallRecord
from gateway.monitoring.models import Alert
from gateway.monitoring.monitor import Monitor
from gateway.monitoring.rules import Thresholds, longest_counter_run
from gateway.monitoring.store import AlertStore
from gateway.monitoring.webhook import WebhookSender, check_webhook_url, verify_signature
from gateway.settings import load_settings
from gateway.workdays import default_calendar
from tests.support.enrolment import publish_scenario
from tests.support.world import World

# Small thresholds, so each case needs a few dozen calls rather than hundreds.
SMALL = Thresholds(
    volume_min_calls=20,
    volume_baseline_days=7,
    volume_min_history_days=3,
    enumeration_run=8,
    scraping_distinct_subjects=12,
    scraping_pages=6,
    refusal_threshold=5,
    invalid_token_threshold=5,
)
SHANGHAI = ZoneInfo("Asia/Shanghai")


def monitor(world: World, store: AlertStore | None = None) -> Monitor:
    gateway = world.gateway
    return Monitor(
        gateway.engine,
        store or gateway.alerts,
        gateway.policy,
        world.clock,
        thresholds=SMALL,
        calendar=default_calendar(),
    )


async def alerts(world: World) -> list[Alert]:
    """Every alert, whatever its status."""
    return await world.gateway.alerts.find(LOCAL_ADMIN, status="open,acknowledged,resolved")


def fired(found: list[Alert], rule: str) -> list[Alert]:
    return [a for a in found if a.rule == rule]


async def append_calls(world: World, when: dt.datetime, count: int, **fields: Any) -> None:
    """``count`` allowed data calls of the world's merchant at ``when``, appended as the
    server appends them (one group commit for all)."""
    values: dict[str, Any] = {
        "kind": "data",
        "method": "POST",
        "path": f"/v1/scenarios/{DEMO_SCENARIO}/datasets/enterprises/verify",
        "merchant_id": world.merchant_id,
        "client_id": world.merchant_client[0],
        "scenario_id": DEMO_SCENARIO,
        "dataset_id": "enterprises",
        "mode": "verify",
        "decision": "allow",
        "status": 200,
        "rows": 1,
        "remote": "127.0.0.1",
        **fields,
    }
    records = [CallRecord(started_at=when, **values) for _ in range(count)]
    await asyncio.gather(*(world.gateway.log.append(r.to_pending(when)) for r in records))


def codes(count: int) -> list[str]:
    """Credit codes of real enterprises in the synthetic source."""
    rows = islice(synthetic.generate("enterprises", count, seed=7), count)
    return [str(row["credit_code"]) for row in rows]


def sequential_codes(start: int, count: int) -> list[str]:
    """Well-formed credit codes whose registration numbers are consecutive: what an
    enumerating client asks for."""
    out = []
    for n in range(start, start + count):
        body = f"91430100{n:09d}"
        out.append(body + uscc_check_char(body))
    return out


async def verify(world: World, token: str, credit_code: str) -> int:
    status, _, _ = await world.data(
        token, "enterprises", "verify", {"values": {"credit_code": credit_code, "name": "x"}}
    )
    return status


async def refuse(world: World, token: str, count: int) -> None:
    """Data calls on a dataset the scenario does not grant: refused as out of scope."""
    for _ in range(count):
        status, body, _ = await world.data(
            token, "vehicles", "query", {"filters": {"district": "芙蓉区"}}
        )
        assert status == 403, body


# -- volume-spike -----------------------------------------------------------------------------


async def test_volume_spike_fires_against_the_merchants_own_baseline(world: World) -> None:
    now = world.clock.now()
    for day in range(1, 8):
        await append_calls(world, now - dt.timedelta(days=day, minutes=30), 5)
    token = await world.token()
    for code in codes(25):
        assert await verify(world, token, code) == 200
    run = await monitor(world).run_once()
    [alert] = fired([c.alert for c in run.changes], "volume-spike")
    assert alert.key == f"merchant:{world.merchant_id}"
    assert alert.severity.value == "warning"
    figures = alert.evidence["figures"]
    assert figures["count"] == 25 and figures["threshold"] == 20
    assert figures["baseline"]["counts"] == [5] * 7 and figures["baseline"]["median"] == 5
    assert len(alert.evidence["records"]) == 25
    assert all(r.startswith("calls/") for r in alert.evidence["records"])


async def test_volume_steady_merchant_and_new_merchant_do_not_fire(world: World) -> None:
    token = await world.token()
    # A new merchant's busy first day: no baseline yet, so no spike.
    for code in codes(25):
        assert await verify(world, token, code) == 200
    assert fired([c.alert for c in (await monitor(world).run_once()).changes], "volume-spike") == []
    # A steady merchant: 30 calls in this hour on each of the last 7 days, 25 + 10 today.
    now = world.clock.now()
    for day in range(1, 8):
        await append_calls(world, now - dt.timedelta(days=day, minutes=30), 30)
    for code in codes(10):
        assert await verify(world, token, code) == 200
    assert fired([c.alert for c in (await monitor(world).run_once()).changes], "volume-spike") == []
    assert fired(await alerts(world), "volume-spike") == []


async def test_a_window_cut_at_its_bound_still_fires(world: World) -> None:
    """With window reads bounded far below the calls in the window, the volume rule counts
    in SQL and the scraping rule's lower bound still passes its threshold."""
    now = world.clock.now()
    for day in range(1, 8):
        await append_calls(world, now - dt.timedelta(days=day, minutes=30), 5)
    token = await world.token()
    for code in codes(25):
        assert await verify(world, token, code) == 200
    bounded = monitor(world)
    bounded.thresholds = dataclasses.replace(SMALL, window_max_calls=14)
    found = [c.alert for c in (await bounded.run_once()).changes]
    [spike] = fired(found, "volume-spike")
    assert spike.evidence["figures"]["count"] == 25
    [scraping] = fired(found, "scraping")
    assert scraping.evidence["figures"]["count"] >= SMALL.scraping_distinct_subjects


# -- enumeration ------------------------------------------------------------------------------


async def test_enumeration_of_sequential_identifiers_fires(world: World) -> None:
    token = await world.token()
    for code in sequential_codes(41, 9):
        assert await verify(world, token, code) == 200
    [alert] = fired(await _run(world), "enumeration")
    figures = alert.evidence["figures"]
    assert figures["run"] == 9 and figures["field"] == "credit_code"
    assert (figures["first"], figures["last"]) == (
        sequential_codes(41, 1)[0],
        sequential_codes(49, 1)[0],
    )
    assert alert.severity.value == "high"
    assert alert.key == f"merchant:{world.merchant_id}|dataset:enterprises"
    assert len(alert.evidence["records"]) == 9


async def test_short_sequential_run_and_ordinary_lookups_do_not_fire(world: World) -> None:
    token = await world.token()
    for code in [*sequential_codes(41, 7), *codes(8), *sequential_codes(60, 7)]:
        assert await verify(world, token, code) == 200
    assert fired(await _run(world), "enumeration") == []


def test_counter_runs_allow_for_a_check_character() -> None:
    run = longest_counter_run((code, i) for i, code in enumerate(sequential_codes(7, 12)))
    assert run is not None and run.length == 12
    plain = longest_counter_run([("A-0099", 1), ("A-0100", 2), ("A-0101", 3), ("B-0102", 4)])
    assert plain is not None and (plain.length, plain.first, plain.last) == (3, "A-0099", "A-0101")
    unrelated = longest_counter_run((c, i) for i, c in enumerate(codes(30)))
    assert unrelated is None or unrelated.length < 3


# -- scraping ---------------------------------------------------------------------------------


async def test_many_distinct_subjects_fire_scraping(world: World) -> None:
    token = await world.token()
    for code in codes(13):
        assert await verify(world, token, code) == 200
    [alert] = fired(await _run(world), "scraping")
    assert alert.evidence["figures"]["pattern"] == "distinct-subjects"
    assert alert.evidence["figures"]["count"] == 13
    assert fired(await alerts(world), "enumeration") == []


async def test_paging_through_a_result_set_fires_scraping(world: World) -> None:
    token = await world.token()
    district = world.sample["district"]
    for page in range(7):
        status, body, _ = await world.data(
            token,
            "enterprises",
            "query",
            {"filters": {"district": district}, "limit": 2, "offset": page * 2},
        )
        assert status == 200, body
    [alert] = fired(await _run(world), "scraping")
    figures = alert.evidence["figures"]
    assert (figures["pattern"], figures["pages"], figures["limit"]) == ("paging", 7, 2)
    assert alert.key.endswith("|paging")


async def test_repeat_lookups_and_a_few_pages_do_not_fire_scraping(world: World) -> None:
    token = await world.token()
    subjects = codes(11)
    for code in subjects * 3:  # 33 calls, 11 subjects: below 12 distinct
        assert await verify(world, token, code) == 200
    district = world.sample["district"]
    for page in (0, 1, 2, 3, 4, 6, 7):  # 5 consecutive pages, then a gap
        status, _, _ = await world.data(
            token,
            "enterprises",
            "query",
            {"filters": {"district": district}, "limit": 2, "offset": page * 2},
        )
        assert status == 200
    assert fired(await _run(world), "scraping") == []


# -- refusal-burst ----------------------------------------------------------------------------


async def test_refusal_burst_fires(world: World) -> None:
    token = await world.token()
    await refuse(world, token, 5)
    [alert] = fired(await _run(world), "refusal-burst")
    assert alert.key == f"merchant:{world.merchant_id}"
    assert alert.merchant_id == world.merchant_id
    assert alert.evidence["figures"]["reasons"] == {"out-of-scope": 5}
    assert alert.evidence["figures"]["datasets"] == {"vehicles": 5}


async def test_a_few_refusals_spread_out_do_not_fire(world: World) -> None:
    token = await world.token()
    await refuse(world, token, 4)
    assert fired(await _run(world), "refusal-burst") == []
    # Five more, three minutes apart: never five within ten minutes of each other.
    world.clock.advance(dt.timedelta(minutes=20))
    token = await world.token()
    for _ in range(5):
        await refuse(world, token, 1)
        world.clock.advance(dt.timedelta(minutes=3))
    assert fired(await _run(world), "refusal-burst") == []


# -- out-of-hours -----------------------------------------------------------------------------


async def _daytime_scenario(world: World, local_hour: int) -> str:
    """Move the clock to the next ``local_hour``:00 in Shanghai, then publish a scenario
    allowing 08:00-20:00 every day, grant it to the merchant and return its token."""
    now = world.clock.now().astimezone(SHANGHAI)
    target = (now + dt.timedelta(hours=2)).replace(hour=local_hour, minute=0, second=0)
    if target < now + dt.timedelta(hours=2):
        target += dt.timedelta(days=1)
    world.clock.set(target)
    gov = world.gateway.governance
    definition = {
        **demo_scenario(world.clock.now()),
        "id": "credit-daytime",
        "hours": {"from": "08:00", "to": "20:00", "days": "all", "timezone": "Asia/Shanghai"},
    }
    await publish_scenario(
        gov, definition, world.clock.now(), days=30, merchant_id=world.merchant_id
    )
    return await world.token("scenario:credit-daytime")


async def test_calls_outside_the_scenarios_hours_fire(world: World) -> None:
    token = await _daytime_scenario(world, 3)
    for code in codes(2):
        status, body, _ = await world.data(
            token,
            "enterprises",
            "verify",
            {"values": {"credit_code": code, "name": "x"}},
            scenario="credit-daytime",
        )
        assert status == 200, body  # alerted, not refused
    [alert] = fired(await _run(world), "out-of-hours")
    assert alert.key == f"merchant:{world.merchant_id}|scenario:credit-daytime"
    assert alert.scenario_id == "credit-daytime"
    assert alert.evidence["figures"]["count"] == 2
    assert alert.evidence["figures"]["hours"]["from"] == "08:00"


async def test_calls_inside_the_hours_do_not_fire(world: World) -> None:
    token = await _daytime_scenario(world, 10)
    for code in codes(20):
        status, _, _ = await world.data(
            token,
            "enterprises",
            "verify",
            {"values": {"credit_code": code, "name": "x"}},
            scenario="credit-daytime",
        )
        assert status == 200
    # The demo scenario has no hours: its calls at any time are fine too.
    world.clock.advance(dt.timedelta(hours=12))
    assert await verify(world, await world.token(), codes(1)[0]) == 200
    assert fired(await _run(world), "out-of-hours") == []


def test_scenario_hours_validation_and_working_days() -> None:
    calendar = default_calendar()
    hours = ScenarioHours.from_dict("s", {"from": "08:30", "to": "17:30", "days": "workdays"})
    at = dt.datetime(2026, 10, 1, 10, 0, tzinfo=SHANGHAI)  # National Day holiday, a Thursday
    assert not hours.allows(at, calendar.is_working_day)
    assert hours.allows(at.replace(day=10), calendar.is_working_day)  # make-up Saturday
    assert hours.allows(at.replace(day=12), calendar.is_working_day)
    assert not hours.allows(at.replace(day=12, hour=8, minute=29), calendar.is_working_day)
    assert not hours.allows(at.replace(day=12, hour=17, minute=30), calendar.is_working_day)
    night = ScenarioHours.from_dict("s", {"from": "22:00", "to": "06:00"})
    assert night.allows(at.replace(hour=23), calendar.is_working_day)
    assert night.allows(at.replace(hour=5), calendar.is_working_day)
    assert not night.allows(at.replace(hour=12), calendar.is_working_day)
    for bad in (
        {"from": "8:00", "to": "20:00"},
        {"from": "08:00", "to": "08:00"},
        {"from": "08:00", "to": "25:00"},
        {"from": "08:00", "to": "20:00", "days": "weekends"},
        {"from": "08:00", "to": "20:00", "timezone": "Mars/Olympus"},
        {"from": "08:00"},
        {"from": "08:00", "to": "20:00", "extra": 1},
        "08:00-20:00",
    ):
        with pytest.raises(ValidationError):
            ScenarioHours.from_dict("s", bad)
    definition = demo_scenario(dt.datetime(2026, 11, 1, tzinfo=dt.UTC))
    assert "hours" not in Scenario.from_dict(definition).to_dict()
    with_hours = Scenario.from_dict({**definition, "hours": {"from": "08:00", "to": "24:00"}})
    assert with_hours.to_dict()["hours"] == {
        "from": "08:00",
        "to": "24:00",
        "days": "all",
        "timezone": "Asia/Shanghai",
    }
    assert Scenario.from_dict(with_hours.to_dict()) == with_hours


# -- invalid-tokens ---------------------------------------------------------------------------


async def test_repeated_invalid_tokens_fire(world: World) -> None:
    for i in range(5):
        status, body, _ = await world.data(f"forged.{i}.token", "enterprises", "verify", {})
        assert status == 401, body
    [alert] = fired(await _run(world), "invalid-tokens")
    assert alert.key == "remote:127.0.0.1"
    assert alert.evidence["figures"]["count"] == 5
    assert alert.evidence["figures"]["reasons"] == {"invalid-token": 5}


async def test_a_single_bad_token_does_not_fire(world: World) -> None:
    status, _, _ = await world.data("expired.or.forged", "enterprises", "verify", {})
    assert status == 401
    token = await world.token()
    for code in codes(5):
        assert await verify(world, token, code) == 200
    assert fired(await _run(world), "invalid-tokens") == []


# -- dedupe, restart, background --------------------------------------------------------------


async def _run(world: World) -> list[Alert]:
    await monitor(world).run_once()
    return await alerts(world)


async def test_a_rule_firing_twice_on_one_subject_is_one_alert(world: World) -> None:
    token = await world.token()
    await refuse(world, token, 5)
    [first] = fired(await _run(world), "refusal-burst")
    world.clock.advance(dt.timedelta(minutes=1))
    await refuse(world, token, 1)
    [again] = fired(await _run(world), "refusal-burst")
    assert again.id == first.id and again.occurrences == 2
    assert again.last_seen > first.last_seen
    assert set(first.evidence["records"]) < set(again.evidence["records"])
    assert len(again.evidence["firings"]) == 2
    # Raising is a governance record; a mere repetition is not.
    governance = await read_entries(world.gateway.engine, "governance", limit=500)
    kinds = [json.loads(e.payload)["kind"] for e in governance]
    assert kinds.count("alert.raised") == 1 and "alert.escalated" not in kinds
    # Three times the threshold within the window raises the severity of the same alert.
    await refuse(world, token, 9)
    [worse] = fired(await _run(world), "refusal-burst")
    assert (worse.id, worse.severity.value, worse.occurrences) == (first.id, "high", 3)
    governance = await read_entries(world.gateway.engine, "governance", limit=500)
    escalated = [json.loads(e.payload) for e in governance if b"alert.escalated" in e.payload]
    assert [(r["previous_severity"], r["severity"]) for r in escalated] == [("warning", "high")]


async def test_a_restarted_monitor_resumes_from_its_cursor(world: World) -> None:
    token = await world.token()
    await refuse(world, token, 5)
    first = await monitor(world).run_once()
    assert [c.event for c in first.changes] == ["raised"]
    # A new monitor (a restarted process) finds nothing new.
    again = await monitor(world).run_once()
    assert (again.start, again.records, again.changes) == (first.position, 0, [])
    # Two processes racing for the next batch: it is evaluated once.
    world.clock.advance(dt.timedelta(minutes=1))
    await refuse(world, token, 1)
    one, two = monitor(world), monitor(world)
    results = await asyncio.gather(one.step(), two.step())
    committed = [r for r in results if r is not None and r.committed]
    assert len(committed) == 1 and [c.event for c in committed[0].changes] == ["repeated"]
    [alert] = fired(await alerts(world), "refusal-burst")
    assert alert.occurrences == 2


async def test_the_background_monitor_raises_alerts_by_itself(world: World) -> None:
    background = monitor(world)
    background.start(0.05)
    try:
        token = await world.token()
        await refuse(world, token, 5)
        for _ in range(200):
            if fired(await alerts(world), "refusal-burst"):
                break
            await asyncio.sleep(0.05)
        assert background.running
    finally:
        await background.stop()
    assert len(fired(await alerts(world), "refusal-burst")) == 1


# -- HTTP -------------------------------------------------------------------------------------


async def test_alerts_are_listed_acknowledged_and_resolved_over_http(world: World) -> None:
    token = await world.token()
    await refuse(world, token, 5)
    [alert] = fired(await _run(world), "refusal-burst")
    client = world.client

    async def call(method: str, path: str, bearer: str, body: Any = None) -> tuple[int, Any]:
        resp = await client.request(
            method, path, json=body, headers={"Authorization": f"Bearer {bearer}"}
        )
        return resp.status, await resp.json(content_type=None)

    status, _ = await call("GET", "/admin/alerts", token)
    assert status == 401  # a merchant's data token is no admin token
    authority = await world.staff_token(Role.AUTHORITY)
    operator = await world.staff_token(Role.OPERATOR)
    supervisor = await world.staff_token(Role.SUPERVISOR)
    status, listed = await call("GET", "/admin/alerts", authority)
    assert status == 200 and [a["id"] for a in listed["alerts"]] == [alert.id]
    status, one = await call("GET", f"/admin/alerts/{alert.id}", authority)
    assert status == 200 and one["rule"] == "refusal-burst" and one["status"] == "open"
    for path, query in (("/admin/alerts", "?severity=bad"), ("/admin/alerts", "?limit=0")):
        status, problem = await call("GET", path + query, authority)
        assert (status, problem["type"]) == (400, "/problems/validation")
    for missing in ("999999", "abc", "99999999999", "2147483648"):
        status, problem = await call("GET", f"/admin/alerts/{missing}", authority)
        assert (status, problem["type"]) == (404, "/problems/not-found")
    status, problem = await call("POST", f"/admin/alerts/{alert.id}/acknowledge", authority, {})
    assert (status, problem["type"]) == (403, "/problems/forbidden")
    status, problem = await call("POST", f"/admin/alerts/{alert.id}/acknowledge", token, {})
    assert status == 401
    status, acked = await call(
        "POST", f"/admin/alerts/{alert.id}/acknowledge", operator, {"note": "calling them"}
    )
    assert status == 200 and acked["status"] == "acknowledged"
    assert acked["handled_by"] == world.staff[Role.OPERATOR][0]
    assert acked["evidence"]["handling"][0]["note"] == "calling them"
    status, problem = await call("POST", f"/admin/alerts/{alert.id}/acknowledge", operator, {})
    assert (status, problem["type"]) == (409, "/problems/conflict")
    resolve = f"/admin/alerts/{alert.id}/resolve"
    for body, expected in (
        ({}, 400),
        ({"resolution": "  "}, 400),
        ({"resolution": "x", "extra": 1}, 400),
        ({"resolution": "x", "measure_id": "no-such-measure"}, 404),
    ):
        status, problem = await call("POST", resolve, supervisor, body)
        assert status == expected, problem
    status, resolved = await call(
        "POST", resolve, supervisor, {"resolution": "wrong dataset configured in their app"}
    )
    assert status == 200 and resolved["status"] == "resolved"
    assert resolved["resolution"] == "wrong dataset configured in their app"
    status, problem = await call("POST", resolve, supervisor, {"resolution": "again"})
    assert (status, problem["type"]) == (409, "/problems/conflict")
    status, listed = await call("GET", "/admin/alerts", operator)
    assert listed["alerts"] == []  # resolved alerts are not listed by default
    status, listed = await call("GET", "/admin/alerts?status=resolved&rule=refusal-burst", operator)
    assert [a["id"] for a in listed["alerts"]] == [alert.id]
    governance = await read_entries(world.gateway.engine, "governance", limit=500)
    handled = [json.loads(e.payload) for e in governance]
    kinds = {r["kind"]: r for r in handled if r["kind"].startswith("alert.")}
    assert set(kinds) == {"alert.raised", "alert.acknowledged", "alert.resolved"}
    assert kinds["alert.raised"]["actor"] == {"id": "monitor", "role": "system"}
    assert kinds["alert.resolved"]["actor"]["id"] == world.staff[Role.SUPERVISOR][0]
    # After resolution the next burst is a new alert.
    await refuse(world, token, 5)
    assert len(fired(await _run(world), "refusal-burst")) == 2


# -- webhook ----------------------------------------------------------------------------------


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[tuple[dict[str, str], bytes]], list[int]]]:
    """A real HTTP receiver on loopback: answers with the queued statuses, then 200."""
    received: list[tuple[dict[str, str], bytes]] = []
    statuses: list[int] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response(status=statuses.pop(0) if statuses else 200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/hook", received, statuses
    finally:
        await runner.cleanup()


async def test_alerts_are_pushed_to_the_webhook_signed_and_retried(
    world: World, receiver: tuple[str, list[tuple[dict[str, str], bytes]], list[int]]
) -> None:
    url, received, statuses = receiver
    store = AlertStore(world.gateway.engine, world.clock, webhook=True)
    sender = WebhookSender(
        store,
        world.clock,
        url=url,
        secret="hook secret",
        deployment="dsgw.test",
        timeout=5,
        backoff=dt.timedelta(seconds=10),
    )
    try:
        token = await world.token()
        await refuse(world, token, 5)
        statuses.append(500)
        await monitor(world, store).run_once()
        assert await sender.deliver_due() == 0  # the receiver failed
        [alert] = await store.find(LOCAL_ADMIN)
        assert (alert.webhook_status, alert.webhook_attempts) == ("pending", 1)
        assert alert.webhook_next_at == world.clock.now() + dt.timedelta(seconds=10)
        assert await sender.deliver_due() == 0 and len(received) == 1  # not due yet
        world.clock.advance(dt.timedelta(seconds=11))
        assert await sender.deliver_due() == 1
        assert len(received) == 2
        headers, body = received[1]
        assert verify_signature(b"hook secret", body, headers["Dsgw-Signature"])
        assert not verify_signature(b"another secret", body, headers["Dsgw-Signature"])
        document = json.loads(body)
        assert document["event"] == "alert.open" and headers["Dsgw-Event"] == "alert.open"
        assert document["alert"]["id"] == alert.id and document["alert"]["rule"] == "refusal-burst"
        assert document["deployment"] == "dsgw.test"
        [alert] = await store.find(LOCAL_ADMIN)
        assert alert.webhook_status == "delivered"
        # Handling is pushed too.
        await store.acknowledge(LOCAL_ADMIN, alert.id, "on it")
        assert await sender.deliver_due() == 1
        assert json.loads(received[2][1])["event"] == "alert.acknowledged"
        # A repetition is not.
        world.clock.advance(dt.timedelta(minutes=1))
        await refuse(world, token, 1)
        await monitor(world, store).run_once()
        assert await sender.deliver_due() == 0 and len(received) == 3
    finally:
        await sender.close()


def test_webhook_needs_https_and_a_secret(tmp_path: Path) -> None:
    check_webhook_url("https://soc.example.gov.cn/dsgw")
    check_webhook_url("http://127.0.0.1:9000/hook")
    check_webhook_url("http://[::1]/hook")
    for bad in ("http://soc.example.gov.cn/hook", "ftp://x/y", "https://user:pw@x/y", "nothing"):
        with pytest.raises(ConfigError):
            check_webhook_url(bad)
    with pytest.raises(ConfigError, match="alert_webhook_secret"):
        load_settings(None, environ={"DSGW_ALERT_WEBHOOK_URL": "https://soc.example.gov.cn"})
    settings = load_settings(
        None,
        environ={
            "DSGW_ALERT_WEBHOOK_URL": "https://soc.example.gov.cn",
            "DSGW_ALERT_WEBHOOK_SECRET": "s3cret-value",
        },
    )
    assert "s3cret-value" not in repr(settings)
    with pytest.raises(ConfigError, match="alert_refusal_threshold"):
        load_settings(None, environ={"DSGW_ALERT_REFUSAL_THRESHOLD": "0"})


# -- audit-divergence -------------------------------------------------------------------------


async def _dsgw(world: World, *args: str) -> tuple[int, str]:
    """Run a `dsgw` command as the local administrator does, on the world's data directory
    and database (in a thread: the command runs its own event loop)."""
    from click.testing import CliRunner

    from gateway.cli.main import cli

    settings = world.gateway.settings
    env = {
        "DSGW_KEYSTORE_PASSPHRASE": "test passphrase",
        "DSGW_ALERT_REFUSAL_THRESHOLD": str(SMALL.refusal_threshold),
        "DSGW_DATABASE_URL": settings.database.url,
        "COLUMNS": "200",
    }
    result = await asyncio.to_thread(
        CliRunner().invoke, cli, ["--data-dir", str(settings.data_dir), *args], env=env
    )
    assert result.exit_code in (0, 5), (result.output, result.exception)
    return result.exit_code, result.stdout


async def _checkpointed_calls(world: World) -> None:
    token = await world.token()
    for code in codes(6):
        assert await verify(world, token, code) == 200
    assert await world.gateway.checkpointer.checkpoint("calls") is not None


async def test_a_clean_audit_raises_nothing_and_the_cli_runs_the_monitor(world: World) -> None:
    await _checkpointed_calls(world)
    await refuse(world, await world.token(), 5)
    code, out = await _dsgw(world, "audit", "--stream", "calls")
    assert code == 0, out
    code, out = await _dsgw(world, "monitor", "run", "--once", "--json")
    assert code == 0, out
    summary = json.loads(out)
    assert [c["alert"]["rule"] for c in summary["changes"]] == ["refusal-burst"]
    code, out = await _dsgw(world, "alerts", "list", "--json")
    assert code == 0, out
    assert [a["rule"] for a in json.loads(out)] == ["refusal-burst"]


async def test_a_failing_audit_raises_a_critical_alert(world: World) -> None:
    await _checkpointed_calls(world)
    async with world.gateway.engine.begin() as conn:
        row = (
            await conn.execute(
                select(LogEntryRow.payload).where(
                    LogEntryRow.stream == "calls", LogEntryRow.seq == 3
                )
            )
        ).one()
        record = json.loads(row.payload)
        record["rows"] = 1000
        await conn.execute(
            update(LogEntryRow)
            .where(LogEntryRow.stream == "calls", LogEntryRow.seq == 3)
            .values(payload=json.dumps(record, sort_keys=True, separators=(",", ":")))
        )
    code, out = await _dsgw(world, "audit")
    assert code == 5, out  # the audit's own exit code is unchanged
    async with world.gateway.engine.connect() as conn:
        rows = (await conn.execute(select(AlertRow.__table__))).all()
    [alert] = [Alert.from_row(r) for r in rows]
    assert (alert.rule, alert.key, alert.severity.value) == (
        "audit-divergence",
        "stream:calls",
        "critical",
    )
    assert "calls/3" in alert.evidence["records"]
    assert alert.evidence["figures"]["kinds"].get("edited") == 1
    # Run again while unresolved: the same alert, one more occurrence.
    code, _ = await _dsgw(world, "audit", "--stream", "calls")
    assert code == 5
    [alert] = await world.gateway.alerts.find(LOCAL_ADMIN, rule="audit-divergence")
    assert alert.occurrences == 2
