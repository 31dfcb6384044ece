"""The demo world built once per run and store kind, then copied for each test.

Building the world (registering the catalog, a scenario, a merchant, an agreement and four
clients, each a change with its record in the log) costs more than most tests that start
from it. So it is built once per store kind into a template: a data directory (store,
keystore, epoch file) and, for PostgreSQL, a template database; each test then gets a copy
(:func:`shutil.copytree`, ``CREATE DATABASE ... TEMPLATE``) and opens a gateway on it.
The copy holds exactly what :func:`tests.support.world.build_world` leaves.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.clock import FixedClock
from gateway.runtime import Gateway
from gateway.settings import Settings, load_settings
from keys.keystore import Keystore
from tests.support.databases import create_pg_database, drop_pg_database, pg_url, run_aside
from tests.support.world import TEST_PASSPHRASE, TEST_SCRYPT_N, build_world

__all__ = ["WorldTemplate", "WorldTemplates", "store_settings"]

#: How far from the real time a test's clock may start and still share the world built at it.
_NEAR = dt.timedelta(minutes=30)


def store_settings(data_dir: Path, database_url: str = "", **overrides: Any) -> Settings:
    """The settings every test store runs with: a cheap client-secret hash, no chain, any
    free port."""
    return load_settings(
        None,
        environ={},
        data_dir=data_dir,
        database_url=database_url,
        keystore_passphrase=TEST_PASSPHRASE,
        secret_hash_time_cost=1,
        secret_hash_memory_kib=8192,
        port=0,
        chain="none",
        **overrides,
    )


@dataclass(frozen=True, slots=True)
class WorldTemplate:
    """One built world: its data directory, its PostgreSQL database (for that kind) and
    the credentials :func:`build_world` issued."""

    data_dir: Path
    pg_name: str | None
    creds: dict[str, Any]


class WorldTemplates:
    """Builds each kind's template the first time a test asks for it."""

    def __init__(self, base: Path, source_dir: Path) -> None:
        self._base = base
        self._source_dir = source_dir
        self._built: dict[tuple[str, dt.datetime | None], WorldTemplate] = {}
        self._copies: dict[Path, WorldTemplate] = {}

    def get(self, kind: str, start: dt.datetime, store: Callable[[], Path | str]) -> WorldTemplate:
        """The template of ``kind`` ("sqlite" or "postgresql") for a test whose clock starts
        at ``start``, built the first time from ``store()``, the migrated empty store of
        that kind (a file or a database name).

        A clock near the real time shares one world built at the real time (minutes apart
        at most: the agreement runs from an hour before to a year after); a clock set
        elsewhere (a module that builds its world in a chosen quarter) gets a world built
        at exactly that instant, shared by the tests that start there."""
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        key = (kind, None if abs(start - now) < _NEAR else start)
        if key not in self._built:
            self._built[key] = self._build(kind, key[1] or now, store())
        return self._built[key]

    def close(self) -> None:
        """Drop the template databases."""
        for template in self._built.values():
            if template.pg_name is not None:
                run_aside(drop_pg_database(template.pg_name))
        self._built.clear()

    def _build(self, kind: str, start: dt.datetime, store: Path | str) -> WorldTemplate:
        data_dir = self._base / f"{kind}-{len(self._built)}"
        data_dir.mkdir()
        (data_dir / "sources").symlink_to(self._source_dir / "sources")
        Keystore.create(
            data_dir / "keystore.json", TEST_PASSPHRASE.encode(), scrypt_n=TEST_SCRYPT_N
        )
        pg_name = None
        if kind == "postgresql":
            pg_name = run_aside(create_pg_database(str(store)))
        else:
            shutil.copyfile(store, data_dir / "dsgw.sqlite3")
        settings = store_settings(data_dir, pg_url(pg_name) if pg_name else "")

        async def build() -> dict[str, Any]:
            gateway, creds = await build_world(settings, FixedClock(start))
            await gateway.close()
            return creds

        return WorldTemplate(data_dir, pg_name, run_aside(build()))

    def copy(self, template: WorldTemplate, data_dir: Path) -> None:
        """Copy ``template``'s data directory to ``data_dir`` (the caller copies its
        PostgreSQL database), remembering which template it came from."""
        shutil.copytree(template.data_dir, data_dir, symlinks=True)
        self._copies[data_dir] = template

    async def open(self, settings: Settings, clock: FixedClock) -> tuple[Gateway, dict[str, Any]]:
        """A gateway over the copy ``settings`` points at, with its template's credentials."""
        template = self._copies.pop(settings.data_dir)
        return await Gateway.open(settings, clock=clock), template.creds
