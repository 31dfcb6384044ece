"""The overlap audit of exact aggregates (docs/privacy.md): the differencing attack of
issue 17 works without it and is refused with it, on SQLite and PostgreSQL stores."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import update

from connectors import synthetic
from connectors.base import Row
from gateway.api.app import create_app
from gateway.cli.demo import demo_datasets
from gateway.clock import FixedClock
from gateway.db.schema import AnsweredCellRow
from gateway.governance.service import LOCAL_ADMIN
from gateway.privacy.overlap import OverlapAudit
from gateway.privacy.sketch import PRIME, CellSketch, SketchFormatError, terms_for
from gateway.runtime import Gateway
from tests.support.world import GatewayTestServer, World

SEED = 11
EMPLOYERS = 80
INSURED_ROWS = 12_000
SOURCE = "sources/overlap-social-insurance.sqlite3"
DATASET = "social-insurance"
K = 10

# -- the sketch, on its own ------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    k=st.integers(min_value=2, max_value=12),
    common=st.integers(min_value=0, max_value=60),
    removed=st.integers(min_value=0, max_value=16),
    added=st.integers(min_value=0, max_value=16),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_sketch_measures_small_differences_exactly(
    k: int, common: int, removed: int, added: int, seed: int
) -> None:
    """Against exact set differences: 0 to k-1 measured exactly; k, k+1 and anything larger
    never reported as small."""
    rng = random.Random(seed)
    pool = rng.sample(range(1, PRIME), common + removed + added)
    a = pool[: common + removed]
    b = pool[:common] + pool[common + removed :]
    rng.shuffle(b)
    difference = removed + added
    got = CellSketch.of(a, k).difference_below(CellSketch.of(b, k))
    assert got == (difference if difference < k else None)


def test_sketch_edges_and_encoding() -> None:
    rng = random.Random(5)
    base = rng.sample(range(1, PRIME), 200)
    for k in (2, 10, 30):
        whole = CellSketch.of(base, k)
        for difference in (0, 1, k - 1, k, k + 1, k + 2, 3 * k, 150):
            other = CellSketch.of(base[difference:], k)
            expected = difference if difference < k else None
            assert whole.difference_below(other) == expected, (k, difference)
            # Differences of k+2 and more by swapping members: sizes equal, sets apart.
            swapped = base[difference:] + rng.sample(range(1, PRIME), difference)
            got = whole.difference_below(CellSketch.of(swapped, k))
            assert got == (2 * difference if 2 * difference < k else None), (k, difference)
        data = whole.to_bytes()
        assert len(data) == 2 + 8 * terms_for(k) and len(data) <= 512
        assert CellSketch.from_bytes(data, whole.size) == whole
    assert len(CellSketch.of(base, K).to_bytes()) == 178
    for bad in (b"", b"\x02\x0a" + bytes(176), b"\x01\x0a" + bytes(8), b"\x01\x1f" + bytes(8)):
        with pytest.raises(SketchFormatError):
            CellSketch.from_bytes(bad, 1)
    with pytest.raises(SketchFormatError):
        CellSketch.from_bytes(b"\x01\x02" + b"\xff" * 16, 1)
    with pytest.raises(ValueError, match="threshold"):
        CellSketch.of(base, 31)


# -- the attack, over HTTP ------------------------------------------------------------------


@pytest.fixture(scope="session")
def insured(source_dir: Path) -> list[Row]:
    """A larger social-insurance table than the shared one, so that one month of a few
    dozen employers makes cells of 10 or more insured people."""
    synthetic.write_sqlite(
        source_dir / SOURCE, {"enterprises": EMPLOYERS, "social_insurance": INSURED_ROWS}, SEED
    )
    return list(
        synthetic.generate("social_insurance", INSURED_ROWS, seed=SEED, employers=EMPLOYERS)
    )


class Insured:
    """Who was insured where and when, from the generated rows, to build the attacks."""

    def __init__(self, rows: list[Row]) -> None:
        self.rows = rows
        self.people: dict[tuple[Any, Any], set[Any]] = defaultdict(set)
        for r in rows:
            self.people[(r["employer_credit_code"], r["month"])].add(r["person_id"])
        self.months = sorted({r["month"] for r in rows})
        self.employers = sorted({r["employer_credit_code"] for r in rows})

    def in_month(self, month: dt.date, size: int | None = None) -> list[str]:
        return [
            e
            for e in self.employers
            if self.people[(e, month)] and (size is None or len(self.people[(e, month)]) == size)
        ]

    def cells(
        self, employers: Sequence[str], months: Sequence[dt.date]
    ) -> dict[str, tuple[int, int, Decimal]]:
        """Per insurance type: distinct people, rows, total amount."""
        people: dict[str, set[Any]] = defaultdict(set)
        rows: dict[str, int] = defaultdict(int)
        total: dict[str, Decimal] = defaultdict(Decimal)
        for r in self.rows:
            if r["employer_credit_code"] in employers and r["month"] in months:
                kind = str(r["insurance_type"])
                people[kind].add(r["person_id"])
                rows[kind] += 1
                total[kind] += r["amount"]  # type: ignore[operator]
        return {kind: (len(people[kind]), rows[kind], total[kind]) for kind in people}

    def person_rows(self, employer: str, months: Sequence[dt.date]) -> dict[str, Decimal]:
        out: dict[str, Decimal] = defaultdict(Decimal)
        for r in self.rows:
            if r["employer_credit_code"] == employer and r["month"] in months:
                out[str(r["insurance_type"])] += r["amount"]  # type: ignore[operator]
        return out


def _body(employers: Any, months: Sequence[dt.date]) -> dict[str, Any]:
    return {
        "group_by": ["insurance_type"],
        "measures": [
            {"fn": "count"},
            {"fn": "sum", "field": "amount"},
            {"fn": "avg", "field": "base"},
        ],
        "filters": {
            "employer_credit_code": employers,
            "month": {"in": [m.isoformat() for m in months]},
        },
    }


def _by_type(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {g["insurance_type"]: g for g in answer["groups"]}


@asynccontextmanager
async def _served(world: World, **overrides: Any) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    """Another gateway process on the same store and keystore, with other settings."""
    gateway = await Gateway.open(
        world.gateway.settings.replace(**overrides),
        clock=world.clock,
        anchoring=False,
    )
    client = TestClient(GatewayTestServer(create_app(gateway), host="127.0.0.1"))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
        await gateway.close()


async def _aggregate(client: TestClient, token: str, body: Any) -> tuple[dict[str, Any], str]:  # type: ignore[type-arg]
    resp = await client.post(
        f"/v1/scenarios/enterprise-credit/datasets/{DATASET}/aggregate",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
    )
    answer = await resp.json()
    assert resp.status == 200, answer
    return answer, resp.headers["Dsgw-Record-Id"]


async def test_differencing_is_real_without_the_audit_and_withheld_with_it(
    world: World, insured: list[Row]
) -> None:
    spec = next(d for d in demo_datasets() if d["id"] == DATASET)
    spec["source"] = {"kind": "sql", "url": f"sqlite:///{SOURCE}", "table": "social_insurance"}
    await world.gateway.governance.catalog.register_dataset(
        LOCAL_ADMIN, spec, replace_existing=True
    )
    token = await world.token()
    data = Insured(insured)

    # The attack: one month, a list of 39 employers, then the same list plus an
    # employer with a single insured person in that month.
    month = max(data.months, key=lambda m: len(data.in_month(m)))
    single = data.in_month(month, size=1)[0]
    listed = [e for e in data.in_month(month) if e != single][:39]
    first, second = _body({"in": listed}, [month]), _body({"in": [*listed, single]}, [month])
    victim = data.person_rows(single, [month])
    before, after = data.cells(listed, [month]), data.cells([*listed, single], [month])
    assert len(listed) == 39 and victim
    assert all(people >= K for people, _, _ in [*before.values(), *after.values()])

    # The range-filter variant: an employer-code range moved by one step onto an employer
    # with a single insured person in another month.
    month2 = sorted(data.months, key=lambda m: len(data.in_month(m)))[-2]
    present = data.in_month(month2)
    edge = next(i for i, e in enumerate(present) if i >= 30 and len(data.people[(e, month2)]) == 1)
    low, high = present[edge - 30], present[edge]
    ranged = _body({"gte": low, "lt": high}, [month2])
    ranged_on = _body({"gte": low, "lte": high}, [month2])

    # Same subjects, one row more: a month added in which the only insured person of the
    # listed employers is one already counted.
    for i in range(5, len(data.months) - 1):
        span, next_month = data.months[i - 5 : i + 1], data.months[i + 1]
        quiet = [e for e in data.employers if not data.people[(e, next_month)]]
        lone = [
            e
            for e in data.employers
            if len(data.people[(e, next_month)]) == 1
            and data.people[(e, next_month)] <= data.people[(e, span[-1])]
        ]
        if lone and len(quiet) >= 10:
            break
    keeper = lone[0]
    stayed = _body({"in": [*quiet, keeper]}, span)
    extra_row = _body({"in": [*quiet, keeper]}, [*span, next_month])
    extra = data.person_rows(keeper, [next_month])
    same = data.cells([*quiet, keeper], span)
    assert {k: v[0] for k, v in same.items()} == {
        k: v[0] for k, v in data.cells([*quiet, keeper], [*span, next_month]).items()
    }, "the extra month must add no subject"
    assert all(people >= K for people, _, _ in same.values())

    # Today's behaviour (audit off): every answer is exact and the differences are the
    # person's own contributions, to the cent.
    async with _served(world, aggregate_overlap_min=0) as plain:
        a, _ = await _aggregate(plain, token, first)
        b, _ = await _aggregate(plain, token, second)
        assert a["withheld_groups"] == b["withheld_groups"] == 0
        assert a["suppressed_groups"] == b["suppressed_groups"] == 0
        a_types, b_types = _by_type(a), _by_type(b)
        for kind, amount in victim.items():
            assert b_types[kind]["count"] - a_types[kind]["count"] == 1
            assert Decimal(b_types[kind]["sum_amount"]) - Decimal(a_types[kind]["sum_amount"]) == (
                amount
            )
        r1, _ = await _aggregate(plain, token, ranged)
        r2, _ = await _aggregate(plain, token, ranged_on)
        lone_amounts = data.person_rows(high, [month2])
        for kind, amount in lone_amounts.items():
            got = Decimal(_by_type(r2)[kind]["sum_amount"]) - Decimal(
                _by_type(r1)[kind]["sum_amount"]
            )
            assert got == amount
        e1, _ = await _aggregate(plain, token, stayed)
        e2, _ = await _aggregate(plain, token, extra_row)
        for kind, amount in extra.items():
            got = Decimal(_by_type(e2)[kind]["sum_amount"]) - Decimal(
                _by_type(e1)[kind]["sum_amount"]
            )
            assert got == amount and _by_type(e2)[kind]["count"] == _by_type(e1)[kind]["count"] + 1
        # Nothing was kept for the audit while it was off.
        assert await _answered_cells(world) == 0

    # With the audit (the default): the first answer whole, the second without the cells
    # that hold the extra person; the cells without them are identical and answered again.
    a, _ = await _aggregate(world.client, token, first)
    assert a["withheld_groups"] == 0 and _by_type(a) == a_types
    b, record_id = await _aggregate(world.client, token, second)
    assert b["withheld_groups"] == len(victim)
    assert set(_by_type(b)) == set(a_types) - set(victim)
    for kind, group in _by_type(b).items():
        assert group == a_types[kind]
    record = await _record(world, token, record_id)
    assert record["parameters"]["audit"]["withheld"] == len(victim)
    assert record["parameters"]["audit"]["compared"] >= len(victim)
    assert record["rows"] == len(b["groups"])

    r1, _ = await _aggregate(world.client, token, ranged)
    assert r1["withheld_groups"] == 0
    r2, _ = await _aggregate(world.client, token, ranged_on)
    assert r2["withheld_groups"] == len(lone_amounts)
    assert not set(_by_type(r2)) & set(lone_amounts)

    e1, _ = await _aggregate(world.client, token, stayed)
    assert e1["withheld_groups"] == 0
    e2, _ = await _aggregate(world.client, token, extra_row)
    assert e2["withheld_groups"] == len(extra)
    assert not set(_by_type(e2)) & set(extra)

    # An identical repeat reveals nothing new: answered, and not stored twice.
    stored = await _answered_cells(world)
    again, _ = await _aggregate(world.client, token, first)
    assert again == a and await _answered_cells(world) == stored

    # The state is in the store: a new gateway withholds the same cells. Two concurrent
    # calls differing by one person, one on each gateway: one of them loses those cells.
    month3 = sorted(data.months, key=lambda m: len(data.in_month(m)))[-3]
    pair = [e for e in data.in_month(month3) if len(data.people[(e, month3)]) >= 2][:30]
    third = data.in_month(month3, size=1)[0]
    third_types = data.person_rows(third, [month3])
    async with _served(world) as second_gateway:
        b2, _ = await _aggregate(second_gateway, token, second)
        assert b2 == b
        c1, c2 = await asyncio.gather(
            _aggregate(world.client, token, _body({"in": pair}, [month3])),
            _aggregate(second_gateway, token, _body({"in": [*pair, third]}, [month3])),
        )
    assert c1[0]["withheld_groups"] + c2[0]["withheld_groups"] == len(third_types)
    both = set(_by_type(c1[0])) & set(_by_type(c2[0]))
    assert not both & set(third_types)


async def _answered_cells(world: World) -> int:
    from sqlalchemy import func, select

    async with world.gateway.engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(AnsweredCellRow)) or 0)


async def _record(world: World, token: str, record_id: str) -> dict[str, Any]:
    seq = record_id.split("/")[1]
    resp = await world.client.get(f"/v1/calls/{seq}", headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 200
    return (await resp.json())["record"]  # type: ignore[no-any-return]


async def test_audit_limits_and_unreadable_state(world: World, insured: list[Row]) -> None:
    """Too many subject rows is a 422 naming what to do; a stored sketch the audit cannot
    read is a 503, never an unaudited answer."""
    spec = next(d for d in demo_datasets() if d["id"] == DATASET)
    spec["source"] = {"kind": "sql", "url": f"sqlite:///{SOURCE}", "table": "social_insurance"}
    await world.gateway.governance.catalog.register_dataset(
        LOCAL_ADMIN, spec, replace_existing=True
    )
    token = await world.token()
    data = Insured(insured)
    month = data.months[3]
    employers = data.in_month(month)
    body = _body({"in": employers}, [month])
    async with _served(world, aggregate_audit_max_rows=20) as small:
        resp = await small.post(
            f"/v1/scenarios/enterprise-credit/datasets/{DATASET}/aggregate",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        )
        problem = await resp.json()
        assert resp.status == 422, problem
        assert problem["type"] == "/problems/aggregate-too-large"
        assert "narrow the filters" in problem["detail"] and problem["max_rows"] == 20
    answer, _ = await _aggregate(world.client, token, body)
    assert answer["withheld_groups"] == 0 and answer["groups"]
    async with world.gateway.engine.begin() as conn:
        await conn.execute(update(AnsweredCellRow).values(sketch=b"\x07junk"))
    resp = await world.client.post(
        f"/v1/scenarios/enterprise-credit/datasets/{DATASET}/aggregate",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
    )
    problem = await resp.json()
    assert resp.status == 503 and problem["type"] == "/problems/audit-unavailable", problem
    assert "answered_cells" in problem["detail"]


async def test_a_raised_threshold_compares_old_cells_at_their_own(
    world: World, clock: FixedClock
) -> None:
    """Sketches kept under k = 4 still decide differences below 4 after k is raised to 10;
    a sketch kept under k = 10 decides at 4 when k is lowered."""
    engine = world.gateway.engine
    rng = random.Random(3)
    base = rng.sample(range(1, PRIME), 40)
    low = OverlapAudit(engine, clock, key=b"k" * 32, threshold=4, max_subject_rows=10)
    high = OverlapAudit(engine, clock, key=b"k" * 32, threshold=10, max_subject_rows=10)
    assert (await low.admit("m", "d", [low.sketch(base)])).answered == (True,)
    outcome = await high.admit("m", "d", [high.sketch(base[2:]), high.sketch(base[5:])])
    # 2 from the old cell: withheld; 5 from it: not below the old cell's 4, answered.
    assert outcome.answered == (False, True)
    lowered = await low.admit("m", "d", [low.sketch([*base[5:], 7])])
    assert lowered.answered == (False,)  # 1 from the k=10 cell of base[5:], seen at k=4
    other = await high.admit("m2", "d", [high.sketch(base[2:])])
    assert other.answered == (True,), "another merchant's cells are not compared"
