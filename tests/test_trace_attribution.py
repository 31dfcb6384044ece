"""Attribution cases that need a larger source than the robustness list (issue 14, item 3).

A 1,200-enterprise source; four merchants page through districts over the real HTTP data
plane: ``big`` through three large districts (588 rows), ``small`` through two of big's, one
of its own (天心区) and one it shares with ``fourth`` (开福区), ``third`` through the district
everybody but fourth received. Canaries are drawn one
row in 16 so that every delivery carries several. Cases:

- a leaked file cleaned of rows with a repeated company name still holds every canary and
  names the recipient (canaries used to repeat the name of the row they followed);
- 30 of small's rows mixed into 479 of big's name both (small's marks used to be diluted by
  the hundreds of big's rows it had received too);
- a number column rounded to fewer places than delivered, ties either way, still matches
  the recipient's marks and never an innocent's.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import ROUND_HALF_DOWN, ROUND_HALF_UP, Decimal
from pathlib import Path
from random import Random
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from connectors import synthetic
from gateway.api.app import create_app
from gateway.cli.demo import REGISTRY, VEHICLES
from gateway.clock import FixedClock
from gateway.governance.actor import LOCAL_ADMIN
from gateway.tracing.files import read_leaked_file
from gateway.tracing.models import Candidate, LeakedTable, TraceReport
from tests.support.databases import PG_ADMIN_DSN, create_pg_database, drop_pg_database
from tests.support.leaks import Sheet, drop_columns, excel_import, mix
from tests.support.world import World, build_world
from tests.test_trace_robustness import (
    FIELDS,
    NAMED_THRESHOLD,
    _deliver,
    _settings,
    _setup,
    assert_attributed,
    named,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

SOURCE_ROWS = 1200
DISTRICTS = {
    "big": ["岳麓区", "雨花区", "芙蓉区"],
    "small": ["岳麓区", "雨花区", "开福区", "天心区"],
    "third": ["岳麓区"],
    "fourth": ["开福区"],
}
BIG, SMALL, THIRD, FOURTH = "big", "small", "third", "fourth"


@dataclass
class Deliveries:
    world: World
    source: dict[str, dict[str, Any]]  # credit code -> source row
    answers: dict[str, dict[str, list[dict[str, Any]]]]  # merchant -> district -> rows
    tmp: Path

    def rows(self, merchant: str, *districts: str) -> list[dict[str, Any]]:
        wanted = districts or tuple(DISTRICTS[merchant])
        return [r for d in wanted for r in self.answers[merchant][d]]

    def canaries(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in rows if r["credit_code"] not in self.source]

    async def trace(self, sheet: Sheet) -> TraceReport:
        table = LeakedTable(sheet.headers, sheet.rows)
        return await self.world.gateway.tracer.trace(LOCAL_ADMIN, table)


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgresql"])
async def deliveries(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Deliveries]:
    base = tmp_path_factory.mktemp(f"attribution-{request.param}")
    data_dir = base / "data"
    (data_dir / "sources").mkdir(parents=True)
    synthetic.write_sqlite(
        data_dir / REGISTRY, {"enterprises": SOURCE_ROWS, "social_insurance": 600}, seed=7
    )
    synthetic.write_csv(data_dir / VEHICLES, "vehicles", 100, seed=7)
    source = {str(r["credit_code"]): r for r in synthetic.generate("enterprises", SOURCE_ROWS, 7)}
    pg_name = None
    database_url = ""
    if request.param == "postgresql":
        pg_name = await create_pg_database()
        database_url = PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + pg_name
    settings = _settings(data_dir, database_url, trace_canary_rate=16)
    clock = FixedClock(dt.datetime.now(dt.UTC).replace(microsecond=0))
    gateway, creds = await build_world(settings, clock)
    client = TestClient(TestServer(create_app(gateway), host="127.0.0.1"))
    await client.start_server()
    world = World(
        gateway=gateway,
        client=client,
        clock=clock,
        merchant_id="",
        merchant_client=creds["merchant"],
        staff=creds["staff"],
        sample={},
    )
    try:
        merchant_creds = await _setup(world, DISTRICTS)
        answers = {
            m: {d: await _deliver(world, merchant_creds[m], d) for d in districts}
            for m, districts in DISTRICTS.items()
        }
        yield Deliveries(world=world, source=source, answers=answers, tmp=base)
    finally:
        await client.close()
        await gateway.close()
        if pg_name is not None:
            await drop_pg_database(pg_name)


def _candidate(report: TraceReport, merchant: str) -> Candidate:
    (found,) = [c for c in report.candidates if c.merchant_id == merchant]
    return found


async def test_canaries_survive_removing_repeated_names(deliveries: Deliveries) -> None:
    rows = deliveries.rows(BIG)
    canaries = deliveries.canaries(rows)
    assert len(canaries) >= 10
    sheet = Sheet.from_answers(rows, FIELDS)
    names = Counter(sheet.column("name"))
    j = sheet.headers.index("name")
    cleaned = Sheet(sheet.headers, tuple(r for r in sheet.rows if names[r[j]] == 1))
    kept = set(cleaned.column("credit_code"))
    surviving = [c for c in canaries if c["credit_code"] in kept]
    # Cleaning removes a handful of real rows (names that really repeat). A canary's name is
    # never a name of its page; it may by chance equal a name elsewhere in the file (about
    # one canary in a thousand on this data), and only then is it removed.
    assert len(surviving) >= len(canaries) - 2
    assert len(sheet.rows) - len(cleaned.rows) <= 6 + 2 * (len(canaries) - len(surviving))
    # No canary is a near-copy of a real row: it repeats no identity of the source.
    real = [r for r in rows if r["credit_code"] in deliveries.source]
    assert len({c["credit_code"] for c in canaries}) == len(canaries)
    for canary in canaries:
        assert canary["name"].endswith("公司")
        near = [
            r for r in real if r["name"] == canary["name"] and r["district"] == canary["district"]
        ]
        assert not near or canary not in surviving
    report = await deliveries.trace(cleaned)
    assert_attributed(report, BIG)
    assert len(_candidate(report, BIG).canaries) == len(surviving)
    # The canaries alone name the recipient, with every mark gone.
    ids_only = drop_columns(cleaned, set(FIELDS) - {"credit_code", "name"})
    report = await deliveries.trace(ids_only)
    assert_attributed(report, BIG)
    big = _candidate(report, BIG)
    assert big.marks is None and len(big.canaries) == len(surviving)


@pytest.mark.parametrize(
    ("district", "tested_on"), [("天心区", "exclusive"), ("开福区", "unexplained")]
)
async def test_thirty_rows_mixed_into_479_name_both(
    deliveries: Deliveries, district: str, tested_on: str
) -> None:
    """Small received hundreds of the leaked rows (big's copies of them, which carry big's
    marks). Its own 30 are rows only it received (天心区), or rows an innocent merchant
    received too (开福区, fourth): then they are the rows no *named* recipient received."""
    rng = Random(29)
    big_rows = [r for r in deliveries.rows(BIG) if r["credit_code"] in deliveries.source]
    small_rows = [
        r for r in deliveries.rows(SMALL, district) if r["credit_code"] in deliveries.source
    ]
    big_part = Sheet.from_answers(rng.sample(big_rows, 479), FIELDS)
    small_part = Sheet.from_answers(rng.sample(small_rows, 30), FIELDS)
    report = await deliveries.trace(mix(big_part, small_part, rng=rng))
    assert report.rows_matched == 509
    assert_attributed(report, BIG, SMALL)
    small = _candidate(report, SMALL)
    assert small.rows_received > 200
    assert small.rows_exclusive == (30 if tested_on == "exclusive" else 0)
    assert small.marks is not None and small.marks.rows == tested_on
    assert small.marks.cells == small.marks.matches >= 30
    assert _candidate(report, THIRD).verdict != "named"
    if tested_on == "unexplained":
        fourth = _candidate(report, FOURTH)
        assert fourth.rows_received == 30 and fourth.verdict != "named"


async def test_numbers_rounded_either_way_still_match(deliveries: Deliveries) -> None:
    """A capital delivered as 1234.65 (its last digit carries the bit) shown with one
    decimal is 1234.7 in Excel (ties half-up) and 1234.6 in a tool that prints the binary
    double just below the tie. Either way the cell matches big's delivered value; it counts
    as evidence only where the candidate's other possible value (1234.64 or 1234.66) would
    not have rounded to the same text, so an innocent still matches at exactly 1/2."""
    rows = [r for r in deliveries.rows(BIG) if r["credit_code"] in deliveries.source]
    ties = [r for r in rows if str(r["registered_capital"]).endswith("5")]
    assert len(ties) >= 10
    cells = 0
    for mode in (ROUND_HALF_UP, ROUND_HALF_DOWN):
        shown = [
            {
                **r,
                "registered_capital": format(
                    Decimal(r["registered_capital"]).quantize(Decimal("0.1"), rounding=mode), "f"
                ),
            }
            for r in ties
        ]
        sheet = Sheet.from_answers(shown, ["credit_code", "name", "registered_capital"])
        path = excel_import(sheet, deliveries.tmp / f"rounded-{mode}.xlsx")  # stored as numbers
        table = read_leaked_file(path)
        assert all(len(row[2].partition(".")[2]) <= 1 for row in table.rows)
        report = await deliveries.trace(Sheet(table.headers, tuple(table.rows)))
        assert not any("looks erased" in note for note in report.notes), report.notes
        assert any("rounded" in note for note in report.notes), report.notes
        big = _candidate(report, BIG)
        assert big.marks is not None
        assert big.marks.matches == big.marks.cells
        cells += big.marks.cells
        assert named(report) <= {BIG}
        for candidate in report.candidates:
            if candidate.merchant_id != BIG and candidate.marks is not None:
                assert candidate.false_attribution_probability > NAMED_THRESHOLD
    # Every tie is evidence under exactly one of the two roundings: the one that moves it
    # away from the candidate's other possible value.
    assert cells == len(ties)

    # A whole answer with its capital rounded and its masked address kept: named.
    sheet = Sheet.from_answers(rows, FIELDS)
    j = sheet.headers.index("registered_capital")
    rounded = tuple(
        (
            *row[:j],
            format(Decimal(row[j]).quantize(Decimal("0.1"), ROUND_HALF_UP), "f"),
            *row[j + 1 :],
        )
        for row in sheet.rows
    )
    report = await deliveries.trace(Sheet(sheet.headers, rounded))
    assert_attributed(report, BIG)
    big = _candidate(report, BIG)
    assert big.marks is not None and big.marks.matches == big.marks.cells
