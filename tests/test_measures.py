"""Supervision measures over loopback HTTP, on SQLite and PostgreSQL: each kind stops the very
next call, whether imposed through this gateway's API or by another process on the same
store, and lifting it restores the next call; both are governance records."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import encode_basic_auth, web
from aiohttp.test_utils import TestServer
from click.testing import CliRunner
from sqlalchemy import func, select

from gateway.authorization.roles import Role
from gateway.cli.demo import DEMO_MERCHANT, DEMO_SCENARIO, demo_credit_code
from gateway.cli.main import cli
from gateway.db.schema import TradeRow
from gateway.errors import ConflictError, ForbiddenError, MeasureInForceError
from gateway.governance.models import ScenarioStatus
from gateway.governance.service import LOCAL_ADMIN, Actor
from gateway.ledger.log import read_entries, read_entry
from gateway.runtime import Gateway
from tests.support.world import World

Call = Callable[[], Awaitable[tuple[int, Any]]]
BUYER = demo_credit_code("BY")
MEASURE_ID = re.compile(r"^m-[0-9a-f]{12}$")


def _verify_body(world: World) -> dict[str, Any]:
    return {
        "values": {
            "credit_code": world.sample["credit_code"],
            "legal_rep_name": world.sample["legal_rep_name"],
        }
    }


async def _request(
    world: World, method: str, path: str, token: str, body: Any = None
) -> tuple[int, Any]:
    resp = await world.client.request(
        method, path, json=body, headers={"Authorization": f"Bearer {token}"}
    )
    return resp.status, await resp.json(content_type=None)


async def _admin(
    world: World, method: str, path: str, role: Role, body: Any = None
) -> tuple[int, Any]:
    return await _request(world, method, path, await world.staff_token(role), body)


async def _token_request(world: World, creds: tuple[str, str], scope: str) -> tuple[int, Any]:
    resp = await world.client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": scope},
        headers={"Authorization": encode_basic_auth(*creds)},
    )
    return resp.status, await resp.json(content_type=None)


async def _governance(world: World) -> list[dict[str, Any]]:
    entries = await read_entries(world.gateway.engine, "governance", limit=1000, newest_first=False)
    records = [json.loads(e.payload) for e in entries]
    return [r for r in records if r["kind"] in ("measure.impose", "measure.lift")]


def _stopped(status: int, body: Any, measure_id: str) -> bool:
    return (
        status == 403
        and body["type"] == "/problems/measure-in-force"
        and body["measure"] == measure_id
        and "contact the data bureau" in body["detail"]
    )


async def _cycle(
    world: World,
    kind: str,
    target: str,
    call: Call,
    in_force: Callable[[str], Awaitable[None]] | None = None,
) -> None:
    """The call works; a measure imposed over HTTP (supervisor) stops the next one; lifted
    (authority) it works again; the same through a second gateway on the same store, as
    the CLI in another process would."""
    status, body = await call()
    assert status == 200, body
    status, measure = await _admin(
        world,
        "POST",
        "/admin/measures",
        Role.SUPERVISOR,
        {"kind": kind, "target": target, "reason": f"{kind} misuse found", "basis": "CS23 art. 26"},
    )
    assert status == 201, measure
    assert MEASURE_ID.match(measure["id"])
    assert (measure["kind"], measure["target"], measure["status"]) == (kind, target, "active")
    assert measure["imposed_by"] == world.staff[Role.SUPERVISOR][0]
    status, body = await call()
    assert _stopped(status, body, measure["id"]), body
    assert body["measure_kind"] == kind and body["measure_target"] == target
    assert f"{kind} misuse found" in body["detail"] and "CS23 art. 26" in body["detail"]
    if in_force is not None:
        await in_force(measure["id"])
    status, lifted = await _admin(
        world,
        "POST",
        f"/admin/measures/{measure['id']}/lift",
        Role.AUTHORITY,
        {"reason": "remedied"},
    )
    assert status == 200, lifted
    assert lifted["status"] == "lifted" and lifted["lift_reason"] == "remedied"
    assert lifted["lifted_by"] == world.staff[Role.AUTHORITY][0]
    status, body = await call()
    assert status == 200, body

    other = await Gateway.open(world.gateway.settings, clock=world.clock)
    try:
        second = await other.measures.impose(LOCAL_ADMIN, kind, target, "found again")
        status, body = await call()
        assert _stopped(status, body, second.id), body
        await other.measures.lift(LOCAL_ADMIN, second.id, "remedied again")
        status, body = await call()
        assert status == 200, body
    finally:
        await other.close()

    records = await _governance(world)
    assert [(r["kind"], r["measure_id"], r["target_kind"], r["target_id"]) for r in records] == [
        ("measure.impose", measure["id"], kind, target),
        ("measure.lift", measure["id"], kind, target),
        ("measure.impose", second.id, kind, target),
        ("measure.lift", second.id, kind, target),
    ]
    assert records[0]["reason"] == f"{kind} misuse found" and records[0]["basis"] == "CS23 art. 26"
    assert records[0]["actor"] == {"id": world.staff[Role.SUPERVISOR][0], "role": "supervisor"}
    assert records[1]["lift_reason"] == "remedied" and records[1]["reason"] == records[0]["reason"]
    assert records[3]["actor"]["role"] == "local-admin"


async def test_dataset_supply_measure(world: World) -> None:
    token = await world.token()

    async def call() -> tuple[int, Any]:
        status, body, _ = await world.data(token, "enterprises", "verify", _verify_body(world))
        return status, body

    async def in_force(measure_id: str) -> None:
        # Every mode on the dataset is stopped, and the refusal is logged with its reason.
        status, body, headers = await world.data(
            token,
            "enterprises",
            "aggregate",
            {"group_by": ["district"], "measures": [{"fn": "count"}]},
        )
        assert _stopped(status, body, measure_id), body
        stream, seq = headers["Dsgw-Record-Id"].split("/")
        entry = await read_entry(world.gateway.engine, stream, int(seq))
        assert entry is not None
        record = json.loads(entry.payload)
        assert (record["decision"], record["reason"]) == ("deny", "measure-in-force")
        assert record["dataset"] == "enterprises"
        # Another dataset of the same scenario still answers.
        status, body, _ = await world.data(
            token,
            "social-insurance",
            "aggregate",
            {"group_by": ["district"], "measures": [{"fn": "count"}]},
        )
        assert status == 200, body

    await _cycle(world, "dataset-supply", "enterprises", call, in_force)


async def test_merchant_channel_measure(world: World) -> None:
    gov = world.gateway.governance
    now = world.clock.now()
    await gov.merchants.register_merchant(
        LOCAL_ADMIN, "other-credit", "另一家征信公司", demo_credit_code("OT")
    )
    await gov.agreements.grant_agreement(
        LOCAL_ADMIN,
        merchant_id="other-credit",
        scenario_id=DEMO_SCENARIO,
        starts_at=now.replace(year=now.year - 1),
        ends_at=now.replace(year=now.year + 1),
        shares=("40", "35", "25"),
    )
    other_client = await gov.clients.issue_client(LOCAL_ADMIN, merchant_id="other-credit")
    assert other_client.secret
    other_creds = (other_client.client.client_id, other_client.secret)
    token = await world.token()

    async def call() -> tuple[int, Any]:
        status, body, _ = await world.data(token, "enterprises", "verify", _verify_body(world))
        return status, body

    async def in_force(measure_id: str) -> None:
        # No new scenario token for the merchant.
        status, body = await _token_request(
            world, world.merchant_client, f"scenario:{DEMO_SCENARIO}"
        )
        assert _stopped(status, body, measure_id) and body["error"] == "invalid_scope", body
        # Its account surface keeps working, so it can see where it stands.
        account = await world.token("account")
        for path in ("/v1/products", "/v1/applications"):
            status, body = await _request(world, "GET", path, account)
            assert status == 200, (path, body)
        # Another merchant in the same scenario is not touched.
        other = await world.token(creds=other_creds)
        status, body, _ = await world.data(other, "enterprises", "verify", _verify_body(world))
        assert status == 200, body

    await _cycle(world, "merchant-channel", DEMO_MERCHANT, call, in_force)
    # Lifted: new tokens are issued again.
    assert (await _token_request(world, world.merchant_client, f"scenario:{DEMO_SCENARIO}"))[
        0
    ] == 200


async def test_scenario_measure(world: World) -> None:
    token = await world.token()

    async def call() -> tuple[int, Any]:
        status, body, _ = await world.data(token, "enterprises", "verify", _verify_body(world))
        return status, body

    async def in_force(measure_id: str) -> None:
        status, body = await _token_request(
            world, world.merchant_client, f"scenario:{DEMO_SCENARIO}"
        )
        assert _stopped(status, body, measure_id), body
        # Unlike the scenario's own status, republishing does not undo a measure.
        gov = world.gateway.governance
        await gov.scenarios.set_scenario_status(
            LOCAL_ADMIN, DEMO_SCENARIO, ScenarioStatus.SUSPENDED, "x"
        )
        await gov.scenarios.set_scenario_status(
            LOCAL_ADMIN, DEMO_SCENARIO, ScenarioStatus.PUBLISHED
        )
        status, body = await call()
        assert _stopped(status, body, measure_id), body

    await _cycle(world, "scenario", DEMO_SCENARIO, call, in_force)


@pytest.fixture
async def service() -> AsyncIterator[TestServer]:
    """The processor's scoring service behind the product."""

    async def score(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"credit_code": body["credit_code"], "score": 87})

    app = web.Application()
    app.router.add_post("/score", score)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


