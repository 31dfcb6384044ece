"""The served OpenAPI document covers every route and every problem type."""

from __future__ import annotations

import json
import re
from typing import Any

from gateway.api.app import openapi_document
from gateway.api.pipeline import PROBES
from gateway.errors import all_problem_types
from tests.support.world import World


def test_document_is_valid_openapi_3_1() -> None:
    from openapi_spec_validator import validate

    validate(openapi_document())  # raises with the failing path on any error


async def test_every_route_is_documented(world: World) -> None:
    resp = await world.client.get("/openapi.json")
    document = await resp.json()
    assert document == openapi_document()
    assert document["openapi"].startswith("3.1")
    paths = document["paths"]
    app = world.client.server.app
    assert app is not None
    missing = []
    for route in app.router.routes():
        method = route.method.lower()
        if method == "head":
            continue
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        assert isinstance(path, str)
        if path not in paths or method not in paths[path]:
            missing.append(f"{method.upper()} {path}")
    assert missing == []
    for path, operations in paths.items():
        for method, operation in operations.items():
            if method == "parameters":
                continue
            for name in re.findall(r"{(\w+)}", path):
                params = operation.get("parameters", []) + operations.get("parameters", [])
                assert any(p.get("name") == name and p.get("in") == "path" for p in params), (
                    f"{method} {path} lacks parameter {name}"
                )


async def test_every_problem_type_is_documented(world: World) -> None:
    document = await (await world.client.get("/openapi.json")).json()
    documented = {p["slug"]: p for p in document["x-problem-types"]}
    for cls in all_problem_types():
        assert cls.slug in documented, cls.slug
        assert documented[cls.slug]["status"] == cls.status, cls.slug
        assert documented[cls.slug]["type"] == f"/problems/{cls.slug}"
        resp = await world.client.get(f"/problems/{cls.slug}")
        assert resp.status == 200


def _resolve(document: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    ref = item.get("$ref")
    if ref is None:
        return item
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    assert isinstance(node, dict)
    return node


def test_every_operation_documents_what_the_pipeline_answers() -> None:
    """Every request is recorded and every answer names its record; hostile input is a 400,
    an oversized URL or header a 414/431, an escaped bug a recorded 500, an uncommittable
    record a 503 without record headers. The probes are counted, not recorded."""
    document = openapi_document()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            where = f"{method.upper()} {path}"
            responses = operation["responses"]
            assert {"414", "431"} <= responses.keys(), where
            if path in PROBES:
                continue
            assert {"400", "500", "503"} <= responses.keys(), where
            if "{" in path:
                assert "404" in responses, where
            if "requestBody" in operation:
                assert {"413", "415"} <= responses.keys(), where
            for status, response in responses.items():
                headers = _resolve(document, response).get("headers", {})
                for name in ("Dsgw-Record-Id", "Dsgw-Record-Hash"):
                    assert name in headers, f"{where} {status} lacks {name}"
                    required = _resolve(document, headers[name]).get("required", False)
                    # A 503 may be the answer withheld for want of a record.
                    assert required is (status != "503"), f"{where} {status} {name}"
    text = json.dumps(document)
    assert "UnloggedServerError" not in text and "-If-Logged" in text
    assert "Not recorded" not in text and "not itself recorded" not in text.lower()
    problem = document["components"]["schemas"]["Problem"]["properties"]
    assert problem["instance"]["format"] == "uri-reference"
    assert problem["field"]["type"] == "string"
