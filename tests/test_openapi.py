"""The served OpenAPI document covers every route and every problem type."""

from __future__ import annotations

import re

from gateway.api.app import openapi_document
from gateway.errors import all_problem_types
from tests.conftest import World


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