def _trade(world: World, trade_id: str) -> dict[str, Any]:
    return {
        "exchange_trade_id": trade_id,
        "product": "credit-score",
        "buyer_code": BUYER,
        "buyer_name": "湘江银行",
        "quantity": 10,
        "unit_price": "0.50",
        "traded_at": world.clock.now().isoformat(),
    }


async def test_product_measure(world: World, service: TestServer) -> None:
    gov, products = world.gateway.governance, world.gateway.products
    await products.register(
        LOCAL_ADMIN,
        DEMO_MERCHANT,
        {
            "id": "credit-score",
            "name": "企业经营稳健度评分",
            "scenario": DEMO_SCENARIO,
            "delivery": "api",
            "endpoint": str(service.make_url("/score")),
            "inputs": [{"dataset": "enterprises", "fields": ["credit_code", "status"]}],
            "outputs": [
                {"name": "credit_code", "derivation": "key", "from": ["enterprises.credit_code"]},
                {"name": "score", "derivation": "score", "from": ["enterprises.status"]},
            ],
            "unit_price": "0.50",
        },
    )
    await products.check_export(LOCAL_ADMIN, "credit-score", approve=True)
    await products.file(LOCAL_ADMIN, "credit-score", "湘数备-2026-001")
    await products.list_on_exchange(LOCAL_ADMIN, "credit-score", "SZDE-001")
    await products.record_trade(LOCAL_ADMIN, _trade(world, "T-1"))
    exchange = await gov.clients.issue_client(LOCAL_ADMIN, role=Role.EXCHANGE)
    buyer = await gov.clients.issue_client(LOCAL_ADMIN, buyer_code=BUYER)
    assert exchange.secret and buyer.secret
    exchange_token = await world.token("admin", (exchange.client.client_id, exchange.secret))
    buyer_creds = (buyer.client.client_id, buyer.secret)
    delivery = await world.token("product:credit-score", buyer_creds)

    async def call() -> tuple[int, Any]:
        return await _request(
            world, "POST", "/v1/products/credit-score/deliveries", delivery, {"credit_code": "9143"}
        )

    async def in_force(measure_id: str) -> None:
        # The exchange cannot record a new trade of the product, nor a buyer get a token.
        status, body = await _request(
            world, "POST", "/admin/trades", exchange_token, _trade(world, "T-2")
        )
        assert _stopped(status, body, measure_id), body
        status, body = await _token_request(world, buyer_creds, "product:credit-score")
        assert _stopped(status, body, measure_id), body
        # The product's own status is untouched: lifting the measure is what restores it.
        assert (await products.get("credit-score")).status.value == "listed"

    await _cycle(world, "product", "credit-score", call, in_force)
    status, body = await _request(
        world, "POST", "/admin/trades", exchange_token, _trade(world, "T-2")
    )
    assert status == 201, body
    async with world.gateway.engine.connect() as conn:
        # Three deliveries answered; refused ones took no unit.
        assert await conn.scalar(select(func.sum(TradeRow.used))) == 3


