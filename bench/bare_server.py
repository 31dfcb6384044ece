"""The ungoverned baseline: the gateway's connector calls for each mode, nothing else.

It serves the gateway's data-plane path,
``POST /v1/scenarios/{scenario}/datasets/enterprises/{verify|query|aggregate}``, takes the
bodies ``bench/modes.py`` sends and runs what the gateway's data plane asks of its
:class:`connectors.sql.SqlConnector` for them (same ``RowQuery`` / ``AggregateQuery``, same
source file or database, the gateway's default source pool size, so the same thread hop
and SQLAlchemy statements), then answers in the gateway's envelope with the same members.
No token, no policy, no masking, no marks, no overlap audit, no call log.

    .venv/bin/python bench/bare_server.py --db DIR/sources/registry.sqlite3 --port 8090
    .venv/bin/python bench/bare_server.py --url postgresql+psycopg://127.0.0.1/db --port 8090
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web
from plain_server import DATASET, data_app, page, scenario_fields, serve_app

from connectors import synthetic
from connectors.base import AggregateQuery, Condition, Measure, RowQuery
from connectors.sql import SqlConnector
from gateway.dataplane.values import json_value
from gateway.settings import Settings

LIMIT = 50


def make_app(url: str, pool_size: int, min_subjects: int) -> web.Application:
    fields = scenario_fields()
    key_fields = synthetic.KEY_FIELDS[DATASET]
    subject = synthetic.SUBJECT_FIELDS[DATASET]
    connector = SqlConnector(url, DATASET, synthetic.SCHEMAS[DATASET], pool_size=pool_size)

    def conditions(filters: dict[str, Any]) -> tuple[Condition, ...]:
        return tuple(Condition(name, "eq", value) for name, value in filters.items())

    async def verify(body: dict[str, Any]) -> dict[str, Any]:
        values = body["values"]
        key = {k: values[k] for k in key_fields}
        claims = {k: v for k, v in values.items() if k not in key}
        rows = await connector.fetch(
            RowQuery(
                fields=tuple(claims),
                conditions=conditions(key),
                order_by=key_fields,
                limit=2,
            )
        )
        if len(rows) == 1:
            mismatched = sorted(n for n, v in claims.items() if v != rows[0].get(n))
        else:
            mismatched = sorted([*key, *claims])
        return {"match": not mismatched, "mismatched": mismatched}

    async def query(body: dict[str, Any]) -> dict[str, Any]:
        limit, offset = int(body.get("limit", LIMIT)), int(body.get("offset", 0))
        rows = await connector.fetch(
            RowQuery(
                fields=fields,
                conditions=conditions(body["filters"]),
                order_by=key_fields,
                limit=limit,
                offset=offset,
            )
        )
        out = [{name: json_value(row.get(name)) for name in fields} for row in rows]
        return page(out, limit, offset)

    async def aggregate(body: dict[str, Any]) -> dict[str, Any]:
        group_by = tuple(body["group_by"])
        measures = tuple(Measure(m["fn"], m.get("field")) for m in body["measures"])
        rows = await connector.aggregate(
            AggregateQuery(
                group_by=group_by,
                measures=measures,
                subject_field=subject,
                conditions=conditions(body.get("filters", {})),
            )
        )
        groups = [
            {name: json_value(row.get(name)) for name in (*group_by, *(m.name for m in measures))}
            for row in rows
            if int(row.get("_subjects") or 0) >= min_subjects
        ]
        return {
            "groups": groups,
            "suppressed_groups": len(rows) - len(groups),
            "withheld_groups": 0,
            "min_subjects": min_subjects,
        }

    app = data_app({"verify": verify, "query": query, "aggregate": aggregate}, "bare server")

    async def close(app: web.Application) -> None:
        await connector.close()

    app.on_cleanup.append(close)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--db", type=Path, help="the source SQLite file")
    where.add_argument("--url", help="a SQLAlchemy URL of the source database instead")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    defaults = Settings()
    parser.add_argument(
        "--pool-size",
        type=int,
        default=defaults.source.pool_size,
        help="source pool size (default: the gateway's default, source_pool_size)",
    )
    parser.add_argument(
        "--min-subjects",
        type=int,
        default=defaults.aggregate.min_subjects,
        help="aggregate cells below are suppressed (default: the gateway's)",
    )
    args = parser.parse_args()
    url = args.url or f"sqlite:///{args.db.resolve()}"
    app = make_app(url, args.pool_size, args.min_subjects)
    asyncio.run(serve_app(app, args.host, args.port, "bare server"))


if __name__ == "__main__":
    main()
