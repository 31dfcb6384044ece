"""Shared fixtures: a real store (SQLite file or a fresh PostgreSQL database), a real
keystore, synthetic sources, and the gateway served over loopback HTTP.

Only fixtures live here; what they build with, and what tests import by name, lives in
:mod:`tests.support`."""

from __future__ import annotations

import os

# pytest-xdist starts its workers with COLUMNS=80. Rich fixes a console's width when COLUMNS
# is set as the console is made, and the CLI's consoles are made when ``gateway.cli`` is first
# imported (below), so in a worker every in-process command would print 80-column tables
# whatever COLUMNS its test passes. Without COLUMNS a console reads it as it prints.
os.environ.pop("COLUMNS", None)

import datetime as dt
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from connectors import synthetic
from gateway.api.app import create_app
from gateway.cli.demo import DEMO_MERCHANT, REGISTRY, VEHICLES
from gateway.settings import Settings
from keys.keystore import Keystore
from tests.support.databases import (
    create_pg_database,
    drop_pg_database,
    drop_pg_database_later,
    migrated,
    pg_url,
    run_aside,
    wait_for_drops,
)
from tests.support.templates import WorldTemplate, WorldTemplates, store_settings
from tests.support.world import (
    ROWS,
    TEST_PASSPHRASE,
    TEST_SCRYPT_N,
    FixedClock,
    GatewayTestServer,
    World,
)


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


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store migrated to the newest revision once per run; each test gets a copy, which
    ``initialise`` then finds at head (the migrations themselves are tested on fresh
    databases in tests/test_store_production.py and test_governance.py)."""
    path = tmp_path_factory.mktemp("template") / "dsgw.sqlite3"
    run_aside(migrated(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """Like :func:`sqlite_template` for PostgreSQL: a migrated database each test's database
    is created from (``CREATE DATABASE ... TEMPLATE``)."""
    name = run_aside(create_pg_database())
    run_aside(migrated(pg_url(name)))
    yield name
    wait_for_drops()  # the databases made from it first
    run_aside(drop_pg_database(name))


@pytest.fixture(scope="session")
def world_templates(
    tmp_path_factory: pytest.TempPathFactory, source_dir: Path
) -> Iterator[WorldTemplates]:
    """The demo world built once per store kind and copied for each test that asks for
    ``world`` (building it takes longer than most tests that use it)."""
    templates = WorldTemplates(tmp_path_factory.mktemp("worlds"), source_dir)
    yield templates
    wait_for_drops()  # the databases made from them first
    templates.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def settings(
    request: pytest.FixtureRequest, tmp_path: Path, source_dir: Path
) -> AsyncIterator[Settings]:
    """A store of the given kind at the newest revision and a keystore; for a test that
    also asks for ``world``, a copy of the demo world's store and keystore instead."""
    data_dir = tmp_path / "data"
    template: WorldTemplate | None = None
    if "world" in request.fixturenames:
        store = "pg_template" if request.param == "postgresql" else "sqlite_template"
        templates: WorldTemplates = request.getfixturevalue("world_templates")
        start = request.getfixturevalue("clock").now()
        template = templates.get(request.param, start, lambda: request.getfixturevalue(store))
        templates.copy(template, data_dir)
    else:
        data_dir.mkdir()
        (data_dir / "sources").symlink_to(source_dir / "sources")
        Keystore.create(
            data_dir / "keystore.json", TEST_PASSPHRASE.encode(), scrypt_n=TEST_SCRYPT_N
        )
    database_url = ""
    pg_name = None
    if request.param == "postgresql":
        source = template.pg_name if template else request.getfixturevalue("pg_template")
        pg_name = await create_pg_database(source)
        database_url = pg_url(pg_name)
    elif template is None:
        shutil.copyfile(request.getfixturevalue("sqlite_template"), data_dir / "dsgw.sqlite3")
    settings = store_settings(data_dir, database_url)
    yield settings
    if pg_name is not None:
        drop_pg_database_later(pg_name)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(dt.datetime.now(dt.UTC).replace(microsecond=0))


@pytest.fixture
async def world(
    settings: Settings, clock: FixedClock, world_templates: WorldTemplates
) -> AsyncIterator[World]:
    """The demo world (:func:`tests.support.world.build_world`), copied from its template
    by the ``settings`` fixture and opened with this test's clock."""
    gateway, creds = await world_templates.open(settings, clock)
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
