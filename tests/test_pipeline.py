"""The request pipeline over a real server, on SQLite and PostgreSQL: every request leaves
its record before its answer, hostile input is refused at the edge with a 400 naming the
field, a failing handler still leaves an ``internal-error`` record, and requests the HTTP
parser cannot read get a recorded problem document without echo or banner."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from aiohttp import ClientResponse
from sqlalchemy import select

from gateway.authorization.roles import Role
from gateway.cli.demo import demo_credit_code
from gateway.db.schema import TradeRow
from gateway.ledger.log import LogEntry, read_entry
from tests.support.seeded import PRODUCT, Processor, seed_world
from tests.support.world import World

PROBLEM = "application/problem+json"


async def _record(world: World, response: ClientResponse) -> tuple[LogEntry, dict[str, Any]]:
    """The record a response names, checked against the response it describes."""
    record_id = response.headers.get("Dsgw-Record-Id")
    assert record_id, f"{response.method} {response.url.path}: no Dsgw-Record-Id"
    stream, _, seq = record_id.partition("/")
    entry = await read_entry(world.gateway.engine, stream, int(seq))
    assert entry is not None, record_id
    assert response.headers["Dsgw-Record-Hash"] == entry.leaf_hash.hex()
    body = json.loads(entry.payload)
    assert body["status"] == response.status
    assert body["response_sha256"] == hashlib.sha256(await response.read()).hexdigest()
    return entry, body


async def test_every_route_kind_leaves_a_record(world: World) -> None:
    data = await world.token()
    admin = await world.staff_token(Role.OPERATOR)
    cases: list[tuple[str, str, dict[str, str], str]] = [
        ("GET", "/v1/catalog", {"Authorization": f"Bearer {data}"}, "read"),
        ("GET", "/v1/calls", {"Authorization": f"Bearer {data}"}, "read"),
        ("GET", "/v1/catalog", {}, "read"),
        ("GET", "/v1/ledger/calls/checkpoint", {"Authorization": f"Bearer {data}"}, "ledger"),
        ("GET", "/v1/ledger/calls/proof/inclusion?index=0", {}, "ledger"),
        ("GET", "/metrics", {"Authorization": f"Bearer {admin}"}, "metrics"),
        ("GET", "/metrics", {}, "metrics"),
        ("GET", "/openapi.json", {}, "meta"),
        ("GET", "/problems/validation", {}, "meta"),
        ("GET", "/.well-known/jwks.json", {}, "meta"),
        ("GET", "/no/such/route", {}, "unmatched"),
        ("DELETE", "/v1/catalog", {}, "unmatched"),
        ("PATCH", "/admin/merchants", {"Authorization": "Bearer nonsense"}, "unmatched"),
        ("GET", "/admin/merchants", {"Authorization": f"Bearer {admin}"}, "admin"),
        ("GET", "/v1/applications", {}, "account"),
    ]
    for method, path, headers, kind in cases:
        response = await world.client.request(method, path, headers=headers)
        entry, body = await _record(world, response)
        assert entry.kind == kind, (method, path, entry.kind)
        assert body["method"] == method
        if response.status >= 400:
            assert response.content_type == PROBLEM, (method, path)
            assert body["decision"] == "deny"
            assert (
                body["reason"] == (await response.json(content_type=None))["type"].rsplit("/", 1)[1]
            )
    # Health probes are counted, not recorded.
    for probe in ("/healthz", "/readyz"):
        response = await world.client.get(probe)
        assert "Dsgw-Record-Id" not in response.headers
    metrics = await world.client.get("/metrics", headers={"Authorization": f"Bearer {admin}"})
    assert 'dsgw_probe_requests_total{probe="healthz"} 1.0' in await metrics.text()


async def test_merchant_probing_another_merchants_records_is_recorded(world: World) -> None:
    token = await world.token()
    response = await world.client.get("/v1/calls/1", headers={"Authorization": f"Bearer {token}"})
    _entry, body = await _record(world, response)
    assert response.status == 404
    assert body["merchant"] == world.merchant_id and body["path"] == "/v1/calls/1"


HOSTILE_JSON = [
    ('{"values": {"credit_code": "\\ud800"}}', "values.credit_code"),
    ('{"values": {"\\udfff": "x"}}', "values: a key"),
    ('{"values": {"credit_code": "a\\u0000b"}}', "values.credit_code"),
    ('{"limit": ' + "9" * 5000 + "}", "limit"),
    ('{"limit": 9007199254740992}', "limit"),
    ('{"values": {"capital": 1e999999}}', "values.capital"),
    ('{"values": {"capital": 0.' + "1" * 60 + "}}", "values.capital"),
    ('{"filters": [' * 12 + "]" * 12 + "}", None),
]


async def test_hostile_json_is_refused_at_the_edge_with_its_record(world: World) -> None:
    for body, field in HOSTILE_JSON:
        await _refused_everywhere(world, body, field)


async def _refused_everywhere(world: World, body: str, field: str | None) -> None:
    data = await world.token()
    account = await world.token("account")
    admin = await world.staff_token(Role.AUTHORITY)
    targets = [
        ("/v1/scenarios/enterprise-credit/datasets/enterprises/verify", data),
        ("/v1/applications", account),
        ("/v1/products", account),
        ("/v1/onboarding", None),
        ("/admin/datasets", admin),
        ("/admin/scenarios", admin),
        ("/admin/merchants", admin),
    ]
    for path, token in targets:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        response = await world.client.post(path, data=body.encode(), headers=headers)
        assert response.status == 400, (body[:40], path, response.status, await response.text())
        problem = await response.json(content_type=PROBLEM)
        if field is not None:
            assert problem.get("field") == field, (body[:40], path, problem)
        _entry, record = await _record(world, response)
        assert record["decision"] == "deny" and record["reason"] == "validation"


async def test_hostile_form_values_are_refused(world: World) -> None:
    response = await world.client.post(
        "/oauth/token",
        data=b"grant_type=client_credentials&client_id=a%00b",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status == 400
    await _record(world, response)


HOSTILE_URLS = [
    "/v1/calls/" + "9" * 30,
    "/v1/calls/99999999999999999999",
    "/v1/calls/%C2%B2",
    "/v1/calls/%D9%A3",
    "/v1/calls/%20%201",
    "/v1/calls/-1",
    "/v1/calls/" + "9" * 30 + "/bundle",
    "/v1/ledger/calls/proof/inclusion?index=%C2%B2",
    "/v1/ledger/calls/proof/inclusion?index=1&size=" + "9" * 25,
    "/v1/ledger/calls/proof/consistency?first=%D9%A3&second=1",
    "/v1/calls?limit=%C2%B2",
    "/admin/calls?limit=" + "9" * 40,
    "/admin/bundles/calls/" + "9" * 30,
    "/admin/alerts?limit=%C2%B2",
    "/v1/scenarios/a%00b/datasets/enterprises/verify",
    "/v1/catalog?x=%00",
]


async def test_hostile_numbers_and_characters_in_urls(world: World) -> None:
    data = await world.token()
    admin = await world.staff_token(Role.SUPERVISOR)
    for path in HOSTILE_URLS:
        token = admin if path.startswith("/admin/") else data
        method = "POST" if "/datasets/" in path else "GET"
        response = await world.client.request(
            method, path, headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status == 400, (path, response.status, await response.text())
        assert response.content_type == PROBLEM
        await _record(world, response)


async def test_a_failing_handler_still_leaves_an_internal_error_record(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("injected failure")

    monkeypatch.setattr(world.gateway.tokens, "jwks", broken)
    response = await world.client.get("/.well-known/jwks.json")
    assert response.status == 500 and response.content_type == PROBLEM
    problem = await response.json(content_type=PROBLEM)
    assert "injected" not in json.dumps(problem) and "Traceback" not in json.dumps(problem)
    _entry, record = await _record(world, response)
    assert record["decision"] == "error"
    assert record["reason"] == "internal-error"
    assert record["reason_detail"] == "RuntimeError"


async def test_a_record_value_with_no_canonical_form_is_still_recorded(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defence in depth: should a handler put text with no UTF-8 form into its record (the
    edge checks make that a bug), the request is recorded without it, not unrecorded."""
    from gateway.api import merchant
    from gateway.api.appkeys import RECORD

    original = merchant._merchant_claims

    async def claims_with_a_bad_value(request: Any, snapshot: Any = None) -> Any:
        request[RECORD].parameters = {"value": "\ud800"}
        return await original(request, snapshot)

    monkeypatch.setattr(merchant, "_merchant_claims", claims_with_a_bad_value)
    token = await world.token()
    response = await world.client.get("/v1/catalog", headers={"Authorization": f"Bearer {token}"})
    assert response.status == 200
    _entry, record = await _record(world, response)
    assert record["parameters"] == {"unrecordable": "UnicodeEncodeError"}