async def test_who_may_impose_and_bad_requests(world: World) -> None:
    impose = {"kind": "dataset-supply", "target": "enterprises", "reason": "incident"}
    for role in (Role.OPERATOR,):
        status, body = await _admin(world, "POST", "/admin/measures", role, impose)
        assert status == 403 and body["action"] == "measure.impose", body
    exchange = await world.gateway.governance.clients.issue_client(LOCAL_ADMIN, role=Role.EXCHANGE)
    assert exchange.secret
    exchange_token = await world.token("admin", (exchange.client.client_id, exchange.secret))
    status, body = await _request(world, "POST", "/admin/measures", exchange_token, impose)
    assert status == 403, body
    # A merchant has no admin token at all; in the domain it is refused as well.
    account = await world.token("account")
    assert (await _request(world, "POST", "/admin/measures", account, impose))[0] == 401
    service = world.gateway.measures
    for actor in (Actor("m", merchant_id=DEMO_MERCHANT), Actor("op", Role.OPERATOR)):
        with pytest.raises(ForbiddenError):
            await service.impose(actor, "dataset-supply", "enterprises", "incident")

    for kind in ("dataset-supply", "merchant-channel", "scenario", "product"):
        status, body = await _admin(
            world,
            "POST",
            "/admin/measures",
            Role.SUPERVISOR,
            {"kind": kind, "target": "no-such-thing", "reason": "x"},
        )
        assert status == 404 and body["type"] == "/problems/not-found", (kind, body)
    bad: list[tuple[dict[str, Any], str]] = [
        ({"kind": "dataset-supply", "target": "enterprises"}, "missing"),
        ({**impose, "reason": "   "}, "reason"),
        ({**impose, "reason": "x" * 2001}, "2000"),
        ({**impose, "reason": 7}, "reason"),
        ({**impose, "kind": "everything"}, "kind"),
        ({**impose, "basis": "b" * 201}, "basis"),
        ({**impose, "until": "tomorrow"}, "unknown"),
    ]
    for body_in, word in bad:
        status, body = await _admin(world, "POST", "/admin/measures", Role.SUPERVISOR, body_in)
        assert status == 400, (body_in, body)
        assert word in body["detail"], (body_in, body)
    assert await _governance(world) == []  # nothing refused left a record

    status, first = await _admin(world, "POST", "/admin/measures", Role.SUPERVISOR, impose)
    assert status == 201
    status, body = await _admin(world, "POST", "/admin/measures", Role.AUTHORITY, impose)
    assert status == 409 and body["measure"] == first["id"] and first["id"] in body["detail"]
    # The same target under another kind is another measure.
    world.clock.advance(dt.timedelta(seconds=1))  # listings are oldest first
    status, body = await _admin(
        world,
        "POST",
        "/admin/measures",
        Role.AUTHORITY,
        {"kind": "merchant-channel", "target": DEMO_MERCHANT, "reason": "r"},
    )
    assert status == 201, body
    second = body

    # Operators see measures but may not lift them.
    status, listed = await _admin(world, "GET", "/admin/measures", Role.OPERATOR)
    assert status == 200 and listed["status"] == "active"
    assert [m["id"] for m in listed["measures"]] == [first["id"], second["id"]]
    status, shown = await _admin(world, "GET", f"/admin/measures/{first['id']}", Role.OPERATOR)
    assert status == 200 and shown["reason"] == "incident" and len(shown["records"]) == 1
    lift_path = f"/admin/measures/{first['id']}/lift"
    status, body = await _admin(world, "POST", lift_path, Role.OPERATOR, {"reason": "x"})
    assert status == 403 and body["action"] == "measure.lift"
    assert (await _admin(world, "POST", lift_path, Role.SUPERVISOR, {}))[0] == 400
    assert (await _admin(world, "POST", lift_path, Role.SUPERVISOR, {"reason": " "}))[0] == 400
    status, body = await _admin(world, "POST", lift_path, Role.SUPERVISOR, {"reason": "ok"})
    assert status == 200, body
    status, body = await _admin(world, "POST", lift_path, Role.AUTHORITY, {"reason": "again"})
    assert status == 409 and body["measure"] == first["id"] and "already lifted" in body["detail"]
    missing = "/admin/measures/m-000000000000"
    assert (await _admin(world, "POST", f"{missing}/lift", Role.SUPERVISOR, {"reason": "x"}))[
        0
    ] == 404
    assert (await _admin(world, "GET", missing, Role.SUPERVISOR))[0] == 404

    async def ids(query: str) -> list[str]:
        status, body = await _admin(world, "GET", f"/admin/measures{query}", Role.SUPERVISOR)
        assert status == 200, body
        return [m["id"] for m in body["measures"]]

    assert await ids("") == [second["id"]]
    assert await ids("?status=lifted") == [first["id"]]
    assert await ids("?status=all") == [first["id"], second["id"]]
    status, body = await _admin(world, "GET", "/admin/measures?status=bogus", Role.SUPERVISOR)
    assert status == 400 and body["type"] == "/problems/validation"
    status, shown = await _admin(world, "GET", f"/admin/measures/{first['id']}", Role.SUPERVISOR)
    assert shown["status"] == "lifted" and len(shown["records"]) == 2
    # The records named are the measure's own governance records.
    for record_id, kind in zip(shown["records"], ("measure.impose", "measure.lift"), strict=True):
        entry = await read_entry(world.gateway.engine, "governance", int(record_id.split("/")[1]))
        assert entry is not None
        payload = json.loads(entry.payload)
        assert (payload["kind"], payload["measure_id"]) == (kind, first["id"])


