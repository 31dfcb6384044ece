"""Sources contained (issue 13, item 4), over a real server on SQLite and PostgreSQL.

Where source rows may live is the local administrator's allow-list; the gateway's own
store, keystore and data directory are never a source; source passwords are secret
references resolved when the source is opened (proved against a private PostgreSQL that
checks passwords) and never in the catalog, a listing, a record or a log line; locations
are shown only to the authority and the owning department; a department registers only
under its own provider.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import insert, select
from sqlalchemy.engine import make_url

from connectors import synthetic
from gateway.authorization.roles import Role
from gateway.catalog.allowlist import HostRule
from gateway.catalog.secrets import SourceSecrets
from gateway.catalog.sources import SourceAccess, SourceRules
from gateway.cli.demo import demo_datasets, demo_scenario
from gateway.db.schema import DatasetRow, LogEntryRow
from gateway.errors import ConfigError, ForbiddenError, KeystoreError, SourceUnavailableError
from gateway.governance.service import LOCAL_ADMIN, Actor
from gateway.settings import Settings, load_settings
from keys.keystore import Keystore
from tests.support.enrolment import publish_scenario
from tests.support.world import World

MARKET = "市场监督管理局"  # provider of the demo's enterprises
PG_TYPES = {"string": "text", "integer": "bigint", "decimal": "numeric", "date": "date"}


# -- a PostgreSQL that checks passwords ------------------------------------------------------


@dataclass(frozen=True)
class PasswordPg:
    """A private PostgreSQL with scram-sha-256 authentication and an ``enterprises`` table:
    a query through it succeeds only with the right password (the shared test server
    trusts every connection, so it could not tell)."""

    port: int
    password: str

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def password_pg() -> Iterator[PasswordPg]:
    binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    assert binaries, "PostgreSQL server binaries are needed (apt: postgresql)"
    bin_dir = binaries[-1]
    base = Path(tempfile.mkdtemp(prefix="dsgw-source-pg-"))
    as_owner: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        as_owner = ["runuser", "-u", "postgres", "--"]
        shutil.chown(base, "postgres")
    password = secrets.token_urlsafe(18)
    pwfile = base / "pw"
    pwfile.write_text(password)
    if as_owner:
        shutil.chown(pwfile, "postgres")
    data = base / "pg"
    port = _free_port()
    initdb = ["-D", str(data), "-U", "postgres", "-N", "--auth=scram-sha-256"]
    subprocess.run(
        [*as_owner, str(bin_dir / "initdb"), *initdb, f"--pwfile={pwfile}"],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    start = ["-D", str(data), "-o", options, "-w", "-l", str(base / "log"), "start"]
    subprocess.run([*as_owner, str(bin_dir / "pg_ctl"), *start], check=True, capture_output=True)
    try:
        fields = synthetic.SCHEMAS["enterprises"]
        with psycopg.connect(
            host="127.0.0.1", port=port, user="postgres", password=password, dbname="postgres"
        ) as conn:
            columns = sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(f), sql.SQL(PG_TYPES[t]))
                for f, t in fields.items()
            )
            conn.execute(sql.SQL("CREATE TABLE enterprises ({})").format(columns))
            insert_row = sql.SQL("INSERT INTO enterprises VALUES ({})").format(
                sql.SQL(", ").join(sql.Placeholder() * len(fields))
            )
            rows = synthetic.generate("enterprises", 40, seed=7)
            with conn.cursor() as cur:
                cur.executemany(insert_row, [tuple(r[f] for f in fields) for r in rows])
            conn.execute("CREATE INDEX ON enterprises (credit_code)")  # the key's lookups
        yield PasswordPg(port, password)
    finally:
        subprocess.run(
            [*as_owner, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def settings(settings: Settings, password_pg: PasswordPg, tmp_path: Path) -> Settings:
    """The shared settings, with an allow-list that admits: the data directory's sources/,
    one more directory, the private server and the shared test server (whose databases
    include the gateway's own store when it runs on PostgreSQL); and an env secret."""
    extra = tmp_path / "extra"
    extra.mkdir()
    return settings.replace(
        source_directories=("sources", str(extra)),
        source_hosts=(f"127.0.0.1:{password_pg.port}", "127.0.0.1:5432", "localhost"),
        source_env_secrets=(("DSGW_SRC_HR_PASSWORD", password_pg.password),),
    )


# -- helpers -------------------------------------------------------------------------------


def _entry(dataset_id: str, source: dict[str, Any], provider: str = MARKET) -> dict[str, Any]:
    """The demo enterprises entry under another id, provider and source."""
    entry: dict[str, Any] = json.loads(
        json.dumps(next(d for d in demo_datasets() if d["id"] == "enterprises"))
    )
    entry.pop("canaries", None)
    return entry | {"id": dataset_id, "provider": provider, "source": source}


async def _post_dataset(world: World, token: str, entry: dict[str, Any]) -> tuple[int, Any]:
    resp = await world.client.post(
        "/admin/datasets", json=entry, headers={"Authorization": f"Bearer {token}"}
    )
    return resp.status, await resp.json(content_type=None)


async def _get(world: World, token: str, path: str) -> tuple[int, Any, str]:
    resp = await world.client.get(path, headers={"Authorization": f"Bearer {token}"})
    raw = await resp.text()
    return resp.status, json.loads(raw), raw


async def _staff(world: World, role: Role, department: str | None = None) -> str:
    issued = await world.gateway.governance.clients.issue_client(
        LOCAL_ADMIN, role=role, department=department
    )
    assert issued.secret
    return await world.token("admin", (issued.client.client_id, issued.secret))


async def _publish(world: World, scenario_id: str, grants: list[dict[str, Any]]) -> str:
    """A published scenario with ``grants``, an agreement for the demo merchant, its token."""
    gov, now = world.gateway.governance, world.clock.now()
    definition = demo_scenario(now) | {"id": scenario_id, "grants": grants}
    await publish_scenario(gov, definition, now, days=30)
    return await world.token(f"scenario:{scenario_id}")


def _query_grant(dataset_id: str) -> dict[str, Any]:
    return {
        "dataset": dataset_id,
        "modes": ["query"],
        "fields": ["credit_code", "name", "district"],
        "filter_fields": ["district"],
        "required_filters": ["district"],
        "row_cap": 50,
    }


async def _everything_recorded(world: World) -> str:
    """Every record of every log stream, as stored."""
    async with world.gateway.engine.connect() as conn:
        rows = (await conn.execute(select(LogEntryRow))).all()
    return "\n".join(repr(tuple(row)) for row in rows)


async def _catalog_rows(world: World) -> str:
    async with world.gateway.engine.connect() as conn:
        rows = (await conn.execute(select(DatasetRow))).all()
    return json.dumps([row.definition for row in rows], ensure_ascii=False)


def _store_database(world: World) -> str | None:
    """The PostgreSQL database of the gateway's store; None for SQLite."""
    url = world.gateway.settings.database.url
    return make_url(url).database if url else None


# -- the gateway's own store and data directory -------------------------------------------


async def test_the_gateways_own_store_is_never_a_source(world: World) -> None:
    authority = await world.staff_token(Role.AUTHORITY)
    database = _store_database(world)
    data_dir = world.gateway.settings.data_dir
    if database is None:
        urls = [
            "sqlite:///dsgw.sqlite3",
            "sqlite:///nothing/../dsgw.sqlite3",
            f"sqlite:///{(data_dir / 'dsgw.sqlite3').resolve()}",
        ]
    else:
        # The shared server is allowed as a host (127.0.0.1:5432, localhost): the store on
        # it is refused all the same, under any name and port of its server.
        urls = [
            f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}",
            f"postgresql://postgres@localhost/{database}",
            f"postgresql+psycopg://postgres@localhost:6432/{database}",
        ]
    for url in urls:
        status, body = await _post_dataset(
            world, authority, _entry("staff", {"kind": "sql", "url": url, "table": "clients"})
        )
        assert status == 403, (url, body)
        assert body["type"] == "/problems/source-not-allowed"
        assert "own" in body["detail"], body
    for path in ("keystore.json", "nothing/../keystore.json", "keystore.pass", "policy.epoch"):
        status, body = await _post_dataset(
            world, authority, _entry("staff", {"kind": "csv", "path": path})
        )
        assert status == 403, (path, body)
        assert body["type"] == "/problems/source-not-allowed"
    assert "staff" not in (await world.gateway.governance.snapshot()).datasets


