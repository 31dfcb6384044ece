"""The request pipeline: every request leaves a durable record before its answer.

One middleware wraps every route, matched or not, so no handler can forget to record: the
handler fills in what it learns (``request[RECORD]``), the pipeline turns any failure into
an RFC 9457 problem, hashes the answer, appends the record to the ``calls`` stream and waits
for its commit, and only then lets the answer leave with ``Dsgw-Record-Id`` and
``Dsgw-Record-Hash``. A bug that escapes a handler still leaves an ``internal-error`` record
before its 500. The only answers without a record are the load balancer's probes
(``/healthz``, ``/readyz``), which are counted in ``dsgw_probe_requests_total`` instead,
and the 503 that says the record itself could not be written (nothing else is answered
then).

Requests the HTTP parser cannot read (oversized header or URL, malformed syntax) never
reach a middleware; :mod:`gateway.api.server` records and answers those.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Final
from urllib.parse import quote

from aiohttp import web

from gateway.api.appkeys import GATEWAY, HEALTH, RECORD, TELEMETRY, TRUSTED_PROXIES
from gateway.api.client_address import client_address
from gateway.api.problems import problem_response
from gateway.errors import (
    BadRequestError,
    DsgwError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    ValidationError,
)
from gateway.ledger.log import AppendedEntry
from gateway.ledger.records import CallRecord
from gateway.runtime import Gateway

__all__ = [
    "INTERNAL_ERROR",
    "PROBES",
    "evidence_middleware",
    "problem_for",
    "problem_instance",
    "record_kind",
]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Health probes: counted, not recorded (a load balancer asks every second or two).
PROBES: Final = frozenset({"/healthz", "/readyz"})
#: The reason of the record left by a request whose handler failed unexpectedly.
INTERNAL_ERROR: Final = "internal-error"

# Each record names what kind of request made it (docs/ledger.md, "What every request
# leaves"). Exact routes first, then the longest matching prefix; no route at all is
# "unmatched".
_ROUTE_KINDS: Final[dict[str, str]] = {
    "/v1/scenarios/{scenario}/datasets/{dataset}/{mode}": "data",
    "/v1/products/{id}/deliveries": "delivery",
    "/oauth/token": "token",
    "/metrics": "metrics",
    "/openapi.json": "meta",
    "/problems/{slug}": "meta",
    "/.well-known/jwks.json": "meta",
}
_PREFIX_KINDS: Final = (
    ("/admin/", "admin"),
    ("/v1/onboarding", "public"),
    ("/v1/ledger/", "ledger"),
    ("/v1/catalog", "read"),
    ("/v1/calls", "read"),
    ("/v1/", "account"),
)
_MAX_PATH: Final = 512
# Characters allowed unescaped in a URI path (RFC 3986 pchar and "/").
_PATH_SAFE: Final = "/:@!$&'()*+,;=-._~"
# C0 controls and DEL: one C scan per string instead of a Python step per character.
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


def record_kind(request: web.Request) -> str:
    """The kind of record ``request`` leaves, from its route (not from anything the client
    can choose beyond the path)."""
    route = request.match_info.route
    if request.match_info.http_exception is not None or route.resource is None:
        return "unmatched"
    canonical = route.resource.canonical
    kind = _ROUTE_KINDS.get(canonical)
    if kind is not None:
        return kind
    for prefix, prefix_kind in _PREFIX_KINDS:
        if canonical.startswith(prefix):
            return prefix_kind
    return "unmatched"


def _printable(text: str) -> str:
    """``text`` as something every store and log can hold: lone surrogates escaped."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def problem_instance(path: str) -> str:
    """The problem's ``instance``: the request path as a valid URI reference (percent-
    encoded, bounded), never raw input echoed back."""
    return quote(path[:_MAX_PATH], safe=_PATH_SAFE, errors="backslashreplace")


def _has_control(text: str) -> bool:
    return _CONTROL.search(text) is not None


def _refuse_control_characters(request: web.Request) -> None:
    """A NUL or other C0 control character in the path or the query reaches no route: ids
    and filters are text a store must hold, and these characters are never part of one."""
    if _has_control(request.path):
        raise ValidationError("the path contains a control character", field="path")
    for key, value in request.query.items():
        if _has_control(key) or _has_control(value):
            raise ValidationError("the query string contains a control character", field="query")


