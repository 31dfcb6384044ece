"""The aiohttp application: routes, probes, the OpenAPI document and the request pipeline
(:mod:`gateway.api.pipeline`)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

from aiohttp import web

from gateway.api.access_log import access_log_middleware
from gateway.api.appkeys import (
    GATEWAY,
    MAX_BODY,
    OPENAPI,
    RECORD,
    TELEMETRY,
    TRUSTED_PROXIES,
    install_services,
)
from gateway.api.openapi_pipeline import document_pipeline
from gateway.api.pipeline import evidence_middleware
from gateway.api.telemetry import Telemetry
from gateway.api.visibility import readiness_view
from gateway.background import Role
from gateway.errors import (
    NotFoundError,
    all_problem_types,
)
from gateway.readiness import check_dependencies
from gateway.runtime import Gateway

__all__ = ["GATEWAY", "MAX_BODY", "RECORD", "create_app", "openapi_document"]

log = logging.getLogger(__name__)


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers. Readiness is ``/readyz``."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: whether this process can answer calls now. Every dependency a call needs
    is required (gateway.readiness: store, log writer, keystore, Redis when set, free disk,
    a trusted policy snapshot). The chain is reported but not required: a gateway keeps
    serving while anchoring waits."""
    gateway = request.app[GATEWAY]
    checks: dict[str, dict[str, Any]] = await check_dependencies(gateway)
    ready = all(check["ok"] for check in checks.values())
    anchoring = gateway.anchoring
    if anchoring is not None:
        worker = anchoring.worker
        health = worker.health if worker is not None else None
        checks["chain"] = {
            "ok": bool(health and health.reachable),
            "required": False,
            "node": anchoring.backend.node,
            "consecutive_failures": health.consecutive_failures if health else None,
        }
    body: dict[str, Any] = {"status": "ready" if ready else "unavailable", "checks": checks}
    if gateway.leadership is not None:
        # Whether this process runs checkpoints and anchoring (gateway.cluster.leadership);
        # the chain check above is reported by the leader only.
        body["leader"] = gateway.leadership.leading
    # Without staff credentials: the status and nothing else (gateway.api.visibility).
    return web.json_response(await readiness_view(request, body), status=200 if ready else 503)


def openapi_document() -> dict[str, Any]:
    """``openapi.json`` plus one fragment per API area under ``openapi/``.

    Each fragment holds its area's ``paths``, ``tags``, ``components`` and
    ``x-problem-types``; merging refuses a name defined twice, so two areas cannot
    silently overwrite each other's description. Last, the answers the request pipeline
    gives on every route are added (:mod:`gateway.api.openapi_pipeline`).
    """
    package = resources.files("gateway.api")
    document: dict[str, Any] = json.loads(package.joinpath("openapi.json").read_text("utf-8"))
    fragments = package.joinpath("openapi")
    names = sorted(f.name for f in fragments.iterdir() if f.name.endswith(".json"))
    for name in names:
        fragment = json.loads(fragments.joinpath(name).read_text("utf-8"))
        for key, value in fragment.get("paths", {}).items():
            if key in document["paths"]:
                raise ValueError(f"openapi/{name}: path {key} is already described")
            document["paths"][key] = value
        for section, members in fragment.get("components", {}).items():
            target = document["components"].setdefault(section, {})
            for key, value in members.items():
                if key in target:
                    raise ValueError(f"openapi/{name}: components.{section}.{key} repeated")
                target[key] = value
        document["tags"].extend(fragment.get("tags", []))
        document["x-problem-types"].extend(fragment.get("x-problem-types", []))
    return document_pipeline(document)


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])


async def problem_description(request: web.Request) -> web.Response:
    slug = request.match_info["slug"]
    for cls in all_problem_types():
        if cls.slug == slug:
            return web.json_response(
                {
                    "type": f"/problems/{slug}",
                    "title": cls.title,
                    "status": cls.status,
                    "description": (cls.__doc__ or cls.title).strip(),
                }
            )
    raise NotFoundError(f"no problem type {slug}")


async def _harden_headers(request: web.Request, response: web.StreamResponse) -> None:
    """No software banner; answers carrying data are never cached by intermediaries."""
    response.headers.pop("Server", None)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Cache-Control", "no-store")


def create_app(gateway: Gateway, *, background: Role | None = None) -> web.Application:
    """The app over ``gateway``'s services. With ``background``, the app also runs the
    process's background work (:class:`gateway.background.BackgroundWork`) from its start
    until its in-flight calls are drained at shutdown (a ``cleanup_ctx``); tests that drive
    the app alone leave it off."""
    from gateway.api import (
        admin,
        alerts,
        ledger,
        measures,
        merchant,
        metrics,
        objections,
        products,
        reports,
        trace,
        workflows,
    )

    # The access log, when on, is outermost: it sees the problem documents made inside.
    access = [access_log_middleware] if gateway.settings.logging.access_log else []
    app = web.Application(
        middlewares=[*access, evidence_middleware],
        client_max_size=gateway.settings.server.max_body_bytes,
    )
    install_services(app, gateway)
    app[TELEMETRY] = Telemetry(known_scenario=lambda name: name in gateway.policy.latest.scenarios)
    gateway.log.on_batch = app[TELEMETRY].observe_batch
    gateway.health.subscribe(app[TELEMETRY])
    app.on_response_prepare.append(_harden_headers)
    if background is not None:
        role = background

        async def background_work(app: web.Application) -> AsyncIterator[None]:
            async with gateway.background.serving(role):
                yield

        app.cleanup_ctx.append(background_work)
    app[MAX_BODY] = gateway.settings.server.max_body_bytes
    app[TRUSTED_PROXIES] = gateway.settings.trusted_networks
    app[OPENAPI] = openapi_document()
    app.router.add_get("/healthz", healthz, allow_head=False)
    app.router.add_get("/readyz", readyz, allow_head=False)
    app.router.add_get("/openapi.json", openapi, allow_head=False)
    app.router.add_get("/problems/{slug}", problem_description, allow_head=False)
    merchant.add_routes(app)
    admin.add_routes(app)
    ledger.add_routes(app)
    metrics.add_routes(app)
    workflows.add_routes(app)
    products.add_routes(app)
    measures.add_routes(app)
    alerts.add_routes(app)
    trace.add_routes(app)
    reports.add_routes(app)
    objections.add_routes(app)
    return app