async def test_a_stored_entry_over_the_store_is_refused_when_opened(world: World) -> None:
    """The finding itself: an entry over the store, a scenario over it, a merchant query.
    The entry is written to the catalog directly (as before this rule, or behind the
    allow-list's back); the source is checked again when opened, and nothing leaks."""
    database = _store_database(world)
    url = (
        "sqlite:///dsgw.sqlite3"
        if database is None
        else f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"
    )
    definition = {
        "id": "staff-clients",
        "name": "staff",
        "provider": MARKET,
        "summary": "",
        "fields": [
            {"name": "client_id", "type": "string"},
            {"name": "secret_hash", "type": "string"},
        ],
        "update_frequency": "daily",
        "classification": 1,
        "open_attribute": "unconditional",
        "negative_list": False,
        "key_fields": ["client_id"],
        "subject_field": "client_id",
        "source": {"kind": "sql", "url": url, "table": "clients"},
    }
    now = world.clock.now()
    async with world.gateway.engine.begin() as conn:
        await conn.execute(
            insert(DatasetRow).values(
                id="staff-clients",
                name="staff",
                provider=MARKET,
                open_attribute="unconditional",
                negative_list=False,
                definition=definition,
                created_at=now,
                updated_at=now,
            )
        )
    world.gateway.epoch.bump()
    token = await _publish(
        world,
        "staff-leak",
        [
            {
                "dataset": "staff-clients",
                "modes": ["query"],
                "fields": ["client_id", "secret_hash"],
                "filter_fields": ["client_id"],
                "row_cap": 50,
            }
        ],
    )
    operator_id = world.staff[Role.OPERATOR][0]
    status, body, headers = await world.data(
        token,
        "staff-clients",
        "query",
        {"filters": {"client_id": operator_id}},
        scenario="staff-leak",
    )
    assert status == 503, body
    assert body["type"] == "/problems/source-unavailable"
    assert "not allowed by this gateway's settings" in body["detail"]
    assert "Dsgw-Record-Id" in headers  # refused, and recorded
    assert operator_id not in json.dumps(body) and "argon2" not in json.dumps(body)


