"""The benchmark's modes: which data-plane call each one makes, and the pool of bodies it posts.

Every side (floor, bare, governed) serves the same path,
``/v1/scenarios/enterprise-credit/datasets/enterprises/{verify|query|aggregate}``, and takes
the same bodies, so one load generator script and one body file serve all three.

- ``verify``: ``{"values": {"credit_code": C, "name": N}}``, a true claim of the registered
  name (not a sensitive field, so no per-subject verification budget is involved).
- ``query1``: ``{"filters": {"credit_code": C}}``, one row by the unique key.
- ``query50``: ``{"filters": {"district": D}, "offset": O}``, a page of 50 rows of one
  district, one of its first ten pages (so that bodies differ; every page is full).
- ``aggregate``: ``{"filters": {"district": D}, "group_by": ["industry"], "measures":
  [count, sum(registered_capital)]}``, the gateway's exact aggregate (small cells suppressed,
  overlap audit on as deployed); its pool is every district.
"""

from __future__ import annotations

import json
import random
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SEED = 7
SCENARIO = "enterprise-credit"
DATASET = "enterprises"
POOL = 5000
PAGE = 50
PAGES = 10  # query50 asks for the first PAGES pages of each district

MODES = ("verify", "query1", "query50", "aggregate")


@dataclass(frozen=True, slots=True)
class Mode:
    name: str
    endpoint: str  # the gateway's access mode: verify, query or aggregate

    @property
    def path(self) -> str:
        return f"/v1/scenarios/{SCENARIO}/datasets/{DATASET}/{self.endpoint}"


def mode(name: str) -> Mode:
    endpoint = {"query1": "query", "query50": "query"}.get(name, name)
    return Mode(name, endpoint)


def parse_modes(text: str) -> list[Mode]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODES]
    if unknown or not names:
        raise SystemExit(f"--modes: unknown {unknown or text!r}; choose from {', '.join(MODES)}")
    return [mode(n) for n in dict.fromkeys(names)]


def bodies(name: str, source: Path) -> list[dict[str, Any]]:
    """The pool of request bodies of one mode, drawn from the generated SQLite ``source``
    in a random but fixed order."""
    rng = random.Random(SEED)
    conn = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT max(rowid) FROM enterprises").fetchone()[0] or 0
        districts = dict(
            conn.execute("SELECT district, count(*) FROM enterprises GROUP BY district")
        )
        picked = rng.sample(range(1, rows + 1), min(rows, POOL))
        named = (
            {
                rowid: (code, company)
                for rowid, code, company in conn.execute(
                    "SELECT rowid, credit_code, name FROM enterprises WHERE rowid IN "
                    f"({','.join('?' * len(picked))})",
                    picked,
                )
            }
            if picked and name in ("verify", "query1")
            else {}
        )
    finally:
        conn.close()
    if name == "verify":
        return [{"values": {"credit_code": c, "name": n}} for c, n in map(named.get, picked)]
    if name == "query1":
        return [{"filters": {"credit_code": c}} for c, _n in map(named.get, picked)]
    if name == "query50":
        pages = [
            {"filters": {"district": d}, "offset": offset}
            for d, n in districts.items()
            for offset in range(0, min(n - PAGE + 1, PAGES * PAGE), PAGE)
        ]
        if not pages:
            raise SystemExit(f"query50 needs a district of {PAGE}+ rows; generate more rows")
        rng.shuffle(pages)
        return pages[:POOL]
    return [
        {
            "filters": {"district": d},
            "group_by": ["industry"],
            "measures": [{"fn": "count"}, {"fn": "sum", "field": "registered_capital"}],
        }
        for d in sorted(districts)
    ]


def write_bodies(path: Path, name: str, source: Path) -> int:
    """One JSON body a line, for the load generators; returns how many."""
    pool = bodies(name, source)
    path.write_text(
        "".join(json.dumps(b, ensure_ascii=False) + "\n" for b in pool), encoding="utf-8"
    )
    return len(pool)