def test_measure_error_names_the_measure() -> None:
    from gateway.supervision.measures import Measure, MeasureKind, MeasureStatus

    measure = Measure(
        "m-0123456789ab",
        MeasureKind.DATASET_SUPPLY,
        "enterprises",
        MeasureStatus.ACTIVE,
        "leak under investigation",
        None,
        "supervisor-1",
        dt.datetime(2026, 7, 1, tzinfo=dt.UTC),
    )
    error = measure.refusal()
    assert isinstance(error, MeasureInForceError) and error.status == 403
    assert error.detail == (
        "supply of dataset enterprises is suspended by supervision measure m-0123456789ab: "
        "leak under investigation; contact the data bureau"
    )
    assert error.extensions == {
        "measure": "m-0123456789ab",
        "measure_kind": "dataset-supply",
        "measure_target": "enterprises",
    }


def _dsgw(world: World, *args: str) -> tuple[int, str]:
    """One ``dsgw`` command on the world's data directory, with its own gateway, as a user
    at the console runs it beside the serving process."""
    settings = world.gateway.settings
    prefix = ["--data-dir", str(settings.data_dir)]
    if settings.database.url:
        prefix += ["--database-url", settings.database.url]
    result = CliRunner().invoke(
        cli,
        [*prefix, *args],
        env={"DSGW_KEYSTORE_PASSPHRASE": "test passphrase", "COLUMNS": "200"},
        catch_exceptions=False,
    )
    # Success: stdout only (log records go to stderr); failure: the error message too.
    return result.exit_code, result.stdout if result.exit_code == 0 else result.output