# -- files: the allow-list of directories ---------------------------------------------------


async def test_files_outside_the_allowed_directories_are_refused(world: World) -> None:
    authority = await world.staff_token(Role.AUTHORITY)
    data_dir = world.gateway.settings.data_dir
    extra = Path(world.gateway.settings.source.directories[1])
    outside = data_dir.parent / "outside.csv"
    synthetic.write_csv(outside, "enterprises", 5, seed=3)
    (extra / "to-outside.csv").symlink_to(outside)
    (extra / "to-keystore.csv").symlink_to(data_dir / "keystore.json")
    (extra / "to-parent").symlink_to(data_dir.parent, target_is_directory=True)
    refused = {
        "/etc/passwd": "source_directories",
        "../outside.csv": "source_directories",
        "sources/../../outside.csv": "source_directories",
        str(extra / ".." / "outside.csv"): "source_directories",
        str(extra / "to-outside.csv"): "source_directories",
        str(extra / "to-parent" / "outside.csv"): "source_directories",
        str(extra / "to-keystore.csv"): "own files",
        # sources/ is a symlink here (tests/conftest.py): its ".." is the target's parent.
        "sources/../keystore.json": "source_directories",
        "nothing/../keystore.json": "own files",
        "chain/anything.csv": "sources/ folder",
    }
    for path, named in refused.items():
        status, body = await _post_dataset(
            world, authority, _entry("escape", {"kind": "csv", "path": path})
        )
        assert status == 403, (path, body)
        assert body["type"] == "/problems/source-not-allowed"
        assert named in body["detail"], (path, body["detail"])
        assert path not in body["detail"]  # the location is not echoed back
    # A SQLite file is a file: the same rules.
    status, body = await _post_dataset(
        world,
        authority,
        _entry("escape", {"kind": "sql", "url": f"sqlite:///{outside}", "table": "enterprises"}),
    )
    assert status == 403 and "source_directories" in body["detail"]
    # Inside the allowed directories, a file registers and answers.
    synthetic.write_csv(extra / "enterprises.csv", "enterprises", 30, seed=7)
    status, body = await _post_dataset(
        world,
        authority,
        _entry("extra-file", {"kind": "csv", "path": str(extra / "enterprises.csv")}),
    )
    assert status == 201, body
    token = await _publish(world, "extra-file-use", [_query_grant("extra-file")])
    district = next(synthetic.generate("enterprises", 1, seed=7))["district"]
    status, answer, _ = await world.data(
        token, "extra-file", "query", {"filters": {"district": district}}, scenario="extra-file-use"
    )
    assert status == 200 and answer["rows"], answer


