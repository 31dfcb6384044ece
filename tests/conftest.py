"""Shared fixtures: a real store (SQLite file or a fresh PostgreSQL database), a real
keystore, synthetic sources, and the gateway served over loopback HTTP."""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import encode_basic_auth
from aiohttp.test_utils import TestClient, TestServer

from connectors import synthetic
from gateway.api.app import create_app
from gateway.api.server import GatewayRunner
from gateway.authorization.roles import Role
from gateway.cli.demo import (
    DEMO_MERCHANT,
    DEMO_SCENARIO,
    REGISTRY,
    VEHICLES,
    demo_credit_code,
    demo_datasets,
    demo_scenario,
)
from gateway.clock import FixedClock
from gateway.db import create_engine, migrate
from gateway.governance.models import ScenarioStatus
from gateway.governance.service import LOCAL_ADMIN
from gateway.runtime import Gateway, initialise
from gateway.settings import Settings, load_settings
from keys.keystore import Keystore

PG_ADMIN_DSN = os.environ.get("DSGW_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
ROWS = 400
T = TypeVar("T")
TEST_PASSPHRASE = "test passphrase"
# The lowest scrypt cost the keystore accepts (production keystores are made at 2**15): the
# keystore is still sealed and verified exactly as in production, at a quarter of the cost of
# each of the two derivations every world build makes.
TEST_SCRYPT_N = 2**14


@pytest.fixture(scope="session")
def source_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic source data, made once per test run."""
    base = tmp_path_factory.mktemp("sources")
    (base / "sources").mkdir()
    synthetic.write_sqlite(
        base / REGISTRY, {"enterprises": ROWS, "social_insurance": ROWS * 3}, seed=7
    )
    synthetic.write_csv(base / VEHICLES, "vehicles", ROWS, seed=7)
    return base


async def _create_pg_database(template: str | None = None) -> str:
    import asyncpg

    name = f"dsgw_t_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        copy = f' TEMPLATE "{template}"' if template else ""
        await conn.execute(f'CREATE DATABASE "{name}"{copy}')
    finally:
        await conn.close()
    return name


def _pg_url(name: str) -> str:
    return PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + name


async def _migrated(url: str) -> None:
    engine = create_engine(url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


def _run_aside(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a loop of its own: session fixtures are first asked for
    from inside a test's running loop (``getfixturevalue`` in an async fixture)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store migrated to the newest revision once per run; each test gets a copy, which
    ``initialise`` then finds at head (the migrations themselves are tested on fresh
    databases in tests/test_store_production.py and test_governance.py)."""
    path = tmp_path_factory.mktemp("template") / "dsgw.sqlite3"
    _run_aside(_migrated(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """Like :func:`sqlite_template` for PostgreSQL: a migrated database each test's database
    is created from (``CREATE DATABASE ... TEMPLATE``)."""
    name = _run_aside(_create_pg_database())
    _run_aside(_migrated(_pg_url(name)))
    yield name
    _run_aside(_drop_pg_database(name))


async def _drop_pg_database(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def settings(
    request: pytest.FixtureRequest, tmp_path: Path, source_dir: Path
) -> AsyncIterator[Settings]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "sources").symlink_to(source_dir / "sources")
    database_url = ""
    pg_name = None
    if request.param == "postgresql":
        pg_name = await _create_pg_database(request.getfixturevalue("pg_template"))
        database_url = _pg_url(pg_name)
    else:
        shutil.copyfile(request.getfixturevalue("sqlite_template"), data_dir / "dsgw.sqlite3")
    Keystore.create(data_dir / "keystore.json", TEST_PASSPHRASE.encode(), scrypt_n=TEST_SCRYPT_N)
    settings = load_settings(
        None,
        environ={},
        data_dir=data_dir,
        database_url=database_url,
        keystore_passphrase=TEST_PASSPHRASE,
        secret_hash_time_cost=1,
        secret_hash_memory_kib=8192,
        port=0,
        chain="none",
    )
    yield settings
    if pg_name is not None:
        await _drop_pg_database(pg_name)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(dt.datetime.now(dt.UTC).replace(microsecond=0))


class GatewayTestServer(TestServer):
    """The test server with the gateway's own runner (:mod:`gateway.api.server`), so that
    requests the HTTP parser refuses take the same path as under ``dsgw serve``."""

    async def _make_runner(self, **kwargs: Any) -> GatewayRunner:
        return GatewayRunner(self.app, **kwargs)


@dataclass
class World:
    """A gateway with the demo catalog, one merchant with an agreement, staff clients."""

    gateway: Gateway
    client: TestClient  # type: ignore[type-arg]
    clock: FixedClock
    merchant_id: str
    merchant_client: tuple[str, str]
    staff: dict[Role, tuple[str, str]]
    sample: dict[str, Any]

    async def token(
        self, scope: str = f"scenario:{DEMO_SCENARIO}", creds: tuple[str, str] | None = None
    ) -> str:
        client_id, secret = creds or self.merchant_client
        resp = await self.client.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", "scope": scope},
            headers={"Authorization": encode_basic_auth(client_id, secret)},
        )
        body = await resp.json(content_type=None)
        assert resp.status == 200, body
        return str(body["access_token"])

    async def staff_token(self, role: Role) -> str:
        return await self.token("admin", self.staff[role])

    async def data(
        self, token: str, dataset: str, mode: str, body: Any, scenario: str = DEMO_SCENARIO
    ) -> tuple[int, Any, Any]:
        resp = await self.client.post(
            f"/v1/scenarios/{scenario}/datasets/{dataset}/{mode}",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        )
        return resp.status, await resp.json(content_type=None), resp.headers


async def build_world(settings: Settings, clock: FixedClock) -> tuple[Gateway, dict[str, Any]]:
    await initialise(settings, clock=clock)
    gateway = await Gateway.open(settings, clock=clock)
    gov = gateway.governance
    now = clock.now()
    for data in demo_datasets():
        await gov.register_dataset(LOCAL_ADMIN, data)
    await gov.create_scenario(LOCAL_ADMIN, demo_scenario(now))
    await gov.set_scenario_status(LOCAL_ADMIN, DEMO_SCENARIO, ScenarioStatus.PUBLISHED)
    await gov.register_merchant(
        LOCAL_ADMIN, DEMO_MERCHANT, "长沙星辰征信服务有限公司", demo_credit_code("XC")
    )
    await gov.grant_agreement(
        LOCAL_ADMIN,
        merchant_id=DEMO_MERCHANT,
        scenario_id=DEMO_SCENARIO,
        starts_at=now - dt.timedelta(hours=1),
        ends_at=now + dt.timedelta(days=365),
        shares=("40", "35", "25"),
        agreement_id="agr-demo",
    )
    merchant = await gov.issue_client(LOCAL_ADMIN, merchant_id=DEMO_MERCHANT)
    staff = {}
    for role in (Role.OPERATOR, Role.AUTHORITY, Role.SUPERVISOR):
        issued = await gov.issue_client(LOCAL_ADMIN, role=role)
        assert issued.secret
        staff[role] = (issued.client.client_id, issued.secret)
    assert merchant.secret
    return gateway, {"merchant": (merchant.client.client_id, merchant.secret), "staff": staff}


@pytest.fixture
async def world(settings: Settings, clock: FixedClock) -> AsyncIterator[World]:
    gateway, creds = await build_world(settings, clock)
    server = GatewayTestServer(create_app(gateway), host="127.0.0.1")
    client = TestClient(server)
    await client.start_server()
    try:
        yield World(
            gateway=gateway,
            client=client,
            clock=clock,
            merchant_id=DEMO_MERCHANT,
            merchant_client=creds["merchant"],
            staff=creds["staff"],
            sample=next(synthetic.generate("enterprises", 1, seed=7)),
        )
    finally:
        await client.close()
        await gateway.close()