async def test_cli_verbs(world: World) -> None:
    token = await world.token()

    async def verify() -> tuple[int, Any]:
        status, body, _ = await world.data(token, "enterprises", "verify", _verify_body(world))
        return status, body

    async def dsgw(*args: str) -> tuple[int, str]:
        return await asyncio.to_thread(_dsgw, world, *args)

    assert (await verify())[0] == 200
    code, out = await dsgw(
        "measure",
        "impose",
        "dataset-supply",
        "enterprises",
        "--reason",
        "source breach",
        "--basis",
        "ZW art. 27",
        "--json",
    )
    assert code == 0, out
    imposed = json.loads(out)
    assert imposed["status"] == "active" and imposed["imposed_by"] == "local-admin"
    # The serving gateway sees the console's measure on its next call (epoch file).
    status, body = await verify()
    assert _stopped(status, body, imposed["id"]), body

    code, out = await dsgw("measure", "impose", "dataset-supply", "enterprises", "--reason", "x")
    assert code == 4 and imposed["id"] in out, out
    code, out = await dsgw("measure", "impose", "product", "no-such", "--reason", "x")
    assert code == 3 and "does not exist" in out, out
    code, out = await dsgw("measure", "impose", "everything", "enterprises", "--reason", "x")
    assert code == 2, out
    code, out = await dsgw("measure", "list")
    assert code == 0 and imposed["id"] in out and "source breach" in out, out

    code, out = await dsgw("measure", "lift", imposed["id"], "--reason", "fixed")
    assert code == 0 and "lifted" in out, out
    assert (await verify())[0] == 200
    code, out = await dsgw("measure", "list", "--lifted", "--json")
    assert code == 0 and [m["lift_reason"] for m in json.loads(out)] == ["fixed"], out
    code, out = await dsgw("measure", "show", imposed["id"])
    assert code == 0 and "fixed" in out and out.count("governance/") == 2, out


