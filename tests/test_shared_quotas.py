"""Quotas and rate limits shared through Redis by two gateway processes on one store.

Each node is a separate ``Gateway`` with its own HTTP server on loopback, as a second
process or machine would be; both share the database and the Redis at 127.0.0.1:6379.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from gateway.api.app import create_app
from gateway.cli.demo import DEMO_MERCHANT
from gateway.clock import FixedClock
from gateway.runtime import Gateway
from gateway.settings import Settings
from tests.support.enrolment import limited_scenario
from tests.support.world import World, build_world

REDIS_URL = os.environ.get("DSGW_TEST_REDIS", "redis://127.0.0.1:6379/15")
SCENARIO = "credit-limited"


@pytest.fixture
async def cluster(settings: Settings, clock: FixedClock) -> AsyncIterator[tuple[World, World]]:
    """Two nodes sharing the store and Redis, and a scenario with small quotas."""
    shared = settings.replace(redis_url=REDIS_URL, deployment=f"t{secrets.token_hex(4)}")
    gateway_a, creds = await build_world(shared, clock)
    await limited_scenario(
        gateway_a.governance, SCENARIO, {"rate_per_minute": 6, "daily_calls": 10}, clock.now()
    )
    gateway_b = await Gateway.open(shared, clock=clock)
    nodes = []
    for gateway in (gateway_a, gateway_b):
        client = TestClient(TestServer(create_app(gateway), host="127.0.0.1"))
        await client.start_server()
        nodes.append(
            World(
                gateway=gateway,
                client=client,
                clock=clock,
                merchant_id=DEMO_MERCHANT,
                merchant_client=creds["merchant"],
                staff=creds["staff"],
                sample={},
            )
        )
    try:
        yield nodes[0], nodes[1]
    finally:
        redis = Redis.from_url(REDIS_URL)
        keys = [k async for k in redis.scan_iter(f"dsgw:{shared.deployment}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
        for node in nodes:
            await node.client.close()
            await node.gateway.close()


async def verify(node: World, token: str, code: str) -> tuple[int, str]:
    status, body, _ = await node.data(
        token,
        "enterprises",
        "verify",
        {"values": {"credit_code": code, "name": "x"}},
        scenario=SCENARIO,
    )
    return status, str(body.get("type", "")) if isinstance(body, dict) else ""


async def test_rate_limit_is_shared_by_both_nodes(cluster: tuple[World, World]) -> None:
    a, b = cluster
    token = await a.token(f"scenario:{SCENARIO}")
    code = "91430100MA4L000000"
    # Six calls a minute in all, alternating nodes: the seventh is refused on either node.
    for i in range(6):
        status, _ = await verify(a if i % 2 else b, token, code)
        assert status == 200
    for node in (a, b):
        status, problem = await verify(node, token, code)
        assert (status, problem) == (429, "/problems/rate-limited")
    # Ten seconds later one call (6 per minute) is available again, on one node only.
    a.clock.advance(dt.timedelta(seconds=10))
    assert (await verify(b, token, code))[0] == 200
    assert (await verify(a, token, code))[0] == 429


async def test_daily_quota_is_exact_across_nodes_and_seeded_from_the_log(
    cluster: tuple[World, World],
) -> None:
    a, b = cluster
    token = await a.token(f"scenario:{SCENARIO}")
    code = "91430100MA4L000000"
    allowed = 0
    for i in range(14):
        a.clock.advance(dt.timedelta(seconds=11))  # stay under the rate limit
        status, problem = await verify(b if i % 3 else a, token, code)
        if status == 200:
            allowed += 1
        else:
            assert (status, problem) == (429, "/problems/quota-exceeded")
    assert allowed == 10
    # Redis loses the day's counter (flushed, failed over): it is seeded again from the call
    # log, which holds the ten allowed calls, so the quota stays used up.
    redis = Redis.from_url(REDIS_URL)
    prefix = f"dsgw:{a.gateway.settings.deployment}:day:"
    keys = [k async for k in redis.scan_iter(prefix + "*")]
    assert len(keys) == 1
    await redis.delete(*keys)
    await redis.aclose()
    a.clock.advance(dt.timedelta(seconds=11))
    assert await verify(b, token, code) == (429, "/problems/quota-exceeded")


async def test_an_unreachable_redis_refuses_the_call(settings: Settings, clock: FixedClock) -> None:
    """Fail closed: without its quota store a call is refused (503), and still logged."""
    dead = settings.replace(redis_url="redis://127.0.0.1:1/0")
    gateway, creds = await build_world(dead, clock)
    client = TestClient(TestServer(create_app(gateway), host="127.0.0.1"))
    await client.start_server()
    node = World(gateway, client, clock, DEMO_MERCHANT, creds["merchant"], creds["staff"], {})
    try:
        token = await node.token()
        status, body, headers = await node.data(
            token, "enterprises", "verify", {"values": {"credit_code": "x", "name": "y"}}
        )
        assert status == 503 and body["type"] == "/problems/quota-unavailable"
        assert headers["Dsgw-Record-Id"].startswith("calls/")
    finally:
        await client.close()
        await gateway.close()
