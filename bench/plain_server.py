"""What the two ungoverned servers of the query-path benchmark share: the gateway's data-plane
route in front of one handler per access mode, and serving until SIGINT/SIGTERM.

Used by ``bench/floor_server.py`` and ``bench/bare_server.py``; the gateway is measured as
``dsgw serve`` and uses none of this.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway.cli.demo_data import demo_scenario

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
DATASET = "enterprises"


def scenario_grant() -> dict[str, Any]:
    """The ``enterprise-credit`` scenario's grant of ``enterprises``."""
    scenario = demo_scenario(dt.datetime.now(dt.UTC))
    return next(g for g in scenario["grants"] if g["dataset"] == DATASET)


def scenario_fields() -> tuple[str, ...]:
    """The fields the ``enterprise-credit`` scenario returns from ``enterprises``."""
    return tuple(scenario_grant()["fields"])


def page(rows: list[dict[str, Any]], limit: int, offset: int) -> dict[str, Any]:
    """A query answer in the gateway's envelope; nothing is masked here."""
    return {
        "rows": rows,
        "count": len(rows),
        "limit": limit,
        "offset": offset,
        "next_offset": offset + len(rows) if len(rows) == limit else None,
        "masked_fields": [],
    }


def data_app(handlers: dict[str, Handler], name: str) -> web.Application:
    """``POST /v1/scenarios/{scenario}/datasets/{dataset}/{mode}`` answered by
    ``handlers[mode]`` as JSON (400 for a body the handler cannot take), and ``/healthz``."""

    async def call(request: web.Request) -> web.Response:
        handler = handlers.get(request.match_info["mode"])
        if handler is None:
            raise web.HTTPNotFound()
        try:
            document = await handler(json.loads(await request.read()))
        except (ValueError, KeyError, TypeError) as exc:
            raise web.HTTPBadRequest(text=f"the {name} does not take this body: {exc!r}") from None
        return web.Response(
            body=json.dumps(document, ensure_ascii=False).encode("utf-8"),
            content_type="application/json",
        )

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/v1/scenarios/{scenario}/datasets/{dataset}/{mode}", call)
    return app


async def serve_app(app: web.Application, host: str, port: int, name: str) -> None:
    """Serve ``app`` until SIGINT or SIGTERM, then clean it up."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    print(f"{name} listening on http://{host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
