"""Property-based fuzzing of the whole HTTP API from the OpenAPI document the gateway serves.

schemathesis generates requests for every operation of ``GET /openapi.json``, valid ones
(positive) and ones that break the document's own rules (negative), and sends them to a
real gateway on loopback, once for each kind of credential a caller can hold: none, a
merchant's data token, its account token, a buyer's product delivery token, and an admin
token of every staff role. Each answer must:

- not be a server error (5xx);
- have a status code, content type, headers and body the document describes for it;
- name its record (``Dsgw-Record-Id``; the probes ``/healthz`` and ``/readyz`` excepted),
  and that record must be in the store with the leaf hash the answer names, the answer's
  status and the SHA-256 of the answer's body.

Every finding is collected (not only the first), so one run lists everything to fix.

The run is bounded for CI on a 2-core machine: ``DSGW_FUZZ_EXAMPLES`` generated requests
per operation and generation mode for the operations the credential is meant for (a quarter
of that for the others, which refuse it), no shrinking, no deadline, and derandomized so
that a run is reproducible. Raise ``DSGW_FUZZ_EXAMPLES`` for a longer search, set
``DSGW_FUZZ_SEED`` (an integer) for a different one. The store is SQLite only: the
pipeline and the handlers are the same on PostgreSQL, which the other HTTP tests cover.

The generator runs in a worker thread with blocking HTTP (``requests``), while the test's
event loop serves the gateway; the record check runs its store query on that loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import pytest
import requests
import schemathesis
from aiohttp import encode_basic_auth, web
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.api.pipeline import PROBES
from gateway.authorization.roles import Role
from gateway.cli.demo import DEMO_MERCHANT, DEMO_SCENARIO, demo_credit_code
from gateway.errors import all_problem_types
from gateway.governance.service import LOCAL_ADMIN
from gateway.ledger.log import read_entry
from tests.conftest import World

#: Generated requests per operation and mode for the operations a credential is meant for.
EXAMPLES: Final = int(os.environ.get("DSGW_FUZZ_EXAMPLES", "6"))
#: ... and for the operations that refuse it (they stop at authentication).
FOREIGN_EXAMPLES: Final = max(1, EXAMPLES // 4)
#: Unset: derandomized (the same requests every run). Set: another, reproducible search.
SEED: Final = os.environ.get("DSGW_FUZZ_SEED")

#: Negative data must be refused; the gateway refuses it with these (no 5xx: a server error
#: is a finding of its own).
REFUSALS: Final = [
    *("400", "401", "403", "404", "405", "409", "413", "414", "415", "422", "429", "431")
]
# Undeclared query parameters and headers are ignored, not refused (docs: openapi.json,
# "Errors"), so the generator does not count adding them as invalid input.
CONFIG: Final = schemathesis.Config.from_dict(
    {
        "generation": {"allow-extra-parameters": False},
        "checks": {"negative_data_rejection": {"expected-statuses": REFUSALS}},
    }
)
CHECKS: Final = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

PRODUCT = "credit-score"
BUYER = demo_credit_code("BY")
SOURCE_DEPARTMENT = "市场监督管理局"
STAFF = ("operator", "authority", "supervisor", "source", "exchange")
KINDS = ("none", "data", "account", "product", *STAFF)
# The security scheme each kind of credential is for (openapi.json, securitySchemes).
SCHEME: Final = {"data": "bearerData", "account": "bearerAccount", "product": "bearerDelivery"}


@dataclass
class Seeded:
    """What the world holds besides the demo: ids for the fuzzer to reach past 404s."""

    tokens: dict[str, str | None]
    application: str
    onboarding: str


@dataclass
class Findings:
    """Every distinct problem found: one example each, keyed by operation, check, status."""

    examples: dict[tuple[str, str, int], str] = field(default_factory=dict)
    requests: int = 0

    def add(self, operation: str, check: str, status: int, example: str) -> None:
        self.examples.setdefault((operation, check, status), example)

    def report(self) -> str:
        return "\n\n".join(
            f"### {operation}: {check} ({status})\n{example}"
            for (operation, check, status), example in sorted(self.examples.items())
        )


@pytest.fixture
async def processor() -> AsyncIterator[TestServer]:
    """The product's processing service (a real HTTP server on loopback)."""

    async def score(request: web.Request) -> web.Response:
        body = await request.json()
        code = body.get("credit_code") if isinstance(body, dict) else None
        return web.json_response({"credit_code": str(code), "score": 87})

    app = web.Application()
    app.router.add_post("/score", score)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


async def _token(world: World, client_id: str, secret: str | None, scope: str) -> str:
    assert secret is not None
    response = await world.client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": scope},
        headers={"Authorization": encode_basic_auth(client_id, secret)},
    )
    body = await response.json()
    assert response.status == 200, body
    return str(body["access_token"])