async def test_concurrent_impositions_leave_one_measure(world: World) -> None:
    """Two supervisors, two processes, the same target at once: one measure, one conflict."""
    other = await Gateway.open(world.gateway.settings, clock=world.clock)
    try:
        results = await asyncio.gather(
            world.gateway.measures.impose(LOCAL_ADMIN, "scenario", DEMO_SCENARIO, "first"),
            other.measures.impose(LOCAL_ADMIN, "scenario", DEMO_SCENARIO, "second"),
            return_exceptions=True,
        )
    finally:
        await other.close()
    imposed = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(imposed) == 1 and len(refused) == 1, results
    assert isinstance(refused[0], ConflictError), refused
    assert [m.id for m in await world.gateway.measures.list(LOCAL_ADMIN)] == [imposed[0].id]
    assert [r["kind"] for r in await _governance(world)] == ["measure.impose"]

    other = await Gateway.open(world.gateway.settings, clock=world.clock)
    try:
        results = await asyncio.gather(
            world.gateway.measures.lift(LOCAL_ADMIN, imposed[0].id, "first"),
            other.measures.lift(LOCAL_ADMIN, imposed[0].id, "second"),
            return_exceptions=True,
        )
    finally:
        await other.close()
    lifted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(lifted) == 1 and len(refused) == 1, results
    assert isinstance(refused[0], ConflictError), refused
    stored = await world.gateway.measures.get(LOCAL_ADMIN, imposed[0].id)
    assert stored.lift_reason == lifted[0].lift_reason
    assert [r["kind"] for r in await _governance(world)] == ["measure.impose", "measure.lift"]
