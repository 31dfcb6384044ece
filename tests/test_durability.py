"""Nothing the gateway answered is lost when its process is killed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from gateway.cli.demo import DEMO_SCENARIO
from gateway.db.engines import create_engine
from gateway.ledger.checkpoints import latest_checkpoint
from gateway.ledger.log import read_entry
from gateway.settings import Settings
from tests.support.ledger import chain_is_valid
from tests.support.world import FixedClock, build_world


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _server(settings: Settings, port: int) -> Iterator[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSGW_")}
    env.update(
        DSGW_DATA_DIR=str(settings.data_dir),
        DSGW_DATABASE_URL=settings.database.url,
        DSGW_KEYSTORE_PASSPHRASE=settings.keystore.passphrase,
        DSGW_SECRET_HASH_TIME_COST="1",
        DSGW_SECRET_HASH_MEMORY_KIB="8192",
        DSGW_CHAIN="none",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


async def _wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            if proc.poll() is not None:
                raise AssertionError(f"server exited: {proc.communicate()[1].decode()}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{base}/healthz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise AssertionError("server did not start")


async def _load_until_stopped(
    base: str, token: str, code: str, stop: asyncio.Event
) -> list[tuple[str, str]]:
    """Fire queries from 16 workers until ``stop``; return (record id, hash) of every 200."""
    answered: list[tuple[str, str]] = []
    url = f"{base}/v1/scenarios/{DEMO_SCENARIO}/datasets/enterprises/query"

    async def worker(http: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            try:
                async with http.post(
                    url,
                    json={"filters": {"credit_code": code}},
                    headers={"Authorization": f"Bearer {token}"},
                ) as resp:
                    await resp.read()
                    if resp.status == 200:
                        answered.append(
                            (resp.headers["Dsgw-Record-Id"], resp.headers["Dsgw-Record-Hash"])
                        )
            except (TimeoutError, aiohttp.ClientError):
                return

    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(worker(http) for _ in range(16)))
    return answered


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
async def test_answered_calls_survive_the_process(
    settings: Settings, clock: FixedClock, tmp_path: Path, sig: signal.Signals
) -> None:
    gateway, creds = await build_world(settings, clock)
    await gateway.close()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with _server(settings, port) as proc:
        await _wait_ready(base, proc)
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{base}/oauth/token",
                data={"grant_type": "client_credentials", "scope": f"scenario:{DEMO_SCENARIO}"},
                headers={"Authorization": aiohttp.encode_basic_auth(*creds["merchant"])},
            ) as resp,
        ):
            token = (await resp.json())["access_token"]
        from connectors import synthetic

        code = str(next(synthetic.generate("enterprises", 1, seed=7))["credit_code"])
        stop = asyncio.Event()
        load = asyncio.create_task(_load_until_stopped(base, token, code, stop))
        await asyncio.sleep(1.5)
        proc.send_signal(sig)
        await asyncio.to_thread(proc.wait, 30)
        stop.set()
        answered = await load
        if sig == signal.SIGTERM:
            assert proc.returncode == 0
    assert len(answered) > 10
    engine = create_engine(settings.resolved_database_url)
    try:
        for record_id, leaf in answered:
            entry = await read_entry(engine, "calls", int(record_id.split("/")[1]))
            assert entry is not None, f"{record_id} was answered but is not in the log"
            assert entry.leaf_hash.hex() == leaf
        total = await chain_is_valid(engine, "calls")
        assert total >= len(answered)
        if sig == signal.SIGTERM:
            # A server that stops cleanly signs a checkpoint covering its last call.
            assert (await latest_checkpoint(engine, "calls")).size == total
    finally:
        await engine.dispose()
