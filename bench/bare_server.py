"""The ungoverned baseline: the same connector query as the gateway's query path, nothing else.

``POST /query`` (any path works) takes the same JSON body a merchant sends to
``/v1/scenarios/enterprise-credit/datasets/enterprises/query`` (``{"filters":
{"credit_code": "..."}}``), runs the same :class:`connectors.sql.SqlConnector` ``fetch`` on
the same SQLite source file (the scenario's returnable fields, ``credit_code eq``, ordered
by the dataset key, limit 50, the gateway's default source pool size) and returns the rows
as JSON in the same envelope. No token, no policy, no masking, no call log.

    .venv/bin/python bench/bare_server.py --db DIR/sources/registry.sqlite3 --port 8090
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import signal
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiohttp import web

from connectors import synthetic
from connectors.base import Condition, RowQuery, Value
from connectors.sql import SqlConnector
from gateway.cli.demo import demo_scenario
from gateway.settings import Settings

DATASET = "enterprises"
LIMIT = 50


def scenario_fields() -> tuple[str, ...]:
    """The fields the ``enterprise-credit`` scenario returns from ``enterprises``."""
    scenario = demo_scenario(dt.datetime.now(dt.UTC))
    grant = next(g for g in scenario["grants"] if g["dataset"] == DATASET)
    return tuple(grant["fields"])


def _json_value(value: Value) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if value is None or isinstance(value, bool | int | str):
        return value
    return value.isoformat()


def make_app(db: Path, pool_size: int) -> web.Application:
    fields = scenario_fields()
    key_fields = synthetic.KEY_FIELDS[DATASET]
    connector = SqlConnector(
        f"sqlite:///{db}", DATASET, synthetic.SCHEMAS[DATASET], pool_size=pool_size
    )

    async def query(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        code = body["filters"]["credit_code"]
        rows = await connector.fetch(
            RowQuery(
                fields=fields,
                conditions=(Condition("credit_code", "eq", code),),
                order_by=key_fields,
                limit=LIMIT,
                offset=0,
            )
        )
        out = [{name: _json_value(row.get(name)) for name in fields} for row in rows]
        document = {
            "rows": out,
            "count": len(out),
            "limit": LIMIT,
            "offset": 0,
            "next_offset": len(out) if len(out) == LIMIT else None,
        }
        return web.Response(
            body=json.dumps(document, ensure_ascii=False).encode("utf-8"),
            content_type="application/json",
        )

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def close(app: web.Application) -> None:
        await connector.close()

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/{tail:.*}", query)
    app.on_cleanup.append(close)
    return app


async def serve(db: Path, host: str, port: int, pool_size: int) -> None:
    runner = web.AppRunner(make_app(db, pool_size), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    print(f"bare server listening on http://{host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True, help="the source SQLite file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--pool-size",
        type=int,
        default=Settings().source.pool_size,
        help="source pool size (default: the gateway's default, source_pool_size)",
    )
    args = parser.parse_args()
    asyncio.run(serve(args.db.resolve(), args.host, args.port, args.pool_size))


if __name__ == "__main__":
    main()