async def _raw(world: World, request: bytes) -> tuple[int, dict[str, str], bytes]:
    server = world.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(request)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


@pytest.mark.parametrize(
    ("request_bytes", "status", "slug"),
    [
        (b"GET /v1/" + b"A" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri-too-long"),
        (
            b"GET /v1/catalog HTTP/1.1\r\nHost: x\r\nX-Big: " + b"B" * 9000 + b"\r\n\r\n",
            431,
            "header-too-large",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-%d: v\r\n" % i for i in range(200))
            + b"\r\n",
            431,
            "header-too-large",
        ),
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n", 400, "bad-request"),
        (b"BR\x00KEN\r\n\r\n", 400, "bad-request"),
    ],
    ids=["long-url", "long-header", "many-headers", "bad-length", "not-http"],
)
async def test_unreadable_requests_get_a_recorded_problem(
    world: World, request_bytes: bytes, status: int, slug: str
) -> None:
    got, headers, body = await _raw(world, request_bytes)
    assert got == status
    assert headers["content-type"].startswith(PROBLEM)
    assert "server" not in headers
    problem = json.loads(body)
    assert problem["type"] == f"/problems/{slug}"
    # Nothing of the input is echoed back.
    assert b"AAAA" not in body and b"BBBB" not in body and b"zz" not in body
    stream, _, seq = headers["dsgw-record-id"].partition("/")
    entry = await read_entry(world.gateway.engine, stream, int(seq))
    assert entry is not None and entry.kind == "protocol"
    assert entry.leaf_hash.hex() == headers["dsgw-record-hash"]
    record = json.loads(entry.payload)
    assert record["status"] == status and record["reason"] == slug
    assert record["response_sha256"] == hashlib.sha256(body).hexdigest()


async def test_problem_instance_is_a_uri_reference(world: World) -> None:
    response = await world.client.get("/v1/calls/ab cd%ZZ/é?q=1")
    problem = await response.json(content_type=PROBLEM)
    instance = problem["instance"]
    assert instance.isascii() and " " not in instance and instance.startswith("/v1/calls/")


async def test_an_unreadable_multipart_part_header_is_refused(world: World) -> None:
    """Found by the API fuzzer (tests/test_fuzz_api.py): a leaked-file upload whose part
    header has a control character made aiohttp's multipart reader raise an HTTP parser
    error that reached the pipeline as a 500."""
    supervisor = await world.staff_token(Role.SUPERVISOR)
    body = (
        b'--b\r\nContent-Disposition: form-data; name="x\x0ey"\r\n\r\n1\r\n'
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\na,b\r\n'
        b"--b--\r\n"
    )
    response = await world.client.post(
        "/admin/trace",
        data=body,
        headers={
            "Authorization": f"Bearer {supervisor}",
            "Content-Type": "multipart/form-data; boundary=b",
        },
    )
    assert response.status == 400, await response.text()
    problem = await response.json(content_type=PROBLEM)
    assert problem["type"] == "/problems/validation" and problem["field"] == "body"
    assert "x\x0ey" not in problem["detail"]
    _entry, record = await _record(world, response)
    assert record["reason"] == "validation"


async def test_an_empty_status_filter_is_refused_like_any_other_unknown_status(
    world: World,
) -> None:
    """Found by the API fuzzer: ``GET /admin/products?status=`` listed every product, though
    the document allows only the product statuses there (as ``/admin/applications`` and
    ``/admin/onboarding`` already enforce)."""
    operator = await world.staff_token(Role.OPERATOR)
    for query in ("status=", "status=bogus"):
        response = await world.client.get(
            f"/admin/products?{query}", headers={"Authorization": f"Bearer {operator}"}
        )
        assert response.status == 400, (query, await response.text())
        problem = await response.json(content_type=PROBLEM)
        assert problem["field"] == "status"
        await _record(world, response)
    response = await world.client.get(
        "/admin/products?status=listed", headers={"Authorization": f"Bearer {operator}"}
    )
    assert response.status == 200


@pytest.fixture
async def processor() -> AsyncIterator[Processor]:
    async with Processor.running() as service:
        yield service


async def test_a_delivery_body_with_a_decimal_number_is_passed_on_exactly(
    world: World, processor: Processor
) -> None:
    """Found by the API fuzzer: a delivery body with a number with a fraction (read as an
    exact Decimal at the edge) could not be forwarded to the product's service: a 500,
    after a purchased unit had been taken and was never given back."""
    seeded = await seed_world(world, processor)
    async with world.gateway.engine.connect() as conn:
        used_before = await conn.scalar(select(TradeRow.used))
    raw = b'{"credit_code": "9143", "weight": 0.1, "big": 1.8796537724380605e+24, "n": [1.50]}'
    response = await world.client.post(
        f"/v1/products/{PRODUCT}/deliveries",
        data=raw,
        headers={
            "Authorization": f"Bearer {seeded.tokens['product']}",
            "Content-Type": "application/json",
        },
    )
    assert response.status == 200, await response.text()
    assert (await response.json())["result"] == {"credit_code": "9143", "score": 87}
    await _record(world, response)
    # The service got the same numbers, digit for digit (not a float's approximation).
    forwarded = json.loads(processor.received[-1], parse_float=Decimal)
    assert forwarded == json.loads(raw, parse_float=Decimal)
    assert forwarded["n"] == [Decimal("1.50")]
    async with world.gateway.engine.connect() as conn:
        assert await conn.scalar(select(TradeRow.used)) == used_before + 1


_EXCLUSION_HEADER = b"credit_code,name,category,source,listed_on\n"
_EXCLUSION_CODE = demo_credit_code("EX").encode()


@pytest.mark.parametrize(
    "csv_body",
    [
        b"\r1\xc2\x8d~",
        _EXCLUSION_HEADER + _EXCLUSION_CODE + b",a\x00b,large-fine,court,2026-01-01\n",
        _EXCLUSION_HEADER + _EXCLUSION_CODE + b"," + b"x" * 200_000 + b",large-fine,c,2026-01-01\n",
    ],
    ids=["lone-cr", "nul", "oversized-field"],
)
async def test_an_unreadable_exclusion_list_is_refused(world: World, csv_body: bytes) -> None:
    """Found by the API fuzzer: a CSV the csv module cannot read (a lone CR in the header
    line) made ``POST /admin/exclusions`` answer 500; a NUL would have reached the store."""
    operator = await world.staff_token(Role.OPERATOR)
    response = await world.client.post(
        "/admin/exclusions",
        data=csv_body,
        headers={"Authorization": f"Bearer {operator}", "Content-Type": "text/csv"},
    )
    assert response.status == 400, await response.text()
    problem = await response.json(content_type=PROBLEM)
    assert problem["type"] == "/problems/validation"
    await _record(world, response)
