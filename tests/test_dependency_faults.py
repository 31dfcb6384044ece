"""Dependencies fail cleanly: a database restarted or stopped, Redis stopped or paused, a
full disk, a keystore gone, and a server stopped with calls in flight.

Real servers throughout, under load from concurrent clients: ``dsgw serve`` processes on
loopback (their stderr is the log whose lines are counted), a private PostgreSQL and a
private Redis that the tests stop and start (tests/support/services.py; the shared servers are
never touched), and a tmpfs mounted as the data directory and filled until writes fail
with ENOSPC. Every answer must be 200 or a 503 problem with ``Retry-After`` whose type
names the dependency; never a 500, never a driver message or an internal address.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import errno
import json
import logging
import os
import re
import secrets
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from connectors import synthetic
from connectors.base import ConnectorError
from gateway.api.app import create_app
from gateway.authorization.roles import Role
from gateway.clock import FixedClock
from gateway.db.engines import create_engine, migrate
from gateway.dependencies import DependencyHealth, dependency_error
from gateway.errors import DsgwError, KeystoreError, StoreUnavailableError, ValidationError
from gateway.governance.epoch import EpochFile
from gateway.governance.policy import PolicyStore
from gateway.ledger.log import read_entry
from gateway.settings import Settings, load_settings
from tests.support.enrolment import limited_scenario
from tests.support.services import PrivatePostgres, PrivateRedis, free_port
from tests.support.world import World, build_world

SCENARIO = "fault-load"
# Far above what the load reaches: a 429 would hide what these tests look for.
QUOTAS = {"rate_per_minute": 1_000_000}
SHARED_REDIS = os.environ.get("DSGW_TEST_REDIS", "redis://127.0.0.1:6379/15")
# What no answer may show a caller: addresses, driver and library names, tracebacks.
LEAKS = re.compile(
    r"127\.0\.0\.1|localhost|postgresql://|redis://|Errno|Traceback|asyncpg|psycopg|"
    r"sqlalchemy|sqlite3|connection to server|/tmp/",
    re.IGNORECASE,
)


# -- helpers ----------------------------------------------------------------------------


def _settings(tmp_path: Path, source_dir: Path, **overrides: Any) -> Settings:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "sources").symlink_to(source_dir / "sources")
    return load_settings(
        None,
        environ={},
        data_dir=data_dir,
        keystore_passphrase="test passphrase",
        secret_hash_time_cost=1,
        secret_hash_memory_kib=8192,
        port=0,
        chain="none",
        **overrides,
    )


async def _prepare(settings: Settings, clock: FixedClock) -> dict[str, Any]:
    """The demo world plus a scenario whose limits the load never reaches; the gateway
    that built it is closed again, for a server process to open."""
    gateway, creds = await build_world(settings, clock)
    try:
        await limited_scenario(gateway.governance, SCENARIO, QUOTAS, clock.now())
    finally:
        await gateway.close()
    return creds


@contextlib.contextmanager
def _serve(
    settings: Settings, port: int, log: Path, **env: str
) -> Iterator[subprocess.Popen[bytes]]:
    """``dsgw serve`` (one process) on ``port``; its stderr, the log, goes to ``log``."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DSGW_")}
    environment.update(
        DSGW_DATA_DIR=str(settings.data_dir),
        DSGW_DATABASE_URL=settings.database.url,
        DSGW_REDIS_URL=settings.cluster.redis_url,
        DSGW_DEPLOYMENT=settings.deployment,
        DSGW_KEYSTORE_PASSPHRASE=settings.keystore.passphrase,
        DSGW_SECRET_HASH_TIME_COST="1",
        DSGW_SECRET_HASH_MEMORY_KIB="8192",
        DSGW_CHAIN="none",
        DSGW_WORKERS="1",
        DSGW_DEPENDENCY_CHECK_SECONDS="1",
        **env,
    )
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)],
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(30)


