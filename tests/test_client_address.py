"""The caller's address behind a trusted load balancer (``trusted_proxies``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.api.app import create_app
from gateway.api.client_address import client_address
from gateway.clock import FixedClock
from gateway.errors import ConfigError
from gateway.ledger.log import read_entries
from gateway.settings import Network, Settings, load_settings, parse_networks
from tests.support.world import build_world

Ask = Callable[[str, str | None], Awaitable[str]]


async def _echo_client(networks: tuple[Network, ...]) -> TestClient:  # type: ignore[type-arg]
    async def echo(request: web.Request) -> web.Response:
        return web.Response(text=str(client_address(request, networks)))

    app = web.Application()
    app.router.add_get("/", echo)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
async def ask() -> AsyncIterator[Ask]:
    clients: list[TestClient] = []  # type: ignore[type-arg]

    async def ask(trusted: str, forwarded: str | None) -> str:
        client = await _echo_client(parse_networks(trusted))
        clients.append(client)
        headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
        resp = await client.get("/", headers=headers)
        return await resp.text()

    yield ask
    for client in clients:
        await client.close()


@pytest.mark.parametrize(
    ("trusted", "forwarded", "expected"),
    [
        ("", "203.0.113.7", "127.0.0.1"),  # no proxy trusted: the header is ignored
        ("10.0.0.0/8", "203.0.113.7", "127.0.0.1"),  # the peer is not a trusted proxy
        ("127.0.0.1", "203.0.113.7", "203.0.113.7"),
        ("127.0.0.1", None, "127.0.0.1"),
        # A client's forged entry comes first; the proxy appended the real one.
        ("127.0.0.1", "198.51.100.1, 203.0.113.7", "203.0.113.7"),
        # Two trusted hops (an edge proxy, then the load balancer) are skipped.
        ("127.0.0.0/8, 10.0.0.0/8", "203.0.113.7, 10.1.2.3", "203.0.113.7"),
        ("127.0.0.1", "2001:db8::5", "2001:db8::5"),
        ("127.0.0.1", "203.0.113.7, not-an-address", "127.0.0.1"),  # malformed: trust none
    ],
)
async def test_forwarded_address_believed_only_from_trusted_proxies(
    ask: Ask, trusted: str, forwarded: str | None, expected: str
) -> None:
    assert await ask(trusted, forwarded) == expected


def test_a_bad_trusted_proxy_entry_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"'10\.0\.0\.300'"):
        load_settings(None, environ={"DSGW_TRUSTED_PROXIES": "127.0.0.1, 10.0.0.300"})


async def test_call_records_carry_the_forwarded_client(
    settings: Settings, clock: FixedClock
) -> None:
    gateway, _creds = await build_world(settings.replace(trusted_proxies="127.0.0.1/32"), clock)
    client = TestClient(TestServer(create_app(gateway), host="127.0.0.1"))
    await client.start_server()
    try:
        resp = await client.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.7"},
        )
        assert resp.status == 401
    finally:
        await client.close()
        await gateway.close()
    newest = await _newest_call(settings)
    assert newest["remote"] == "203.0.113.7"


async def _newest_call(settings: Settings) -> dict[str, object]:
    from gateway.db.engines import create_engine

    engine = create_engine(settings.resolved_database_url)
    try:
        [entry] = await read_entries(engine, "calls", limit=1)
    finally:
        await engine.dispose()
    body: dict[str, object] = json.loads(entry.payload)
    return body
