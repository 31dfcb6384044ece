"""The aiohttp application: routes, the problem middleware and the logging wrapper."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web

from gateway.api.access_log import access_log_middleware
from gateway.api.appkeys import GATEWAY, MAX_BODY, OPENAPI, RECORD, TELEMETRY, TRUSTED_PROXIES
from gateway.api.client_address import client_address
from gateway.api.problems import problem_response
from gateway.api.telemetry import Telemetry
from gateway.errors import (
    BadRequestError,
    DsgwError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    all_problem_types,
)
from gateway.ledger.records import CallRecord
from gateway.readiness import check_dependencies
from gateway.runtime import Gateway

__all__ = ["GATEWAY", "MAX_BODY", "RECORD", "create_app", "logged"]

log = logging.getLogger(__name__)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def dependency_problem(request: web.Request, exc: BaseException) -> DsgwError | None:
    """The 503 problem for ``exc`` when a dependency failed (store, disk, Redis, keystore;
    :func:`gateway.dependencies.dependency_error`), reported to the gateway's health so the
    outage is logged once, not per request; ``None`` for anything else."""
    return request.app[GATEWAY].health.observe(exc)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into a problem document; never a stack trace."""
    try:
        return await handler(request)
    except DsgwError as err:
        return problem_response(dependency_problem(request, err) or err, request.path)
    except web.HTTPNotFound:
        return problem_response(NotFoundError(f"no resource at {request.path}"), request.path)
    except web.HTTPMethodNotAllowed as exc:
        response = problem_response(
            MethodNotAllowedError(f"{request.method} is not allowed on {request.path}"),
            request.path,
        )
        response.headers["Allow"] = ",".join(sorted(exc.allowed_methods))
        return response
    except web.HTTPRequestEntityTooLarge:
        return problem_response(PayloadTooLargeError("request body too large"), request.path)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        generic = BadRequestError(exc.reason) if exc.status < 500 else DsgwError(exc.reason)
        return problem_response(generic, request.path)
    except Exception as exc:  # a bug must never show a stack trace to the caller
        unavailable = dependency_problem(request, exc)
        if unavailable is not None:
            return problem_response(unavailable, request.path)
        log.exception("unhandled error in %s", request.path)
        return problem_response(DsgwError("internal error"), request.path)


def logged(kind: str) -> Callable[[Handler], Handler]:
    """Wrap a handler so its call is recorded durably before the response leaves.

    The handler fills in ``request[RECORD]``; refusals raised as :class:`DsgwError` are
    recorded as denials. If the record cannot be committed, the answer is withheld and the
    client gets 503.
    """

    def decorate(handler: Handler) -> Handler:
        async def wrapper(request: web.Request) -> web.StreamResponse:
            gateway = request.app[GATEWAY]
            record = CallRecord(
                kind=kind,
                started_at=gateway.clock.now(),
                method=request.method,
                path=request.path[:512],
                remote=client_address(request, request.app[TRUSTED_PROXIES]),
            )
            request[RECORD] = record
            arrived = time.monotonic()
            try:
                response = await handler(request)
                record.decision = "allow"
            except web.HTTPException:
                raise
            except Exception as exc:
                err = dependency_problem(request, exc)
                if err is None and isinstance(exc, DsgwError):
                    err = exc
                if err is not None:  # a refusal, or a dependency that failed (503)
                    response = problem_response(err, request.path)
                    record.decision = "deny"
                    record.reason = err.slug
                    record.reason_detail = err.detail[:500]
                else:  # a bug must still leave a trace in the log
                    log.exception("unhandled error in %s", request.path)
                    internal = DsgwError("internal error; the call was logged")
                    response = problem_response(internal, request.path)
                    record.decision = "error"
                    record.reason = internal.slug
                    record.reason_detail = type(exc).__name__
            if not isinstance(response, web.Response):
                raise TypeError("logged handlers must return a complete web.Response")
            body = response.body if isinstance(response.body, bytes) else b""
            record.status = response.status
            record.response_sha256 = hashlib.sha256(body).hexdigest()
            entry = await gateway.log.append(record.to_pending(gateway.clock.now()))
            response.headers["Dsgw-Record-Id"] = entry.record_id
            response.headers["Dsgw-Record-Hash"] = entry.leaf_hash.hex()
            request.app[TELEMETRY].observe_call(
                kind,
                record.scenario_id,
                record.decision,
                response.status,
                time.monotonic() - arrived,
            )
            return response

        wrapper.__name__ = handler.__name__
        wrapper.__doc__ = handler.__doc__
        return wrapper

    return decorate


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
    return web.json_response(body, status=200 if ready else 503)


def openapi_document() -> dict[str, Any]:
    """``openapi.json`` plus one fragment per API area under ``openapi/``.

    Each fragment holds its area's ``paths``, ``tags``, ``components`` and
    ``x-problem-types``; merging refuses a name defined twice, so two areas cannot
    silently overwrite each other's description.
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
    return document


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


def create_app(gateway: Gateway) -> web.Application:
    from gateway.api import (
        admin,
        alerts,
        ledger,
        measures,
        merchant,
        metrics,
        products,
        reports,
        trace,
        workflows,
    )

    # The access log, when on, is outermost: it sees the problem documents made inside.
    access = [access_log_middleware] if gateway.settings.access_log else []
    app = web.Application(
        middlewares=[*access, problem_middleware],
        client_max_size=gateway.settings.max_body_bytes,
    )
    app[GATEWAY] = gateway
    app[TELEMETRY] = Telemetry()
    gateway.log.on_batch = app[TELEMETRY].observe_batch
    gateway.health.subscribe(app[TELEMETRY])
    app.on_response_prepare.append(_harden_headers)
    app[MAX_BODY] = gateway.settings.max_body_bytes
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
    return app
