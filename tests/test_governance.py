"""Catalog, scenario, merchant and agreement rules, through the service and the admin API."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from gateway.authorization.roles import Role
from gateway.cli.demo import DEMO_MERCHANT, DEMO_SCENARIO, demo_credit_code, demo_scenario
from gateway.db.reading import read_engine, sync_url
from gateway.db.schema import Base
from gateway.errors import (
    CatalogError,
    ConfigError,
    ConflictError,
    ForbiddenError,
    ValidationError,
)
from gateway.governance.listings import (
    AGREEMENTS,
    DATASETS,
    MERCHANTS,
    SCENARIOS,
    list_agreements,
    list_datasets,
    list_merchants,
    list_scenarios,
)
from gateway.governance.service import LOCAL_ADMIN, Actor
from gateway.governance.statuses import ScenarioStatus
from gateway.ledger.log import read_entries
from tests.support.world import World


def _scenario_with(world: World, dataset: str, scenario_id: str) -> dict[str, Any]:
    data = demo_scenario(world.clock.now()) | {"id": scenario_id}
    data["grants"] = [
        {"dataset": dataset, "modes": ["verify"], "verify_fields": ["person_id", "district"]}
    ]
    return data


async def test_not_open_and_negative_list_never_granted(world: World) -> None:
    gov = world.gateway.governance
    with pytest.raises(CatalogError, match="not open"):
        await gov.scenarios.create_scenario(
            LOCAL_ADMIN, _scenario_with(world, "household-registry", "s1")
        )
    negative = {
        "id": "tax-arrears",
        "name": "欠税名单",
        "provider": "税务局",
        "fields": [{"name": "person_id", "type": "string"}, {"name": "district", "type": "string"}],
        "open_attribute": "conditional",
        "negative_list": True,
        "key_fields": ["person_id"],
        "subject_field": "person_id",
        "source": {"kind": "csv", "path": "sources/none.csv"},
    }
    await gov.catalog.register_dataset(LOCAL_ADMIN, negative)
    with pytest.raises(CatalogError, match="negative list"):
        await gov.scenarios.create_scenario(LOCAL_ADMIN, _scenario_with(world, "tax-arrears", "s2"))
    # Over HTTP it is a 422 problem naming the dataset.
    token = await world.staff_token(Role.AUTHORITY)
    resp = await world.client.post(
        "/admin/scenarios",
        json=_scenario_with(world, "tax-arrears", "s3"),
        headers={"Authorization": f"Bearer {token}"},
    )
    body = await resp.json(content_type=None)
    assert resp.status == 422 and body["type"] == "/problems/catalog-rule"
    assert body["dataset"] == "tax-arrears"


async def test_dataset_moved_to_negative_list_blocks_grant_and_calls(world: World) -> None:
    gov = world.gateway.governance
    snapshot = await gov.snapshot()
    enterprises = snapshot.datasets["enterprises"].to_dict() | {"negative_list": True}
    token = await world.token()
    await gov.catalog.register_dataset(LOCAL_ADMIN, enterprises, replace_existing=True)
    status, _body, _ = await world.data(
        token,
        "enterprises",
        "verify",
        {"values": {"credit_code": world.sample["credit_code"], "name": "x"}},
    )
    assert status == 403
    await gov.merchants.register_merchant(
        LOCAL_ADMIN, "second", "第二公司", demo_credit_code("SEC")
    )
    now = world.clock.now()
    with pytest.raises(CatalogError):
        await gov.agreements.grant_agreement(
            LOCAL_ADMIN,
            merchant_id="second",
            scenario_id=DEMO_SCENARIO,
            starts_at=now,
            ends_at=now + dt.timedelta(days=10),
            shares=(40, 30, 30),
        )


async def test_agreement_terms(world: World) -> None:
    gov = world.gateway.governance
    start = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    common: dict[str, Any] = {
        "merchant_id": DEMO_MERCHANT,
        "scenario_id": DEMO_SCENARIO,
        "starts_at": start,
    }
    with pytest.raises(ValidationError, match="at most 3 years"):
        await gov.agreements.grant_agreement(
            LOCAL_ADMIN,
            **common,
            ends_at=start + dt.timedelta(days=3 * 365 + 2),
            shares=(40, 30, 30),
        )
    with pytest.raises(ValidationError, match="sum to 100"):
        await gov.agreements.grant_agreement(
            LOCAL_ADMIN, **common, ends_at="2027-03-01", shares=(40, 30, 31)
        )
    with pytest.raises(ValidationError):
        await gov.agreements.grant_agreement(
            LOCAL_ADMIN, **common, ends_at="2027-03-01", shares=("40.001", 30, "29.999")
        )
    exactly_three = await gov.agreements.grant_agreement(
        LOCAL_ADMIN, **common, ends_at="2029-03-01", shares=("33.34", "33.33", "33.33")
    )
    assert exactly_three.ends_at.year == 2029
    draft = demo_scenario(world.clock.now()) | {"id": "draft-only"}
    await gov.scenarios.create_scenario(LOCAL_ADMIN, draft)
    with pytest.raises(ConflictError, match="published"):
        await gov.agreements.grant_agreement(
            LOCAL_ADMIN,
            merchant_id=DEMO_MERCHANT,
            scenario_id="draft-only",
            starts_at=start,
            ends_at="2027-01-01",
            shares=(40, 30, 30),
        )


async def test_merchant_credit_code_checked(world: World) -> None:
    gov = world.gateway.governance
    good = demo_credit_code("OK")
    bad = good[:-1] + ("0" if good[-1] != "0" else "1")
    with pytest.raises(ValidationError, match="check character"):
        await gov.merchants.register_merchant(LOCAL_ADMIN, "bad-code", "坏公司", bad)
    with pytest.raises(ConflictError):
        await gov.merchants.register_merchant(LOCAL_ADMIN, "dup", "重复", demo_credit_code("XC"))


async def test_roles_see_only_their_surface(world: World) -> None:
    operator = await world.staff_token(Role.OPERATOR)
    authority = await world.staff_token(Role.AUTHORITY)
    supervisor = await world.staff_token(Role.SUPERVISOR)

    async def post(token: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        resp = await world.client.post(
            path, json=body, headers={"Authorization": f"Bearer {token}"}
        )
        return resp.status, await resp.json(content_type=None)

    scenario = demo_scenario(world.clock.now()) | {"id": "by-authority"}
    assert (await post(operator, "/admin/scenarios", scenario))[0] == 403
    assert (await post(authority, "/admin/scenarios", scenario))[0] == 201
    assert (await post(authority, "/admin/scenarios/by-authority/status", {"status": "published"}))[
        0
    ] == 200
    merchant = {"id": "new-merchant", "name": "新商户", "credit_code": demo_credit_code("NM")}
    assert (await post(authority, "/admin/merchants", merchant))[0] == 403
    assert (await post(operator, "/admin/merchants", merchant))[0] == 201
    status, client = await post(operator, "/admin/clients", {"merchant_id": "new-merchant"})
    assert status == 201 and client["client_secret"].startswith("dsgw_cs_")
    agreement = {
        "merchant_id": "new-merchant",
        "scenario_id": "by-authority",
        "starts_at": "2026-01-01",
        "ends_at": "2027-06-30",
        "shares": {"owner": "40", "operator": "30", "processor": "30"},
    }
    assert (await post(operator, "/admin/agreements", agreement))[0] == 403
    assert (await post(authority, "/admin/agreements", agreement))[0] == 201
    assert (
        await post(
            supervisor,
            "/admin/merchants/new-merchant/status",
            {"status": "suspended", "reason": "inspection"},
        )
    )[0] == 200
    assert (await post(supervisor, "/admin/merchants/new-merchant/status", {"status": "active"}))[
        0
    ] == 403
    status, problem = await post(
        operator, "/admin/scenarios/by-authority/status", {"status": "retired"}
    )
    assert status == 403
    status, problem = await post(
        authority, "/admin/scenarios/by-authority/status", {"status": "bogus"}
    )
    assert status == 400, problem
    status, _problem = await post(
        authority, "/admin/scenarios/by-authority/status", {"status": "draft"}
    )
    assert status == 409


async def test_every_change_is_a_governance_record(world: World) -> None:
    entries = await read_entries(world.gateway.engine, "governance", limit=500, newest_first=False)
    kinds = [e.kind for e in entries]
    assert kinds[:4] == ["dataset.registered"] * 4
    for kind in (
        "scenario.created",
        "scenario.published",
        "merchant.registered",
        "agreement.granted",
        "client.issued",
    ):
        assert kind in kinds
    everything = b"".join(e.payload for e in entries).decode()
    assert world.merchant_client[1] not in everything
    assert "$argon2" not in everything
    assert all(json.loads(e.payload)["actor"]["role"] == "local-admin" for e in entries)


async def test_actor_without_permission_refused_in_service(world: World) -> None:
    with pytest.raises(ForbiddenError):
        await world.gateway.governance.merchants.register_merchant(
            Actor("someone", Role.EXCHANGE), "x", "x", demo_credit_code("X1")
        )


async def test_migrations_match_models(world: World) -> None:
    async with world.gateway.engine.connect() as conn:
        diff = await conn.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
        )
    assert diff == []


async def test_core_listings_read_what_the_policy_holds(world: World) -> None:
    """``dsgw merchant|agreement|dataset|scenario list`` read through SQLAlchemy Core and the
    synchronous driver (gateway/db/reading.py), naming their tables apart from the mapped
    schema: on both stores they must show what the policy holds."""
    world.clock.advance(dt.timedelta(minutes=1))  # registered after the demo merchant
    await world.gateway.governance.merchants.register_merchant(
        LOCAL_ADMIN, "a-listed", "列表商户", demo_credit_code("a-listed")
    )
    snapshot = await world.gateway.governance.snapshot()
    engine = read_engine(world.gateway.settings)
    try:
        with engine.connect() as conn:
            merchants = list_merchants(conn)
            agreements = list_agreements(conn)
            datasets = list_datasets(conn)
            scenarios = list_scenarios(conn)
    finally:
        engine.dispose()
    assert {m.id: (m.name, m.credit_code, m.status) for m in merchants} == {
        m.id: (m.name, m.credit_code, m.status) for m in snapshot.merchants.values()
    }
    assert merchants[-1].id == "a-listed"  # oldest first, not by id
    assert {
        a.id: (a.merchant_id, a.scenario_id, a.starts_at, a.ends_at, a.status) for a in agreements
    } == {
        a.id: (a.merchant_id, a.scenario_id, a.starts_at, a.ends_at, a.status)
        for a in snapshot.agreements.values()
    }
    assert all(a.starts_at.tzinfo is not None for a in agreements)
    assert datasets == list(snapshot.datasets.values())
    assert scenarios == list(snapshot.scenarios.values())
    assert {s.status for s in scenarios} >= {ScenarioStatus.PUBLISHED}


def test_core_listing_tables_are_in_the_mapped_schema() -> None:
    for listed in (MERCHANTS, AGREEMENTS, DATASETS, SCENARIOS):
        mapped = Base.metadata.tables[listed.name]
        assert {c.name for c in listed.c} <= {c.name for c in mapped.c}, listed.name
        for c in listed.c:
            assert c.type._type_affinity is mapped.c[c.name].type._type_affinity, c.name


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite+aiosqlite:////data/dsgw.sqlite3", "sqlite:////data/dsgw.sqlite3"),
        (
            "postgresql+asyncpg://dsgw:s3cret@db.example:5432/dsgw",
            "postgresql+psycopg://dsgw:s3cret@db.example:5432/dsgw",
        ),
    ],
)
def test_sync_url_keeps_the_store_and_swaps_the_driver(url: str, expected: str) -> None:
    assert sync_url(url) == expected


def test_sync_url_refuses_other_dialects() -> None:
    with pytest.raises(ConfigError, match="unsupported URL scheme"):
        sync_url("mysql+aiomysql://u@h/db")