async def test_narrowing_the_allow_list_stops_entries_already_stored(world: World) -> None:
    """Checked again when opened: settings without the extra directory (what the next
    start would use) refuse the entry registered under the wider ones."""
    extra = Path(world.gateway.settings.source.directories[1])
    synthetic.write_csv(extra / "enterprises.csv", "enterprises", 10, seed=7)
    dataset = await world.gateway.governance.catalog.register_dataset(
        LOCAL_ADMIN, _entry("extra-file", {"kind": "csv", "path": str(extra / "enterprises.csv")})
    )
    narrowed = world.gateway.settings.replace(source_directories=("sources",))
    access = SourceAccess(
        SourceRules.from_settings(narrowed), SourceSecrets(world.gateway.keystore, {})
    )
    with pytest.raises(SourceUnavailableError, match="not allowed by this gateway's settings"):
        await access.open(dataset)
    opened = await SourceAccess(
        SourceRules.from_settings(world.gateway.settings), SourceSecrets(world.gateway.keystore, {})
    ).open(dataset)
    assert opened.place.path == (extra / "enterprises.csv").resolve()  # type: ignore[union-attr]


async def test_database_hosts_outside_the_allow_list_are_refused(world: World) -> None:
    authority = await world.staff_token(Role.AUTHORITY)
    for url, named in {
        "postgresql+psycopg://reader@db.elsewhere.example/hr": "source_hosts",
        "postgresql+psycopg://reader@127.0.0.1:5433/hr": "source_hosts",
        "mysql+pymysql://reader@127.0.0.1/hr": "source_hosts",  # its default port, 3306
        "postgresql+psycopg://reader@127.0.0.1:5432/hr?host=db.elsewhere.example": "host",
        "postgresql+psycopg://reader@/hr": "names no host",
        "postgresql+asyncpg://reader@localhost/hr": "async driver",
        "postgresql+psycopg://reader@localhost:port/hr": "not a database URL",
        "sqlite://": "database file",
        "sqlite:///sources/a\u0000b": "NUL character",  # refused at the edge already
    }.items():
        status, body = await _post_dataset(
            world, authority, _entry("remote", {"kind": "sql", "url": url, "table": "t"})
        )
        assert status in (400, 403), (url, body)
        assert named in body["detail"], (url, body["detail"])


# -- credentials -------------------------------------------------------------------------------


async def test_a_url_with_a_password_is_refused(world: World, password_pg: PasswordPg) -> None:
    authority = await world.staff_token(Role.AUTHORITY)
    leaked = "hunter2-" + secrets.token_hex(4)
    for url in (
        f"postgresql+psycopg://postgres:{leaked}@127.0.0.1:{password_pg.port}/postgres",
        f"postgresql+psycopg://postgres@127.0.0.1:{password_pg.port}/postgres?password={leaked}",
    ):
        status, body = await _post_dataset(
            world, authority, _entry("inline", {"kind": "sql", "url": url, "table": "enterprises"})
        )
        assert status == 400, body
        assert body["type"] == "/problems/validation"
        assert "keystore:NAME" in body["detail"] and "dsgw secrets set" in body["detail"]
        assert leaked not in json.dumps(body, ensure_ascii=False)
    assert leaked not in await _everything_recorded(world)
    assert leaked not in await _catalog_rows(world)


