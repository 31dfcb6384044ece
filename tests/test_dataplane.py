"""The usable-but-invisible data plane, over loopback HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import defaultdict
from decimal import Decimal
from typing import Any

from connectors import synthetic
from gateway.cli.demo import DEMO_SCENARIO, demo_datasets, demo_scenario
from gateway.governance.service import LOCAL_ADMIN
from gateway.ledger.log import read_entry
from tests.support.enrolment import publish_scenario
from tests.support.world import ROWS, World


async def test_verify_true_false_and_unknown(world: World) -> None:
    token = await world.token()
    s = world.sample
    status, body, _ = await world.data(
        token,
        "enterprises",
        "verify",
        {
            "values": {
                "credit_code": s["credit_code"],
                "legal_rep_name": f"  {s['legal_rep_name']} ",
            }
        },
    )
    assert status == 200 and body == {"match": True, "mismatched": []}
    status, body, _ = await world.data(
        token,
        "enterprises",
        "verify",
        {
            "values": {
                "credit_code": s["credit_code"],
                "legal_rep_name": "王小明",
                "name": s["name"],
            }
        },
    )
    assert status == 200 and body == {"match": False, "mismatched": ["legal_rep_name"]}
    unknown = s["credit_code"][:-1] + ("0" if s["credit_code"][-1] != "0" else "1")
    status, body, _ = await world.data(
        token, "enterprises", "verify", {"values": {"credit_code": unknown, "name": s["name"]}}
    )
    assert status == 200 and body["match"] is False
    # The answer never carries a stored value.
    assert s["legal_rep_id"] not in json.dumps(body)


async def test_query_returns_only_granted_fields_masked(world: World) -> None:
    token = await world.token()
    s = world.sample
    status, body, _headers = await world.data(
        token, "enterprises", "query", {"filters": {"credit_code": s["credit_code"]}}
    )
    assert status == 200, body
    grant = demo_scenario(world.clock.now())["grants"][0]
    row = body["rows"][0]
    assert set(row) == set(grant["fields"])
    assert row["credit_code"] == s["credit_code"]
    assert row["legal_rep_name"] != s["legal_rep_name"]
    assert row["legal_rep_name"].startswith(s["legal_rep_name"][0]) and "*" in row["legal_rep_name"]
    assert body["masked_fields"] == ["legal_rep_name"]
    raw = json.dumps(body, ensure_ascii=False)
    for secret_field in ("legal_rep_id", "legal_rep_mobile", "address"):
        assert str(s[secret_field]) not in raw


async def test_query_paging_and_row_cap(world: World) -> None:
    # Pages are compared with the source rows, so this dataset declares no canary rows
    # (paging with canaries: tests/test_tracing.py).
    plain = next(d for d in demo_datasets() if d["id"] == "enterprises")
    del plain["canaries"]
    await world.gateway.governance.catalog.register_dataset(
        LOCAL_ADMIN, plain, replace_existing=True
    )
    token = await world.token()
    rows = list(synthetic.generate("enterprises", ROWS, seed=7))
    district = max(
        {r["district"] for r in rows}, key=lambda d: sum(1 for r in rows if r["district"] == d)
    )
    expected = sorted(r["credit_code"] for r in rows if r["district"] == district)
    seen: list[str] = []
    offset: int | None = 0
    while offset is not None:
        status, body, _ = await world.data(
            token,
            "enterprises",
            "query",
            {
                "filters": {"district": district},
                "fields": ["credit_code"],
                "limit": 50,
                "offset": offset,
            },
        )
        assert status == 200, body
        seen += [r["credit_code"] for r in body["rows"]]
        offset = body["next_offset"]
    assert sorted(seen) == expected
    status, body, _ = await world.data(
        token, "enterprises", "query", {"filters": {"district": district}, "limit": 51}
    )
    assert status == 400 and "limit" in body["detail"]


async def test_out_of_scope_is_403_naming_what_and_logged(world: World) -> None:
    token = await world.token()
    s = world.sample
    cases = [
        ("vehicles", "query", {"filters": {"district": "芙蓉区"}}, {"dataset": "vehicles"}),
        ("social-insurance", "query", {"filters": {"district": "芙蓉区"}}, {"mode": "query"}),
        (
            "enterprises",
            "query",
            {"filters": {"credit_code": s["credit_code"]}, "fields": ["name", "legal_rep_id"]},
            {"fields": ["legal_rep_id"], "purpose": "return"},
        ),
        (
            "enterprises",
            "query",
            {"filters": {"legal_rep_mobile": "13800000000"}},
            {"fields": ["legal_rep_mobile"], "purpose": "filter"},
        ),
        (
            "enterprises",
            "aggregate",
            {"group_by": ["legal_rep_name"], "measures": [{"fn": "count"}]},
            {"fields": ["legal_rep_name"], "purpose": "group_by"},
        ),
        (
            "household-registry",
            "verify",
            {"values": {"person_id": "x", "district": "y"}},
            {"dataset": "household-registry"},
        ),
    ]
    for dataset, mode, body, refused in cases:
        status, problem, headers = await world.data(token, dataset, mode, body)
        assert status == 403, (dataset, mode, problem)
        assert problem["type"] == "/problems/out-of-scope"
        assert problem["refused"] == refused
        entry = await read_entry(
            world.gateway.engine, "calls", int(headers["Dsgw-Record-Id"].split("/")[1])
        )
        assert entry is not None
        record = json.loads(entry.payload)
        assert record["decision"] == "deny" and record["reason"] == "out-of-scope"
        assert record["dataset"] == dataset and record["merchant"] == world.merchant_id
    # Another scenario named in the path than the token's: refused too.
    status, problem, _ = await world.data(
        token,
        "enterprises",
        "verify",
        {"values": {"credit_code": "x", "name": "y"}},
        scenario="other-scenario",
    )
    assert status == 403 and problem["refused"] == {"scenario": "other-scenario"}


async def test_bad_input_gets_4xx_problem_never_500(world: World) -> None:
    token = await world.token()
    url = f"/v1/scenarios/{DEMO_SCENARIO}/datasets/enterprises/query"
    auth = {"Authorization": f"Bearer {token}"}
    raw_cases: list[tuple[bytes, str, int]] = [
        (b"{not json", "application/json", 400),
        (b'{"filters": {"district": "a"}, "filters": {}}', "application/json", 400),
        (b"[1, 2]", "application/json", 400),
        (b'{"filters": {"district": NaN}}', "application/json", 400),
        (b"\xff\xfe", "application/json", 400),
        (b'{"filters": {"district": "a"}}', "text/plain", 415),
        (b'{"filters": {"district": "' + b"a" * 70_000 + b'"}}', "application/json", 413),
        (b"[" * 5000 + b"]" * 5000, "application/json", 400),
    ]
    for raw, ctype, status in raw_cases:
        resp = await world.client.post(url, data=raw, headers={**auth, "Content-Type": ctype})
        assert resp.status == status, (raw[:30], await resp.text())
        assert resp.content_type == "application/problem+json"
    json_cases: list[tuple[dict[str, Any], int]] = [
        ({"filters": {"district": "芙蓉区"}, "extra": 1}, 400),
        ({"filters": {}}, 400),
        ({"filters": {"status": "存续"}}, 400),  # no required filter: no bulk export
        ({"filters": {"district": {"like": "%"}}}, 400),
        ({"filters": {"district": ["a"]}}, 400),
        ({"filters": {"no_such_field": "a"}}, 400),
        ({"filters": {"district": "芙蓉区"}, "limit": "10"}, 400),
        ({"filters": {"district": "芙蓉区"}, "offset": -1}, 400),
        ({"filters": {"district": {"in": []}}}, 400),
        ({"filters": {"credit_code": None}}, 400),
    ]
    for body, status in json_cases:
        got, problem, _ = await world.data(token, "enterprises", "query", body)
        assert got == status, (body, problem)
        assert "traceback" not in json.dumps(problem).lower()
    got, problem, _ = await world.data(
        token,
        "enterprises",
        "aggregate",
        {"group_by": ["district"], "measures": [{"fn": "sum", "field": "name"}]},
    )
    assert got == 403
    got, problem, _ = await world.data(token, "enterprises", "export", {})
    assert got == 404
    resp = await world.client.get(url, headers=auth)
    assert resp.status == 405 and resp.content_type == "application/problem+json"


async def test_injection_in_filter_values_is_just_data(world: World) -> None:
    token = await world.token()
    for value in ["' OR '1'='1", "芙蓉区'; DROP TABLE enterprises; --", "%", "_", "\\"]:
        status, body, _ = await world.data(
            token, "enterprises", "query", {"filters": {"district": value}}
        )
        assert status == 200 and body["rows"] == [], (value, body)
    status, body, _ = await world.data(
        token,
        "enterprises",
        "query",
        {"filters": {"district": {"in": list(synthetic.DISTRICTS)}, "industry": {"prefix": "%%"}}},
    )
    assert status == 200 and body["rows"] == [], body
    s = world.sample
    status, body, _ = await world.data(
        token, "enterprises", "query", {"filters": {"credit_code": s["credit_code"]}}
    )
    assert status == 200 and body["count"] == 1  # the table is still there


async def test_aggregate_suppresses_small_cells(world: World) -> None:
    token = await world.token()
    status, body, _ = await world.data(
        token,
        "enterprises",
        "aggregate",
        {
            "group_by": ["district"],
            "measures": [
                {"fn": "count"},
                {"fn": "sum", "field": "registered_capital"},
                {"fn": "avg", "field": "registered_capital"},
            ],
        },
    )
    assert status == 200, body
    rows = list(synthetic.generate("enterprises", ROWS, seed=7))
    subjects: dict[str, set[str]] = defaultdict(set)
    totals: dict[str, Decimal] = defaultdict(Decimal)
    counts: dict[str, int] = defaultdict(int)
    for r in rows:
        subjects[r["district"]].add(r["credit_code"])
        totals[r["district"]] += r["registered_capital"]
        counts[r["district"]] += 1
    big = {d for d, subs in subjects.items() if len(subs) >= 10}
    small = set(subjects) - big
    assert small, "the synthetic data should have a small district"
    assert {g["district"] for g in body["groups"]} == big
    assert body["suppressed_groups"] == len(small)
    for group in body["groups"]:
        d = group["district"]
        assert group["count"] == counts[d]
        assert Decimal(group["sum_registered_capital"]) == totals[d]
        assert abs(Decimal(group["avg_registered_capital"]) - totals[d] / counts[d]) < Decimal(
            "0.0001"
        )


async def test_every_response_is_logged_with_matching_hash(world: World) -> None:
    token = await world.token()
    s = world.sample
    resp = await world.client.post(
        f"/v1/scenarios/{DEMO_SCENARIO}/datasets/enterprises/query",
        json={"filters": {"credit_code": s["credit_code"]}},
        headers={"Authorization": f"Bearer {token}"},
    )
    raw = await resp.read()
    stream, seq = resp.headers["Dsgw-Record-Id"].split("/")
    # A fresh connection proves the record was committed before the answer arrived.
    from gateway.db.engines import create_engine

    engine = create_engine(world.gateway.settings.resolved_database_url)
    try:
        entry = await read_entry(engine, stream, int(seq))
    finally:
        await engine.dispose()
    assert entry is not None
    assert entry.leaf_hash.hex() == resp.headers["Dsgw-Record-Hash"]
    record = json.loads(entry.payload)
    assert record["response_sha256"] == hashlib.sha256(raw).hexdigest()
    assert record["decision"] == "allow" and record["rows"] == 1
    assert record["scenario"] == DEMO_SCENARIO and record["agreement"] == "agr-demo"
    # The credit code is sensitive nowhere, so it is logged; a sensitive filter value is not.
    assert record["parameters"]["credit_code"] == s["credit_code"]
    status, _, headers = await world.data(
        token,
        "enterprises",
        "verify",
        {"values": {"credit_code": s["credit_code"], "legal_rep_id": s["legal_rep_id"]}},
    )
    assert status == 200
    entry = await read_entry(
        world.gateway.engine, "calls", int(headers["Dsgw-Record-Id"].split("/")[1])
    )
    assert entry is not None
    assert s["legal_rep_id"] not in entry.payload.decode()


async def test_rate_limit_and_daily_quota(world: World) -> None:
    gov = world.gateway.governance
    now = world.clock.now()
    tight = demo_scenario(now) | {"id": "tight", "quotas": {"rate_per_minute": 3, "daily_calls": 5}}
    await publish_scenario(
        gov, tight, now, days=30, merchant_id=world.merchant_id, shares=(40, 30, 30)
    )
    token = await world.token("scenario:tight")
    body = {"values": {"credit_code": world.sample["credit_code"], "name": "x"}}
    statuses = [
        (await world.data(token, "enterprises", "verify", body, scenario="tight"))[0]
        for _ in range(4)
    ]
    assert statuses == [200, 200, 200, 429]
    resp = await world.client.post(
        "/v1/scenarios/tight/datasets/enterprises/verify",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status == 429 and 1 <= int(resp.headers["Retry-After"]) <= 20
    world.clock.advance(dt.timedelta(minutes=1))
    statuses = [
        (await world.data(token, "enterprises", "verify", body, scenario="tight"))[0]
        for _ in range(3)
    ]
    assert statuses == [200, 200, 429]
    resp = await world.client.post(
        "/v1/scenarios/tight/datasets/enterprises/verify",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
    )
    problem = await resp.json(content_type=None)
    assert problem["type"] == "/problems/quota-exceeded"
    assert int(resp.headers["Retry-After"]) <= 86_400