async def _post(world: World, path: str, token: str | None, body: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await world.client.post(path, json=body, headers=headers)
    answer = await response.json(content_type=None)
    assert response.status in (200, 201), (path, answer)
    return answer


async def seed_world(world: World, processor: TestServer) -> Seeded:
    """Every kind of credential, a listed product with a trade, a use application and an
    onboarding application, made through the API like a user would."""
    gov = world.gateway.governance
    source = await gov.issue_client(LOCAL_ADMIN, role=Role.SOURCE, department=SOURCE_DEPARTMENT)
    exchange = await gov.issue_client(LOCAL_ADMIN, role=Role.EXCHANGE)
    buyer = await gov.issue_client(LOCAL_ADMIN, buyer_code=BUYER)
    tokens: dict[str, str | None] = {
        "none": None,
        "data": await world.token(),
        "account": await world.token("account"),
        "operator": await world.staff_token(Role.OPERATOR),
        "authority": await world.staff_token(Role.AUTHORITY),
        "supervisor": await world.staff_token(Role.SUPERVISOR),
        "source": await _token(world, source.client.client_id, source.secret, "admin"),
        "exchange": await _token(world, exchange.client.client_id, exchange.secret, "admin"),
    }
    now = world.clock.now()
    await _post(
        world,
        "/v1/products",
        tokens["account"],
        {
            "id": PRODUCT,
            "name": "企业经营稳健度评分",
            "scenario": DEMO_SCENARIO,
            "delivery": "api",
            "endpoint": str(processor.make_url("/score")),
            "inputs": [{"dataset": "enterprises", "fields": ["credit_code", "status"]}],
            "outputs": [
                {"name": "credit_code", "derivation": "key", "from": ["enterprises.credit_code"]},
                {"name": "score", "derivation": "score", "from": ["enterprises.status"]},
            ],
            "unit_price": "0.50",
        },
    )
    base = f"/admin/products/{PRODUCT}"
    await _post(world, f"{base}/export-check", tokens["operator"], {"decision": "approve"})
    await _post(world, f"{base}/filing", tokens["authority"], {"filing_number": "湘数备-2026-001"})
    await _post(world, f"{base}/listing", tokens["exchange"], {"listing_id": "SZDE-001"})
    trade = {
        "exchange_trade_id": "T-1",
        "product": PRODUCT,
        "buyer_code": BUYER,
        "buyer_name": "湘江银行",
        "quantity": 100_000,
        "unit_price": "0.50",
        "traded_at": now.isoformat(),
    }
    await _post(world, "/admin/trades", tokens["exchange"], trade)
    tokens["product"] = await _token(
        world, buyer.client.client_id, buyer.secret, f"product:{PRODUCT}"
    )
    application = await _post(
        world,
        "/v1/applications",
        tokens["account"],
        {
            "scenario": DEMO_SCENARIO,
            "requirements": [
                {"dataset": "enterprises", "modes": ["verify"], "fields": ["credit_code", "name"]}
            ],
            "purpose": "贷前核验",
            "period_start": now.date().isoformat(),
            "period_end": now.replace(year=now.year + 1).date().isoformat(),
            "safeguards": "专线",
        },
    )
    onboarding = await _post(
        world,
        "/v1/onboarding",
        None,
        {
            "merchant_id": "lanshan-data",
            "name": "岚山数据科技有限公司",
            "credit_code": demo_credit_code("LS"),
            "licence": {
                "legal_representative": "王岚",
                "registered_address": "长沙市岳麓区",
                "business_scope": "数据处理",
            },
            "contacts": [{"name": "李明", "email": "li@lanshan.example"}],
        },
    )
    return Seeded(tokens=tokens, application=application["id"], onboarding=onboarding["id"])


def known_path_parameters(path: str, seeded: Seeded) -> list[dict[str, Any]]:
    """Path parameter values that exist in the seeded world, so that generated bodies and
    queries reach the handlers' own checks instead of stopping at a 404."""
    ids: dict[str, list[str]] = {
        "/admin/scenarios/": [DEMO_SCENARIO],
        "/admin/merchants/": [DEMO_MERCHANT],
        "/admin/agreements/": ["agr-demo"],
        "/admin/products/": [PRODUCT],
        "/v1/products/": [PRODUCT],
        "/admin/applications/": [seeded.application],
        "/v1/applications/": [seeded.application],
        "/admin/onboarding/": [seeded.onboarding],
        "/v1/onboarding/": [seeded.onboarding],
        "/admin/alerts/": ["1"],
    }
    if path == "/v1/scenarios/{scenario}/datasets/{dataset}/{mode}":
        return [
            {"scenario": DEMO_SCENARIO, "dataset": dataset, "mode": mode}
            for dataset in ("enterprises", "vehicles", "social-insurance")
            for mode in ("verify", "query", "aggregate")
        ]
    if path == "/problems/{slug}":
        return [{"slug": cls.slug} for cls in all_problem_types()]
    if path == "/admin/bundles/{stream}/{seq}":
        streams = ("calls", "governance", "products")
        return [{"stream": stream, "seq": seq} for stream in streams for seq in (0, 3)]
    if "{seq}" in path:
        return [{"seq": q} for q in (0, 1, 5)]
    for prefix, values in ids.items():
        if path.startswith(prefix) and "{id}" in path:
            return [{"id": value} for value in values]
    return []


def _is_own(operation: Any, kind: str) -> bool:
    """Whether the operation is meant for this kind of credential (its ``security``)."""
    security: list[dict[str, Any]] = operation.definition.raw.get("security", [])
    if kind == "none":
        return not security or {} in security
    scheme = SCHEME.get(kind, "bearerAdmin")
    return any(scheme in requirement for requirement in security)


class Fuzzer:
    """One credential's run over every operation (blocking; runs in a worker thread)."""

    def __init__(self, world: World, loop: asyncio.AbstractEventLoop, seeded: Seeded) -> None:
        self.world = world
        self.loop = loop
        self.seeded = seeded
        self.base = str(world.client.make_url("/")).rstrip("/")
        self.session = requests.Session()
        self.findings = Findings()

    def run(self, kind: str) -> Findings:
        token = self.seeded.tokens[kind]
        headers = {"Authorization": f"Bearer {token}"} if token else None
        schema = schemathesis.openapi.from_url(f"{self.base}/openapi.json", config=CONFIG)
        for result in schema.get_all_operations():
            operation = result.ok()
            examples = EXAMPLES if _is_own(operation, kind) else FOREIGN_EXAMPLES
            known = known_path_parameters(operation.path, self.seeded)
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                strategies = [operation.as_strategy(generation_mode=mode)]
                strategies += [
                    operation.as_strategy(generation_mode=mode, path_parameters=values)
                    for values in known
                ]
                self._fuzz(operation.label, st.one_of(strategies), mode, examples, headers)
        return self.findings

    def _fuzz(
        self,
        label: str,
        strategy: st.SearchStrategy[Case],
        mode: GenerationMode,
        examples: int,
        headers: dict[str, str] | None,
    ) -> None:
        checks = [*CHECKS, negative_data_rejection] if mode is GenerationMode.NEGATIVE else CHECKS

        @settings(
            max_examples=examples,
            deadline=None,
            derandomize=SEED is None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def send(case: Case) -> None:
            self._send(label, f"{label} [{mode.value}]", case, checks, headers)

        if SEED is not None:
            send = seed(int(SEED))(send)

        try:
            send()
        except Unsatisfiable:
            # Nothing in this operation can be made invalid (no parameters, no body).
            assert mode is GenerationMode.NEGATIVE, label

    def _send(
        self,
        label: str,
        name: str,
        case: Case,
        checks: list[Callable[..., Any]],
        headers: dict[str, str] | None,
    ) -> None:
        try:
            response = case.call(base_url=self.base, session=self.session, headers=headers)
        except requests.ConnectionError as exc:
            # The server dropped the connection instead of answering: a finding too.
            self.findings.add(
                name, "no answer", 0, f"{case.as_curl_command(headers=headers)}\n{exc}"
            )
            return
        self.findings.requests += 1
        status = response.status_code
        example = f"{case.as_curl_command(headers=headers)}\n-> {status} {response.text[:500]}"
        try:
            case.validate_response(response, checks=checks, headers=headers)
        except BaseExceptionGroup as failures:  # schemathesis's FailureGroup
            for failure in failures.exceptions:
                title = getattr(failure, "title", type(failure).__name__)
                self.findings.add(name, str(title), status, f"{failure}\n{example}")
        if case.operation.path in PROBES:
            return
        problem = self._record_problem(response)
        if problem:
            self.findings.add(label, problem, status, example)

    def _record_problem(self, response: schemathesis.Response) -> str | None:
        """What is wrong with the record the answer names, if anything."""
        record_id = response.headers.get("dsgw-record-id")
        if not record_id:
            return "no Dsgw-Record-Id"
        stream, _, seq = record_id[0].partition("/")
        if not re.fullmatch(r"[0-9]+", seq):
            return f"malformed Dsgw-Record-Id {record_id[0]!r}"
        entry = asyncio.run_coroutine_threadsafe(
            read_entry(self.world.gateway.engine, stream, int(seq)), self.loop
        ).result()
        if entry is None:
            return f"record {record_id[0]} is not in the store"
        if response.headers.get("dsgw-record-hash", [""])[0] != entry.leaf_hash.hex():
            return f"record {record_id[0]}: Dsgw-Record-Hash is not its leaf hash"
        payload = json.loads(entry.payload)
        if payload.get("status") != response.status_code:
            return f"record {record_id[0]}: status {payload.get('status')}"
        if payload.get("response_sha256") != hashlib.sha256(response.content).hexdigest():
            return f"record {record_id[0]}: response_sha256 is not the body's"
        return None


@pytest.mark.parametrize("settings", ["sqlite"], indirect=True)
@pytest.mark.parametrize("kind", KINDS)
async def test_fuzz_api(world: World, processor: TestServer, kind: str) -> None:
    seeded = await seed_world(world, processor)
    fuzzer = Fuzzer(world, asyncio.get_running_loop(), seeded)
    findings = await asyncio.to_thread(fuzzer.run, kind)
    assert findings.requests > 0
    assert not findings.examples, (
        f"{len(findings.examples)} finding(s) in {findings.requests} requests "
        f"with credential {kind!r}:\n\n{findings.report()}"
    )