async def test_a_secret_reference_is_resolved_and_never_shown(
    world: World, password_pg: PasswordPg, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    gateway, password = world.gateway, password_pg.password
    gateway.keystore.put_secret(
        "market-db", password.encode(), provider=MARKET, now=world.clock.now()
    )
    gateway.keystore.put_secret(
        "market-db-old", password.encode(), provider=MARKET, now=world.clock.now()
    )
    authority = await world.staff_token(Role.AUTHORITY)
    url = password_pg.url()
    sources = {
        "pg-keystore": "keystore:market-db",
        "pg-env": "env:DSGW_SRC_HR_PASSWORD",
        "pg-wrong": "keystore:market-db-old",
    }
    for dataset_id, ref in sources.items():
        status, body = await _post_dataset(
            world,
            authority,
            _entry(
                dataset_id,
                {"kind": "sql", "url": url, "table": "enterprises", "credentials": ref},
            ),
        )
        assert status == 201, body
        assert body["source"] == {
            "kind": "sql",
            "url": url,
            "table": "enterprises",
            "credentials": ref,
        }
    status, body = await _post_dataset(
        world,
        authority,
        _entry(
            "pg-missing",
            {"kind": "sql", "url": url, "table": "enterprises", "credentials": "keystore:nope"},
        ),
    )
    assert status == 400 and "dsgw secrets set nope" in body["detail"], body
    # The secret changes after registration (which read the source's indexes with it).
    gateway.keystore.put_secret(
        "market-db-old", b"not-the-password", provider=MARKET, now=world.clock.now()
    )
    wrong = {
        "kind": "sql",
        "url": url,
        "table": "enterprises",
        "credentials": "keystore:market-db-old",
    }
    status, body = await _post_dataset(world, authority, _entry("pg-refused", wrong))
    assert status == 503 and body["type"] == "/problems/source-unavailable", body

    token = await _publish(world, "pg-use", [_query_grant(d) for d in sources])
    district = next(synthetic.generate("enterprises", 1, seed=7))["district"]
    for dataset_id in ("pg-keystore", "pg-env"):
        status, answer, _ = await world.data(
            token, dataset_id, "query", {"filters": {"district": district}}, scenario="pg-use"
        )
        assert status == 200, answer
        assert answer["rows"] and all(r["district"] == district for r in answer["rows"])
    # The wrong password is refused by the server: the reference is what was used.
    status, answer, _ = await world.data(
        token, "pg-wrong", "query", {"filters": {"district": district}}, scenario="pg-use"
    )
    assert status == 503 and answer["type"] == "/problems/source-unavailable", answer
    assert "could not answer" in answer["detail"]

    # Nowhere to be seen: the catalog, the listing, the log (every stream), the log lines,
    # nor the keystore file, which holds it encrypted.
    assert password not in await _catalog_rows(world)
    _, listed, raw = await _get(world, authority, "/admin/datasets")
    assert password not in raw
    shown = {d["id"]: d["source"] for d in listed["datasets"]}
    assert shown["pg-keystore"]["credentials"] == "keystore:market-db"
    for stream in ("calls", "governance"):
        _, _, raw = await _get(world, authority, f"/admin/calls?stream={stream}&limit=500")
        assert password not in raw
    assert password not in await _everything_recorded(world)
    assert password not in caplog.text
    assert password.encode() not in gateway.settings.keystore_path.read_bytes()


async def test_a_department_names_only_its_own_keystore_secrets(
    world: World, password_pg: PasswordPg
) -> None:
    keystore, now = world.gateway.keystore, world.clock.now()
    secret = password_pg.password.encode()  # registration reads the source's indexes
    keystore.put_secret("market-db", secret, provider=MARKET, now=now)
    keystore.put_secret("tax-db", b"y", provider="税务局", now=now)
    keystore.put_secret("anyone-db", secret, provider=None, now=now)
    market = await _staff(world, Role.SOURCE, MARKET)
    url = password_pg.url()

    async def register(dataset_id: str, ref: str) -> tuple[int, Any]:
        source = {"kind": "sql", "url": url, "table": "enterprises", "credentials": ref}
        return await _post_dataset(world, market, _entry(dataset_id, source))

    assert (await register("own", "keystore:market-db"))[0] == 201
    for ref in ("keystore:tax-db", "keystore:anyone-db", "env:DSGW_SRC_HR_PASSWORD"):
        status, body = await register("other", ref)
        assert status == 403, (ref, body)
    # The authority may name an unbound secret, and one bound to the entry's provider only.
    authority = await world.staff_token(Role.AUTHORITY)
    source = {"kind": "sql", "url": url, "table": "enterprises", "credentials": "keystore:tax-db"}
    status, body = await _post_dataset(world, authority, _entry("tax-mismatch", source))
    assert status == 403 and "another provider" in body["detail"], body
    source["credentials"] = "keystore:anyone-db"
    status, body = await _post_dataset(world, authority, _entry("by-authority", source))
    assert status == 201, body


# -- who sees locations; who registers for whom -------------------------------------------


async def test_source_locations_only_for_the_authority_and_the_owning_department(
    world: World,
) -> None:
    tokens = {
        "authority": await world.staff_token(Role.AUTHORITY),
        "operator": await world.staff_token(Role.OPERATOR),
        "supervisor": await world.staff_token(Role.SUPERVISOR),
        "exchange": await _staff(world, Role.EXCHANGE),
        "market": await _staff(world, Role.SOURCE, MARKET),
    }
    seen: dict[str, dict[str, bool]] = {}
    for who, token in tokens.items():
        status, body, raw = await _get(world, token, "/admin/datasets")
        assert status == 200, body
        seen[who] = {d["id"]: "source" in d for d in body["datasets"]}
        if who in ("operator", "supervisor", "exchange"):
            assert "registry.sqlite3" not in raw and "vehicles.csv" not in raw
    assert all(seen["authority"].values())
    assert not any(seen["operator"].values())
    assert not any(seen["supervisor"].values())
    assert not any(seen["exchange"].values())
    assert seen["market"] == {d: d == "enterprises" for d in seen["market"]}
    # Merchants never see it; the governance log records the source as a digest only.
    _, _, raw = await _get(world, await world.token(), "/v1/catalog")
    assert "registry.sqlite3" not in raw
    _, log, raw = await _get(world, tokens["operator"], "/admin/calls?stream=governance&limit=500")
    assert "registry.sqlite3" not in raw and "vehicles.csv" not in raw
    registered = [
        e["record"]["dataset"]["source"]
        for e in log["entries"]
        if e["record"]["kind"] == "dataset.registered"
    ]
    assert registered and all(set(s) == {"kind", "sha256"} for s in registered)
    snapshot = await world.gateway.governance.snapshot()
    by_digest = {d.source.digest() for d in snapshot.datasets.values()}
    assert {s["sha256"] for s in registered} <= by_digest


async def test_a_department_registers_only_under_its_own_provider(world: World) -> None:
    market = await _staff(world, Role.SOURCE, MARKET)
    csv = {"kind": "csv", "path": "sources/vehicles.csv"}
    status, body = await _post_dataset(world, market, _entry("tax", csv, provider="税务局"))
    assert status == 403 and body["type"] == "/problems/forbidden", body
    assert MARKET in body["detail"]
    status, body = await _post_dataset(world, market, _entry("market-own", csv))
    assert status == 201, body
    # Nor may it take over another department's entry by re-registering it as its own.
    gov = world.gateway.governance
    vehicles = (await gov.snapshot()).datasets["vehicles"].to_dict() | {"provider": MARKET}
    actor = Actor("market-client", Role.SOURCE, department=MARKET)
    with pytest.raises(ForbiddenError, match="another department"):
        await gov.catalog.register_dataset(actor, vehicles, replace_existing=True)
    # The authority registers for any provider; so does the local administrator.
    authority = await world.staff_token(Role.AUTHORITY)
    status, body = await _post_dataset(world, authority, _entry("tax", csv, provider="税务局"))
    assert status == 201, body
    await gov.catalog.register_dataset(LOCAL_ADMIN, _entry("tax-2", csv, provider="税务局"))


# -- the stored catalog: migration 0009 -----------------------------------------------------


def _run_migration_0009(connection: Any) -> None:
    import importlib.util

    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    import gateway

    path = Path(gateway.__file__).parent / "migrations/versions/0009_source_credentials.py"
    spec = importlib.util.spec_from_file_location("migration_0009", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with Operations.context(MigrationContext.configure(connection)):
        module.upgrade()


async def test_migration_removes_stored_passwords(world: World) -> None:
    """A row written before the rule keeps no password once the store is migrated."""
    engine, now = world.gateway.engine, world.clock.now()
    url = "postgresql+psycopg://reader:s3cret-pw@db.hr.example:5432/hr?sslmode=require"
    definition = _entry("legacy", {"kind": "sql", "url": url, "table": "enterprises"})
    async with engine.begin() as conn:
        await conn.execute(
            insert(DatasetRow).values(
                id="legacy",
                name="legacy",
                provider=MARKET,
                open_attribute="conditional",
                negative_list=False,
                definition=definition,
                created_at=now,
                updated_at=now,
            )
        )
        # The store is already at head: run migration 0009 itself over the old row.
        await conn.run_sync(_run_migration_0009)
    stored = await _catalog_rows(world)
    assert "s3cret-pw" not in stored
    assert "postgresql+psycopg://reader@db.hr.example:5432/hr?sslmode=require" in stored


# -- settings and the keystore -------------------------------------------------------------


def test_allow_list_settings() -> None:
    loaded = load_settings(
        None,
        environ={
            "DSGW_SOURCE_DIRECTORIES": "/srv/a" + os.pathsep + "sources",
            "DSGW_SOURCE_HOSTS": "db.hr.example:5432, [::1], postgresql://10.0.0.5/hr",
            "DSGW_SRC_HR_PASSWORD": "pw",
        },
    )
    assert loaded.source.directories == ("/srv/a", "sources")
    assert loaded.source_host_rules == (
        HostRule("db.hr.example:5432", "db.hr.example", 5432),
        HostRule("[::1]", "::1"),
        HostRule("postgresql://10.0.0.5/hr", "10.0.0.5", None, "postgresql", "hr"),
    )
    assert loaded.source_env_secrets == (("DSGW_SRC_HR_PASSWORD", "pw"),)
    assert "pw" not in repr(loaded)
    assert load_settings(None, environ={}).source.directories == ("sources",)
    for bad in ("user:pw@db.example", "db.example:99999", "postgresql://db/a/b", "db/x"):
        with pytest.raises(ConfigError, match="source_hosts"):
            load_settings(None, environ={"DSGW_SOURCE_HOSTS": bad})
    rule = HostRule.parse("postgresql://db.hr.example/hr")
    assert rule.allows("postgresql", "DB.HR.example", None, "hr")
    assert not rule.allows("postgresql", "db.hr.example", None, "other")
    assert not rule.allows("mysql", "db.hr.example", None, "hr")
    assert HostRule.parse("db.hr.example:5432").allows("postgresql", "db.hr.example", None, "x")
    assert not HostRule.parse("db.hr.example:5433").allows("postgresql", "db.hr.example", None, "x")


def test_named_secrets_are_sealed_to_their_name_and_provider(tmp_path: Path) -> None:
    path = tmp_path / "keystore.json"
    store = Keystore.create(path, b"pass", scrypt_n=2**14)
    now = dt.datetime.now(dt.UTC)
    store.put_secret("hr-db", "密码-1".encode(), provider=MARKET, now=now)
    store.put_secret("hr-db", b"second", provider=MARKET, now=now)  # replaces
    reopened = Keystore.open(path, b"pass")
    info, value = reopened.named_secret("hr-db")
    assert (info.provider, value) == (MARKET, b"second")
    assert [i.name for i in reopened.named_secrets()] == ["hr-db"]
    assert b"second" not in path.read_bytes()
    document = json.loads(path.read_text())
    for member, changed in (("name", "other-db"), ("provider", "税务局")):
        tampered = json.loads(json.dumps(document))
        tampered["secrets"][0][member] = changed
        path.write_text(json.dumps(tampered))
        with pytest.raises(KeystoreError, match="failed authentication"):
            Keystore.open(path, b"pass")
    path.write_text(json.dumps(document))
    with pytest.raises(KeystoreError, match="dsgw secrets set nope"):
        Keystore.open(path, b"pass").named_secret("nope")
    for name, value in (("Bad Name", b"x"), ("ok", b""), ("ok", b"\xff")):
        with pytest.raises(KeystoreError):
            store.put_secret(name, value, provider=None, now=now)
    assert Keystore.open(path, b"pass").delete_secret("hr-db")
    assert Keystore.open(path, b"pass").named_secrets() == []


def test_cli_reads_the_secret_from_stdin_never_argv(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    Keystore.create(data_dir / "keystore.json", b"cli passphrase", scrypt_n=2**14)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSGW_")}
    env["DSGW_KEYSTORE_PASSPHRASE"] = "cli passphrase"
    value = "pa ss:wörd-" + secrets.token_hex(4)

    def dsgw(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli", "--data-dir", str(data_dir), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )

    put = dsgw("secrets", "set", "hr-db", "--provider", MARKET, stdin=value + "\n")
    assert put.returncode == 0, put.stderr
    assert "keystore:hr-db" in put.stdout and value not in put.stdout + put.stderr
    _, stored = Keystore.open(data_dir / "keystore.json", b"cli passphrase").named_secret("hr-db")
    assert stored == value.encode()
    listed = dsgw("secrets", "list", "--json")
    assert json.loads(listed.stdout)[0]["provider"] == MARKET and value not in listed.stdout
    assert dsgw("secrets", "set", "empty", stdin="\n").returncode != 0
    assert dsgw("secrets", "delete", "hr-db").returncode == 0
    missing = dsgw("secrets", "delete", "hr-db")
    assert missing.returncode != 0 and "no secret named" in missing.stderr
