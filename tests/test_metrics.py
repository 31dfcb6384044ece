"""`GET /metrics` over HTTP: staff with `metrics.read` only, figures read from the store."""

from __future__ import annotations

import datetime as dt

from prometheus_client.parser import text_string_to_metric_families

from gateway.authorization.roles import Role
from tests.support.world import World


async def _scrape(world: World, token: str | None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = await world.client.get("/metrics", headers=headers)
    return resp.status, await resp.text()


def _samples(text: str) -> dict[tuple[str, str], float]:
    return {
        (sample.name, sample.labels.get("stream", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_need_a_staff_token_with_metrics_read(world: World) -> None:
    assert (await _scrape(world, None))[0] == 401
    assert (await _scrape(world, await world.token()))[0] == 401  # a merchant's data token
    authority = await world.staff_token(Role.AUTHORITY)
    status, body = await _scrape(world, authority)
    assert status == 403 and "metrics.read" in body
    for role in (Role.OPERATOR, Role.SUPERVISOR):
        assert (await _scrape(world, await world.staff_token(role)))[0] == 200


async def test_metrics_show_log_sizes_and_the_anchoring_backlog(world: World) -> None:
    token = await world.token()
    body = {"values": {"credit_code": world.sample["credit_code"], "name": "x"}}
    for _ in range(5):
        assert (await world.data(token, "enterprises", "verify", body))[0] == 200
    head = await world.gateway.checkpointer.checkpoint("calls")
    assert head is not None
    world.clock.advance(dt.timedelta(seconds=90))
    status, text = await _scrape(world, await world.staff_token(Role.OPERATOR))
    assert status == 200
    samples = _samples(text)
    # Scrapes are call records like every request (made after their figures are read).
    assert samples[("dsgw_log_records", "calls")] >= head.size
    assert samples[("dsgw_checkpoint_size", "calls")] == head.size
    # Anchoring is off here: everything checkpointed is backlog, 90 s old.
    assert samples[("dsgw_anchored_size", "calls")] == 0
    assert samples[("dsgw_anchoring_backlog_records", "calls")] == head.size
    assert samples[("dsgw_anchoring_backlog_checkpoints", "calls")] >= 1
    assert samples[("dsgw_anchoring_lag_seconds", "calls")] >= 90
    assert ("dsgw_chain_reachable", "") not in samples
    again = _samples((await _scrape(world, await world.staff_token(Role.SUPERVISOR)))[1])
    # Since: the first scrape's own record and the supervisor's token request.
    assert again[("dsgw_log_records", "calls")] == samples[("dsgw_log_records", "calls")] + 2


async def test_readyz_means_something(world: World) -> None:
    # The checks are for staff who watch the gateway (tests/test_role_boundaries.py).
    staff = {"Authorization": f"Bearer {await world.staff_token(Role.OPERATOR)}"}
    resp = await world.client.get("/readyz", headers=staff)
    body = await resp.json()
    assert resp.status == 200 and body["status"] == "ready"
    # Everything a call needs (Redis only when configured: not here).
    assert {name for name, check in body["checks"].items() if check["ok"]} == {
        "database",
        "log_writer",
        "keystore",
        "disk",
        "policy",
    }
    # Without its log writer the gateway cannot answer a call: not ready.
    await world.gateway.log.close()
    resp = await world.client.get("/readyz", headers=staff)
    body = await resp.json()
    assert resp.status == 503 and body["checks"]["log_writer"] == {"ok": False}
    assert (await world.client.get("/healthz")).status == 200  # alive all the same


async def test_metrics_count_calls_latency_and_log_batches(world: World) -> None:
    token = await world.token()
    body = {"values": {"credit_code": world.sample["credit_code"], "name": "x"}}
    for _ in range(3):
        assert (await world.data(token, "enterprises", "verify", body))[0] == 200
    assert (await world.data(token, "vehicles", "verify", body))[0] == 403
    status, text = await _scrape(world, await world.staff_token(Role.OPERATOR))
    assert status == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    scenario = "enterprise-credit"
    assert (
        value("dsgw_requests_total", kind="data", scenario=scenario, decision="allow", status="2xx")
        == 3
    )
    assert (
        value("dsgw_requests_total", kind="data", scenario=scenario, decision="deny", status="4xx")
        == 1
    )
    assert value("dsgw_request_duration_seconds_count", kind="data") == 4
    assert value("dsgw_log_commit_batch_records_count") >= 1
    assert value("dsgw_log_commit_batch_records_sum") >= 4
