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
from gateway.cli.demo import DEMO_MERCHANT, DEMO_SCENARIO
from gateway.errors import all_problem_types
from gateway.ledger.log import read_entry
from tests.support.seeded import PRODUCT, Processor, Seeded, seed_world
from tests.support.world import World

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

STAFF = ("operator", "authority", "supervisor", "source", "exchange")
KINDS = ("none", "data", "account", "product", *STAFF)
# The security scheme each kind of credential is for (openapi.json, securitySchemes).
SCHEME: Final = {"data": "bearerData", "account": "bearerAccount", "product": "bearerDelivery"}


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
async def processor() -> AsyncIterator[Processor]:
    async with Processor.running() as service:
        yield service


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
async def test_fuzz_api(world: World, processor: Processor, kind: str) -> None:
    seeded = await seed_world(world, processor)
    fuzzer = Fuzzer(world, asyncio.get_running_loop(), seeded)
    findings = await asyncio.to_thread(fuzzer.run, kind)
    assert findings.requests > 0
    assert not findings.examples, (
        f"{len(findings.examples)} finding(s) in {findings.requests} requests "
        f"with credential {kind!r}:\n\n{findings.report()}"
    )