async def _until(
    check: Callable[[], Awaitable[bool]],
    what: str,
    *,
    timeout: float = 60.0,
    log: Path | None = None,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    """Wait for ``check`` to hold (a deadline against hangs, not a timing assertion); if
    it times out or the server ``proc`` exits, the error shows the end of its ``log``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    problem = f"timed out waiting for {what}"
    while loop.time() < deadline:
        if proc is not None and proc.poll() is not None:
            problem = f"the server exited ({proc.returncode}) while waiting for {what}"
            break
        if await check():
            return
        await asyncio.sleep(0.1)
    tail = log.read_text("utf-8", "replace")[-4000:] if log is not None else ""
    raise AssertionError(f"{problem}\n{tail}")


async def _wait_up(http: aiohttp.ClientSession, base: str, proc: subprocess.Popen[bytes]) -> None:
    async def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError("the server exited at start")
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(f"{base}/readyz") as resp:
                return resp.status == 200
        return False

    await _until(up, "the server to be ready")


async def _token(http: aiohttp.ClientSession, base: str, creds: tuple[str, str], scope: str) -> str:
    async with http.post(
        f"{base}/oauth/token",
        data={"grant_type": "client_credentials", "scope": scope},
        headers={"Authorization": aiohttp.encode_basic_auth(*creds)},
    ) as resp:
        body = await resp.json()
        assert resp.status == 200, body
        return str(body["access_token"])


async def _readiness(
    http: aiohttp.ClientSession, base: str, admin: str
) -> tuple[int, dict[str, Any]]:
    """Readiness with its checks (shown to an operator's token only)."""
    async with http.get(f"{base}/readyz", headers={"Authorization": f"Bearer {admin}"}) as resp:
        return resp.status, await resp.json()


async def _dependency_up(http: aiohttp.ClientSession, base: str, admin: str) -> dict[str, float]:
    """``dsgw_dependency_up`` by dependency; the scrape itself must succeed (200)."""
    async with http.get(f"{base}/metrics", headers={"Authorization": f"Bearer {admin}"}) as resp:
        text = await resp.text()
        assert resp.status == 200, text
    found = re.findall(r'^dsgw_dependency_up\{dependency="(\w+)"\} (\S+)$', text, re.MULTILINE)
    return {name: float(value) for name, value in found}


@dataclass
class Answers:
    """What the load's clients got: counts by status and problem type, and every answer
    that breaks the rules (a 500, a 503 without Retry-After, a leak)."""

    counts: collections.Counter[str] = field(default_factory=collections.Counter)
    violations: list[str] = field(default_factory=list)
    answered: list[tuple[str, str]] = field(default_factory=list)
    refused_unrecorded: int = 0

    def count(self, key: str) -> int:
        return self.counts[key]

    def see(self, status: int, headers: Any, body: bytes) -> None:
        text = body.decode("utf-8", "replace")
        if status == 200:
            self.counts["200"] += 1
            self.answered.append((headers["Dsgw-Record-Id"], headers["Dsgw-Record-Hash"]))
            return
        kind = ""
        with contextlib.suppress(ValueError):
            kind = str(json.loads(text).get("type", ""))
        self.counts[f"{status} {kind}"] += 1
        if status != 503:
            self.violations.append(f"{status}: {text[:300]}")
        elif not str(headers.get("Retry-After", "")).isdigit():
            self.violations.append(f"503 without Retry-After: {text[:300]}")
        elif headers.get("Content-Type", "").split(";")[0] != "application/problem+json":
            self.violations.append(f"503 not a problem document: {text[:300]}")
        if LEAKS.search(text):
            self.violations.append(f"leak: {text[:300]}")
        if kind == "/problems/quota-unavailable" and "Dsgw-Record-Id" not in headers:
            self.refused_unrecorded += 1


async def _load(
    http: aiohttp.ClientSession,
    url: str,
    token: str,
    body: dict[str, Any],
    answers: Answers,
    stop: asyncio.Event,
    clients: int,
) -> None:
    async def client() -> None:
        while not stop.is_set():
            async with http.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as r:
                answers.see(r.status, r.headers, await r.read())

    await asyncio.gather(*(client() for _ in range(clients)))


async def _token_load(
    http: aiohttp.ClientSession,
    base: str,
    creds: tuple[str, str],
    scope: str,
    answers: Answers,
    stop: asyncio.Event,
    clients: int,
) -> None:
    """Token requests (``/oauth/token`` writes the issued token and its record) until
    ``stop``."""

    async def client() -> None:
        while not stop.is_set():
            async with http.post(
                f"{base}/oauth/token",
                data={"grant_type": "client_credentials", "scope": scope},
                headers={"Authorization": aiohttp.encode_basic_auth(*creds)},
            ) as r:
                answers.see(r.status, r.headers, await r.read())

    await asyncio.gather(*(client() for _ in range(clients)))


def _verify_body(code: str) -> dict[str, Any]:
    return {"values": {"credit_code": code, "name": "x"}}


def _sample_code() -> str:
    return str(next(synthetic.generate("enterprises", 1, seed=7))["credit_code"])


async def _records_exist(settings: Settings, answered: list[tuple[str, str]]) -> None:
    engine = create_engine(settings.resolved_database_url)
    try:
        for record_id, leaf in answered:
            stream, seq = record_id.split("/")
            entry = await read_entry(engine, stream, int(seq))
            assert entry is not None, f"{record_id} was answered but is not in the log"
            assert entry.leaf_hash.hex() == leaf
    finally:
        await engine.dispose()


def _log_lines(log: Path) -> list[str]:
    return log.read_text("utf-8", "replace").splitlines()


# -- PostgreSQL restarted and stopped -----------------------------------------------------


async def test_postgresql_restart_and_stop_under_load(
    tmp_path: Path, source_dir: Path, clock: FixedClock
) -> None:
    """16 clients call, and 2 more ask for tokens, through a restart of the store's
    PostgreSQL server and then a stop and start. Every answer is 200 or a 503 with
    Retry-After naming the store or the call log; ``/metrics`` answers 200 throughout and
    shows the database down; readiness is 503 while it is down and 200 after; the outage
    costs a handful of log lines, not one per refused call; every call and token answered
    200 is in the log."""
    with PrivatePostgres.running() as pg:
        settings = _settings(tmp_path, source_dir, database_url=pg.url)
        creds = await _prepare(settings, clock)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log = tmp_path / "server.log"
        answers = Answers()
        with _serve(settings, port, log, DSGW_POLICY_POLL_SECONDS="1") as proc:
            async with aiohttp.ClientSession() as http:
                await _wait_up(http, base, proc)
                token = await _token(http, base, creds["merchant"], f"scenario:{SCENARIO}")
                admin = await _token(http, base, creds["staff"][Role.OPERATOR], "admin")
                stop = asyncio.Event()
                url = f"{base}/v1/scenarios/{SCENARIO}/datasets/enterprises/verify"
                scope = f"scenario:{SCENARIO}"

                async def calls_and_tokens() -> None:
                    await asyncio.gather(
                        _load(http, url, token, _verify_body(_sample_code()), answers, stop, 16),
                        _token_load(http, base, creds["merchant"], scope, answers, stop, 2),
                    )

                load = asyncio.create_task(calls_and_tokens())

                def served_more(than: int) -> Callable[[], Awaitable[bool]]:
                    async def check() -> bool:
                        if load.done():
                            load.result()  # a client failed: raise its error here
                        return answers.count("200") >= than + 20

                    return check

                await _until(served_more(0), "calls to be answered", log=log, proc=proc)
                await asyncio.to_thread(pg.restart)
                await _until(
                    served_more(answers.count("200")), "calls after the restart", log=log, proc=proc
                )

                await asyncio.to_thread(pg.stop)
                refused = sum(n for k, n in answers.counts.items() if k.startswith("503"))

                async def unready() -> bool:
                    status, body = await _readiness(http, base, admin)
                    return status == 503 and body["checks"]["database"]["ok"] is False

                def metric_is(value: float) -> Callable[[], Awaitable[bool]]:
                    async def check() -> bool:
                        return (await _dependency_up(http, base, admin))["database"] == value

                    return check

                async def refusing() -> bool:
                    now = sum(n for k, n in answers.counts.items() if k.startswith("503"))
                    return now >= refused + 50

                await _until(
                    unready, "readiness to fail while PostgreSQL is stopped", log=log, proc=proc
                )

                async def scrape_refused() -> bool:
                    # A scrape is recorded like every request, so while the store is down it
                    # is refused (503 with Retry-After, never 500); the dependency view of
                    # the outage is /readyz with a staff token (above), which is not recorded.
                    async with http.get(
                        f"{base}/metrics", headers={"Authorization": f"Bearer {admin}"}
                    ) as resp:
                        await resp.read()
                        return resp.status == 503 and "Retry-After" in resp.headers

                await _until(scrape_refused, "a scrape to be refused with 503", log=log, proc=proc)
                await _until(
                    refusing, "calls to be refused while PostgreSQL is stopped", log=log, proc=proc
                )
                await asyncio.to_thread(pg.start)

                async def ready() -> bool:
                    return (await _readiness(http, base, admin))[0] == 200

                await _until(ready, "readiness once PostgreSQL is back", log=log, proc=proc)
                await _until(
                    metric_is(1.0), "dsgw_dependency_up to show it back", log=log, proc=proc
                )
                await _until(
                    served_more(answers.count("200")), "calls after the start", log=log, proc=proc
                )
                stop.set()
                await load
        assert proc.returncode == 0
        await _records_exist(settings, answers.answered)

    assert answers.violations == []
    assert set(answers.counts) <= {
        "200",
        "503 /problems/log-unavailable",
        "503 /problems/store-unavailable",
    }, answers.counts
    refused_total = sum(n for k, n in answers.counts.items() if k.startswith("503"))
    lines = _log_lines(log)
    text = "\n".join(lines)
    assert "Traceback" not in text
    downs = text.count("dependency database is down")
    # Two outages: one line each when it went, one when it came back (a flap during the
    # server's shutdown may add one); nothing per refused call.
    assert 2 <= downs <= 4, text
    assert text.count("dependency database is back") == downs, text
    assert len(lines) <= 40, text
    assert refused_total > 10 * len(lines), (refused_total, len(lines))


async def test_policy_outlives_a_lost_listener_within_its_bound_then_fails_closed(
    tmp_path: Path,
) -> None:
    """The policy snapshot when the store stops: with only a *possible* change (the policy
    listener's connection was lost) calls keep being decided on the last snapshot for
    ``max_staleness`` seconds, then are refused; with a *known* change they are refused at
    once. However many calls ask meanwhile, the dead store is tried once per backoff, not
    once per call. Time is a clock the test moves; the store is a real server."""
    now = [1000.0]
    health = DependencyHealth()
    failures: list[str] = []

    class Counting:
        def dependency_changed(self, dependency: str, up: bool) -> None:
            pass

        def dependency_failed(self, dependency: str) -> None:
            failures.append(dependency)

    health.subscribe(Counting())
    with PrivatePostgres.running() as pg:
        url = pg.url.replace("postgresql://", "postgresql+asyncpg://", 1)
        engine = create_engine(url)
        epoch = EpochFile(tmp_path / "policy.epoch")
        try:
            await migrate(engine)
            policy = PolicyStore(
                engine,
                epoch,
                FixedClock(dt.datetime.now(dt.UTC)),
                max_staleness=30.0,
                retry_seconds=0.5,
                retry_max_seconds=5.0,
                health=health,
                monotonic=lambda: now[0],
            )
            await policy.reload()
            last = await policy.current()
            await asyncio.to_thread(pg.stop)

            policy.possibly_changed()  # what the listener does when its connection breaks
            served = await asyncio.gather(*(policy.current() for _ in range(50)))
            assert all(snapshot is last for snapshot in served)
            assert failures == ["database"]  # one attempt for 50 calls
            assert not health.is_up("database")
            assert policy.fresh

            now[0] += 29.0  # still within the bound; retries back off, then try again
            assert await policy.current() is last
            assert failures == ["database", "database"]
            now[0] += 2.0  # 31 s since the listener was lost: past the bound
            with pytest.raises(StoreUnavailableError):
                await policy.current()
            assert not policy.fresh
            # A snapshot scrapes may still use (metrics), never a call.
            assert await policy.current_or_last() is last

            epoch.bump()  # a change known to be committed (another process's revocation)
            with pytest.raises(StoreUnavailableError):
                await policy.current()

            await asyncio.to_thread(pg.start)
            now[0] += 10.0  # past the longest backoff
            fresh = await policy.current()
            assert fresh is not last
            assert policy.fresh
            assert health.is_up("database")
        finally:
            epoch.close()
            await engine.dispose()


# -- Redis stopped and paused -------------------------------------------------------------


async def test_redis_stopped_and_paused_under_load(
    settings: Settings, clock: FixedClock, tmp_path: Path
) -> None:
    """8 clients call while the quota store (a private Redis) is stopped, started again,
    paused with SIGSTOP (it accepts connections, nothing answers) and resumed. Meanwhile
    calls are refused with a recorded 503 ``quota-unavailable`` with Retry-After, readiness
    is 503 and ``dsgw_dependency_up{dependency="redis"}`` is 0; each outage is one log line
    going and one coming back; the gateway recovers by itself."""
    with PrivateRedis.running() as redis:
        settings = settings.replace(redis_url=redis.url)
        creds = await _prepare(settings, clock)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log = tmp_path / "server.log"
        answers = Answers()
        with _serve(settings, port, log) as proc:
            async with aiohttp.ClientSession() as http:
                await _wait_up(http, base, proc)
                token = await _token(http, base, creds["merchant"], f"scenario:{SCENARIO}")
                admin = await _token(http, base, creds["staff"][Role.OPERATOR], "admin")
                stop = asyncio.Event()
                url = f"{base}/v1/scenarios/{SCENARIO}/datasets/enterprises/verify"
                load = asyncio.create_task(
                    _load(http, url, token, _verify_body(_sample_code()), answers, stop, 8)
                )

                def more(key: str, than: int, by: int) -> Callable[[], Awaitable[bool]]:
                    async def check() -> bool:
                        if load.done():
                            load.result()
                        return answers.count(key) >= than + by

                    return check

                def readiness_is(status: int) -> Callable[[], Awaitable[bool]]:
                    async def check() -> bool:
                        got, body = await _readiness(http, base, admin)
                        redis_ok = body["checks"]["redis"]["ok"]
                        return got == status and redis_ok is (status == 200)

                    return check

                def metric_is(value: float) -> Callable[[], Awaitable[bool]]:
                    async def check() -> bool:
                        return (await _dependency_up(http, base, admin))["redis"] == value

                    return check

                refused = "503 /problems/quota-unavailable"
                await _until(more("200", 0, 20), "calls to be answered", log=log, proc=proc)
                for take_away, give_back in (
                    (redis.stop, redis.start),
                    (redis.pause, redis.resume),
                ):
                    await asyncio.to_thread(take_away)
                    await _until(
                        more(refused, answers.count(refused), 5), "refusals", log=log, proc=proc
                    )
                    await _until(readiness_is(503), "readiness to fail", log=log, proc=proc)
                    await _until(
                        metric_is(0.0), "the metric to show Redis down", log=log, proc=proc
                    )
                    await asyncio.to_thread(give_back)
                    await _until(readiness_is(200), "readiness to recover", log=log, proc=proc)
                    await _until(
                        metric_is(1.0), "the metric to show Redis back", log=log, proc=proc
                    )
                    await _until(
                        more("200", answers.count("200"), 20),
                        "calls to be answered",
                        log=log,
                        proc=proc,
                    )
                stop.set()
                await load
        assert proc.returncode == 0
        await _records_exist(settings, answers.answered)

    assert answers.violations == []
    assert set(answers.counts) <= {"200", refused}, answers.counts
    assert answers.refused_unrecorded == 0  # the refusals were recorded
    text = log.read_text("utf-8", "replace")
    assert "Traceback" not in text
    assert text.count("dependency redis is down") == 2, text
    assert text.count("dependency redis is back") == 2, text
    assert len(text.splitlines()) <= 30, text


# -- a full disk --------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs: a file system of its own that the test can fill until writes fail
    with ENOSPC, as a full disk does. Mounting needs root (or CAP_SYS_ADMIN)."""
    path = tmp_path / "small-disk"
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert mounted.returncode == 0, (
        f"this test mounts a tmpfs to fill it, which needs root or CAP_SYS_ADMIN: "
        f"{mounted.stderr.strip()}"
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(directory: Path) -> Path:
    """Write a file until the file system refuses with ENOSPC; it is now full."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        block = b"\0" * (1 << 20)
        while True:
            try:
                os.write(fd, block)  # a partial write at the end, then ENOSPC
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                return filler
    finally:
        os.close(fd)


async def test_a_full_disk_is_a_503_and_unready(
    settings: Settings,
    clock: FixedClock,
    small_disk: Path,
    source_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The data directory (and with SQLite the store) on a tmpfs that is then filled:
    readiness goes 503 at once (free space below ``disk_min_free_mb``); with SQLite the
    calls that can no longer be written are refused with 503 ``disk-full`` and Retry-After
    (with PostgreSQL the store is elsewhere and calls go on), never a 500; once space is
    freed everything recovers, and the outage is one log line each way."""
    caplog.set_level(logging.WARNING, logger="gateway.dependencies")
    data_dir = small_disk / "data"
    data_dir.mkdir()
    (data_dir / "sources").symlink_to(source_dir / "sources")
    settings = settings.replace(data_dir=data_dir, disk_min_free_mb=1)
    gateway, creds = await build_world(settings, clock)
    await limited_scenario(gateway.governance, SCENARIO, QUOTAS, clock.now())
    client = TestClient(TestServer(create_app(gateway), host="127.0.0.1"))
    await client.start_server()
    node = World(gateway, client, clock, "", creds["merchant"], creds["staff"], {})
    answers = Answers()
    sqlite = settings.database.url == ""
    try:
        token = await node.token(f"scenario:{SCENARIO}")
        staff = {"Authorization": f"Bearer {await node.staff_token(Role.OPERATOR)}"}
        body = _verify_body(_sample_code())
        url = f"/v1/scenarios/{SCENARIO}/datasets/enterprises/verify"

        async def call() -> None:
            resp = await client.post(url, json=body, headers={"Authorization": f"Bearer {token}"})
            answers.see(resp.status, resp.headers, await resp.read())

        await call()
        assert answers.counts == {"200": 1}
        filler = _fill(small_disk)

        resp = await client.get("/readyz", headers=staff)
        ready = await resp.json()
        assert resp.status == 503, ready
        assert ready["checks"]["disk"]["ok"] is False

        # 8 clients until the store refuses for want of space (SQLite), or a fixed number
        # of calls (PostgreSQL: nothing of a call is written to the full disk).
        for _ in range(400 if sqlite else 25):
            await asyncio.gather(*(call() for _ in range(8)))
            if sqlite and answers.count("503 /problems/disk-full"):
                break
        if sqlite:
            assert answers.count("503 /problems/disk-full") > 0, answers.counts
        assert answers.violations == []
        assert set(answers.counts) <= {"200", "503 /problems/disk-full"}, answers.counts

        filler.unlink()
        resp = await client.get("/readyz")
        assert resp.status == 200, await resp.text()
        before = answers.count("200")
        await asyncio.gather(*(call() for _ in range(8)))
        assert answers.count("200") == before + 8
    finally:
        await client.close()
        await gateway.close()
    messages = [r.getMessage() for r in caplog.records if r.name == "gateway.dependencies"]
    assert sum("dependency disk is down" in m for m in messages) == 1, messages
    assert sum("dependency disk is back" in m for m in messages) == 1, messages


# -- the keystore -------------------------------------------------------------------------


async def test_a_keystore_that_disappears_is_a_503_and_unready(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """The keystore file is moved away while serving: publishing the keys (which re-reads
    it) answers 503 ``keystore-unavailable`` without naming the path, readiness fails; once
    the file is back both recover. One log line each way."""
    caplog.set_level(logging.WARNING, logger="gateway.dependencies")
    path = world.gateway.settings.keystore_path
    staff = {"Authorization": f"Bearer {await world.staff_token(Role.OPERATOR)}"}
    moved = path.with_suffix(".moved")
    path.rename(moved)
    try:
        resp = await world.client.get("/.well-known/jwks.json")
        problem = await resp.json(content_type=None)
        assert resp.status == 503, problem
        assert problem["type"] == "/problems/keystore-unavailable"
        assert resp.headers["Retry-After"].isdigit()
        assert str(world.gateway.settings.data_dir) not in str(problem)
        resp = await world.client.get("/readyz", headers=staff)
        assert resp.status == 503
        assert (await resp.json())["checks"]["keystore"]["ok"] is False
    finally:
        moved.rename(path)
    assert (await world.client.get("/.well-known/jwks.json")).status == 200
    assert (await world.client.get("/readyz")).status == 200
    messages = [r.getMessage() for r in caplog.records if r.name == "gateway.dependencies"]
    assert sum("dependency keystore is down" in m for m in messages) == 1, messages
    assert sum("dependency keystore is back" in m for m in messages) == 1, messages


# -- graceful shutdown --------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _calls_held(settings: Settings) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """Hold every data call inside the gateway until the yielded ``release`` is awaited.

    PostgreSQL: a transaction of the test's locks the ``merchants`` table and the policy
    epoch moves, so each call waits in its policy reload, before it uses Redis, the data
    source and the call log. SQLite: the test holds the store's write lock, so each call
    waits for its record to be written (up to the gateway's 10 s busy timeout)."""
    if settings.database.url:
        conn = await asyncpg.connect(settings.database.url)
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute("LOCK TABLE merchants IN ACCESS EXCLUSIVE MODE")
        epoch = EpochFile(settings.epoch_path)
        epoch.bump()
        epoch.close()

        async def release_pg() -> None:
            await transaction.rollback()

        try:
            yield release_pg
        finally:
            await conn.close()
        return
    store = sqlite3.connect(str(settings.data_dir / "dsgw.sqlite3"), isolation_level=None)
    store.execute("BEGIN IMMEDIATE")

    async def release_sqlite() -> None:
        store.execute("ROLLBACK")

    try:
        yield release_sqlite
    finally:
        store.close()


async def test_shutdown_drains_calls_in_flight(
    settings: Settings, clock: FixedClock, tmp_path: Path
) -> None:
    """SIGTERM while 8 calls are inside the gateway (held by a lock of the test's): the
    server stops accepting, the calls finish once the lock goes, each answered 200 with a
    record that is in the log, and only then does the process close Redis, the store and
    the log writer and exit 0."""
    settings = settings.replace(redis_url=SHARED_REDIS, deployment=f"t{secrets.token_hex(4)}")
    creds = await _prepare(settings, clock)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    answers = Answers()
    with _serve(settings, port, log, DSGW_SHUTDOWN_DRAIN_SECONDS="60") as proc:
        async with aiohttp.ClientSession() as http:
            await _wait_up(http, base, proc)
            token = await _token(http, base, creds["merchant"], f"scenario:{SCENARIO}")
            url = f"{base}/v1/scenarios/{SCENARIO}/datasets/enterprises/verify"
            body = _verify_body(_sample_code())

            async def call() -> None:
                async with http.post(
                    url, json=body, headers={"Authorization": f"Bearer {token}"}
                ) as resp:
                    answers.see(resp.status, resp.headers, await resp.read())

            await call()
            async with _calls_held(settings) as release:
                calls = [asyncio.create_task(call()) for _ in range(8)]
                # Let the requests reach the lock (there is nothing to observe them by
                # from outside; they need milliseconds).
                await asyncio.sleep(1.0)
                assert not any(task.done() for task in calls)
                proc.terminate()

                async def closed() -> bool:
                    try:
                        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    except OSError:
                        return True
                    writer.close()
                    return False

                await _until(closed, "the server to stop accepting", log=log, proc=proc)
                assert not any(task.done() for task in calls)
                await release()
                await asyncio.gather(*calls)
        await asyncio.to_thread(proc.wait, 60)
    assert proc.returncode == 0, log.read_text()
    assert answers.violations == []
    assert answers.counts == {"200": 9}
    await _records_exist(settings, answers.answered)


# -- classification ---------------------------------------------------------------------


def _raised(exc: BaseException, cause: BaseException | None = None) -> BaseException:
    """``exc`` as it arrives when raised (``from cause``): with its links set."""
    try:
        if cause is None:
            raise exc
        raise exc from cause
    except BaseException as caught:
        return caught


@pytest.mark.parametrize(
    ("exc", "slug", "outage"),
    [
        (
            ConnectionRefusedError(111, "Connect call failed ('10.0.0.7', 5432)"),
            "store-unavailable",
            True,
        ),
        (
            asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
            "store-unavailable",
            True,
        ),
        (
            asyncpg.exceptions.AdminShutdownError("terminating connection"),
            "store-unavailable",
            True,
        ),
        (
            psycopg.OperationalError("connection failed: Connection refused"),
            "store-unavailable",
            True,
        ),
        (PoolTimeoutError("QueuePool limit reached"), "store-unavailable", False),
        (OSError(errno.ENOSPC, "No space left on device"), "disk-full", True),
        (RedisConnectionError("Connection closed by server."), "quota-unavailable", True),
        (
            KeystoreError("keystore: /srv/dsgw/keystore.json has disappeared"),
            "keystore-unavailable",
            True,
        ),
        # An internal error wrapping a store failure is the store's failure.
        (
            _raised(
                DsgwError("anchoring: reading the status failed"), ConnectionRefusedError(111, "x")
            ),
            "store-unavailable",
            True,
        ),
        # Not a dependency's failure: left alone (a bug stays a 500, a refusal its 4xx).
        (ValueError("a bug"), None, False),
        (_raised(DsgwError("a bug"), KeyError("k")), None, False),
        (_raised(ValidationError("bad input"), OSError(errno.ENOSPC, "full")), None, False),
        # A department's data source that is down is not the gateway's store.
        (
            _raised(
                ConnectorError("the source could not answer"), psycopg.OperationalError("refused")
            ),
            None,
            False,
        ),
    ],
)
def test_failures_are_classified_in_one_place(
    exc: BaseException, slug: str | None, outage: bool
) -> None:
    """``dependency_error`` over real exception objects of each driver: the problem type,
    whether it counts as an outage, and a detail that never repeats the driver's text."""
    error = dependency_error(exc)
    if slug is None:
        assert error is None
        return
    assert error is not None
    assert (error.slug, error.status, error.outage) == (slug, 503, outage)
    assert error.retry_after is not None
    assert not LEAKS.search(error.detail) and "10.0.0.7" not in error.detail
    assert "/srv/dsgw" not in error.detail
