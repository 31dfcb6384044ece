"""Supervision reports over HTTP: the quarterly security report and the periodic operations
report, as ``text/markdown`` or self-contained ``text/html``, for staff who may read
reports (``reports.read``)."""

from __future__ import annotations

from aiohttp import web

from gateway.api.admin import staff_actor
from gateway.api.appkeys import GATEWAY
from gateway.errors import ValidationError
from gateway.reports.periods import parse_period, parse_quarter
from gateway.reports.render import Format, render_operations, render_security
from gateway.reports.service import chain_for_server, operations_report, security_report

__all__ = ["add_routes", "negotiate"]

_MEDIA = {"md": "text/markdown", "html": "text/html"}
_HTML_POLICY = "default-src 'none'; style-src 'unsafe-inline'"


def _quality(accept: str, media: str) -> float:
    """The q-value ``accept`` gives ``media`` (RFC 9110 §12.5.1), the most specific match
    winning; 0 when nothing matches."""
    kind = media.split("/")[0]
    best, quality = -1, 0.0
    for item in accept.split(","):
        name, *params = (part.strip() for part in item.split(";"))
        name = name.lower()
        specificity = (
            2 if name == media else 1 if name == f"{kind}/*" else 0 if name == "*/*" else -1
        )
        if specificity < best or specificity < 0:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = min(1.0, max(0.0, float(value)))
                except ValueError:
                    q = 0.0
        best, quality = specificity, q
    return quality


def negotiate(format_param: str | None, accept: str) -> Format:
    """``?format=md|html`` if given; else HTML when ``Accept`` prefers ``text/html`` to
    ``text/markdown``; else Markdown, the default. An unknown ``format`` is refused."""
    if format_param is not None:
        if format_param not in ("md", "markdown", "html"):
            raise ValidationError("format must be md or html")
        return "html" if format_param == "html" else "md"
    if accept and _quality(accept, "text/html") > _quality(accept, "text/markdown"):
        return "html"
    return "md"


def _answer(text: str, fmt: Format, name: str) -> web.Response:
    response = web.Response(text=text, content_type=_MEDIA[fmt], charset="utf-8")
    response.headers["Vary"] = "Accept"
    response.headers["Content-Disposition"] = f'inline; filename="{name}.{fmt}"'
    if fmt == "html":
        response.headers["Content-Security-Policy"] = _HTML_POLICY
    return response


def _required(request: web.Request, key: str, example: str) -> str:
    value = request.query.get(key)
    if value is None or not value.strip():
        raise ValidationError(f"{key} is required, e.g. {key}={example}")
    return value


async def security(request: web.Request) -> web.Response:
    """The quarterly security report; runs the log audit (and the chain audit when this
    gateway is connected to a chain)."""
    actor = await staff_actor(request)
    quarter = parse_quarter(_required(request, "quarter", "2026Q3"))
    fmt = negotiate(request.query.get("format"), request.headers.get("Accept", ""))
    gateway = request.app[GATEWAY]
    made = await security_report(gateway, quarter, actor=actor, chain=chain_for_server(gateway))
    return _answer(render_security(made, fmt), fmt, f"security-{quarter.label}")


async def operations(request: web.Request) -> web.Response:
    actor = await staff_actor(request)
    period = parse_period(_required(request, "period", "2026-07"))
    fmt = negotiate(request.query.get("format"), request.headers.get("Accept", ""))
    made = await operations_report(request.app[GATEWAY], period, actor=actor)
    name = "operations-" + period.label.replace("..", "_")
    return _answer(render_operations(made, fmt), fmt, name)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/admin/reports/security", security, allow_head=False)
    app.router.add_get("/admin/reports/operations", operations, allow_head=False)