def problem_for(exc: BaseException, request: web.Request) -> tuple[DsgwError, dict[str, str]]:
    """The problem a failure becomes, with extra headers; raises what is not a failure.

    A dependency that failed (store, disk, Redis, keystore: :mod:`gateway.dependencies`) is
    a 503 naming it, reported to the gateway's health so the outage is logged once, not per
    request."""
    unavailable = request.app[HEALTH].observe(exc)
    if unavailable is not None:
        return unavailable, {}
    if isinstance(exc, DsgwError):
        return exc, {}
    if isinstance(exc, web.HTTPNotFound):
        return NotFoundError(f"no resource at {problem_instance(request.path)}"), {}
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return MethodNotAllowedError(
            f"{request.method[:16]} is not allowed here; allowed: "
            f"{', '.join(sorted(exc.allowed_methods))}"
        ), {"Allow": ",".join(sorted(exc.allowed_methods))}
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return PayloadTooLargeError("request body too large"), {}
    if isinstance(exc, web.HTTPException) and 400 <= exc.status < 500:
        return BadRequestError(exc.reason), {}
    raise exc


async def _answer(request: web.Request, handler: Handler) -> tuple[web.Response, str]:
    """Run the handler; every outcome becomes a complete response and a decision."""
    try:
        _refuse_control_characters(request)
        response = await handler(request)
        if not isinstance(response, web.Response):
            raise TypeError("handlers must return a complete web.Response")
        return response, "allow" if response.status < 400 else "deny"
    except Exception as exc:
        record = request[RECORD]
        try:
            err, headers = problem_for(exc, request)
        except Exception:  # a bug: it must still leave its record (and no stack trace)
            log.exception("unhandled error in %s %s", request.method, request.path[:_MAX_PATH])
            err, headers = DsgwError("internal error; the request was recorded"), {}
            record.reason, record.reason_detail = INTERNAL_ERROR, type(exc).__name__
            response = problem_response(err, problem_instance(request.path))
            return response, "error"
        record.reason = err.slug
        record.reason_detail = _printable(err.detail[:500])
        response = problem_response(err, problem_instance(request.path))
        response.headers.update(headers)
        return response, "deny"


async def _append(gateway: Gateway, record: CallRecord) -> AppendedEntry:
    """Append ``record`` and wait for its commit. Should a value in it have no canonical
    form (a bug: the edge checks refuse such input), the record is still written, with the
    parameters replaced by the failure's name, rather than the request going unrecorded;
    the payload is built before anything is queued, so nothing is written twice."""
    try:
        return await gateway.log.append(record.to_pending(gateway.clock.now()))
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        log.exception("call record of %s has a value with no canonical form", record.path)
        record.parameters = {"unrecordable": type(exc).__name__}
        record.fields = []
        record.reason_detail = _printable(record.reason_detail or "") or None
        return await gateway.log.append(record.to_pending(gateway.clock.now()))


@web.middleware
async def evidence_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Record every request durably before its answer leaves (see the module docstring)."""
    telemetry = request.app[TELEMETRY]
    if request.path in PROBES and request.match_info.http_exception is None:
        telemetry.observe_probe(request.path)
        try:
            return await handler(request)
        except Exception as exc:
            err, headers = problem_for(exc, request)
            response = problem_response(err, problem_instance(request.path))
            response.headers.update(headers)
            return response
    gateway = request.app[GATEWAY]
    kind = record_kind(request)
    record = CallRecord(
        kind=kind,
        started_at=gateway.clock.now(),
        method=_printable(request.method[:16]),
        path=_printable(request.path[:_MAX_PATH]),
        remote=client_address(request, request.app[TRUSTED_PROXIES]),
    )
    request[RECORD] = record
    arrived = time.monotonic()
    response, decision = await _answer(request, handler)
    record.decision = decision
    record.status = response.status
    body = response.body if isinstance(response.body, bytes) else b""
    record.response_sha256 = hashlib.sha256(body).hexdigest()
    try:
        entry = await _append(gateway, record)
    except DsgwError as err:
        # The record could not be committed: the answer is withheld (nothing may leave
        # without its record) and the caller is told to retry.
        unavailable = gateway.health.observe(err) or err
        return problem_response(unavailable, problem_instance(request.path))
    response.headers["Dsgw-Record-Id"] = entry.record_id
    response.headers["Dsgw-Record-Hash"] = entry.leaf_hash.hex()
    telemetry.observe_call(
        kind, record.scenario_id, decision, response.status, time.monotonic() - arrived
    )
    return response
