"""Leak tracing: normalisation, marks, canaries, the delivery index written with the call
record, and the trace engine over deliveries made through the real HTTP data plane, on
SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import hypothesis
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from connectors import synthetic
from connectors.base import Condition
from gateway.api.app import create_app
from gateway.catalog.models import Dataset
from gateway.cli.demo import DEMO_MERCHANT, demo_credit_code, demo_datasets, demo_scenario
from gateway.clock import FixedClock
from gateway.db.engines import create_engine, migrate
from gateway.db.schema import TraceRow
from gateway.errors import NotFoundError, ValidationError
from gateway.governance.models import ScenarioStatus
from gateway.governance.service import LOCAL_ADMIN
from gateway.identifiers import (
    is_valid_bank_card,
    is_valid_resident_id,
    is_valid_uscc,
    is_valid_vin,
)
from gateway.ledger.log import LogWriter, PendingRecord, read_entry
from gateway.privacy.masking import MaskRule, mask
from gateway.runtime import Gateway, derive_key
from gateway.settings import Settings
from gateway.tracing.canaries import canary_row, canary_slot, selects, substitute
from gateway.tracing.delivery import DeliveryTracing
from gateway.tracing.index import identity_hash, rows_digest
from gateway.tracing.marks import (
    DigitCarrier,
    MaskCarrier,
    _log_tail,
    binomial_tail,
    embed,
    expected_bit,
    mark_id,
    read_bit,
    recipient_key,
)
from gateway.tracing.models import LeakedTable, TraceReport
from gateway.tracing.normalize import normalize, normalize_variants
from keys.keystore import KeyPurpose
from tests.support.enrolment import enrol_merchant
from tests.support.world import ROWS, World, build_world

SCENARIO = "leak-watch"
MERCHANTS = ("m-alpha", "m-beta", "m-gamma")
FIELDS = [
    "credit_code",
    "name",
    "legal_rep_name",
    "registered_capital",
    "established",
    "district",
    "industry",
    "status",
    "address",
]
KEY = b"k" * 32


# -- normalisation ----------------------------------------------------------------------------


@hypothesis.settings(max_examples=300, deadline=None)
@given(st.text())
def test_normalize_is_idempotent(value: str) -> None:
    once = normalize(value)
    assert normalize(once) == once
    assert once in normalize_variants(value)


@hypothesis.settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"])), st.data())
def test_normalize_ignores_spacing_and_case(value: str, data: st.DataObject) -> None:
    spaced = "".join(
        ch + data.draw(st.sampled_from(["", " ", "\t", "\u3000"])) for ch in value.lower()
    )
    assert normalize(f"  {spaced} ") == normalize(value.upper())


@hypothesis.settings(max_examples=300, deadline=None)
@given(
    st.decimals(min_value=-(10**12), max_value=10**12, places=2, allow_nan=False),
)
def test_normalize_number_formats(value: Decimal) -> None:
    plain = format(value, "f")
    grouped = f"{value:,.2f}"
    trimmed = plain.rstrip("0").rstrip(".") if "." in plain else plain
    exponent = f"{value:.14E}" if value else "0"
    assert normalize(plain) == normalize(grouped) == normalize(trimmed) == normalize(exponent)
    assert normalize(f" {grouped} ") == normalize(plain)


@hypothesis.settings(max_examples=300, deadline=None)
@given(st.integers(min_value=10**15, max_value=10**18 - 1))
def test_long_numbers_survive_a_spreadsheet(number: int) -> None:
    """Excel keeps 15 significant digits: rounded (a double shown with 15 digits) or cut
    (typed in). Both forms find what was delivered."""
    delivered = normalize(str(number))
    digits = len(str(number))
    cut = str(number)[:15] + "0" * (digits - 15)
    shown = f"{float(number):.14E}"
    assert delivered in normalize_variants(shown)
    assert delivered in normalize_variants(cut)
    assert normalize(f"00{number}") == delivered


def test_normalize_examples() -> None:
    assert normalize("0012345") == normalize("12345") == "12345"
    assert (
        normalize("430102199001011234")
        == normalize("4.30102199001011E+17")
        == normalize("430102199001011000")
    )
    assert normalize("1,234.50") == normalize("1234.5") == "1234.5"
    dates = [
        "2020-01-05",
        "2020/1/5",
        "2020.1.5",
        "2020年1月5日",
        "1/5/2020",
        "2020-01-05 00:00:00",
    ]
    assert {normalize(d) for d in dates} == {"2020-01-05"}
    assert normalize("ＡＢＣ　１２３") == "ABC123"
    assert normalize("2020-02-30") == "2020-02-30"  # not a date: left as text
    assert normalize("91430100MA4L0001X1") == "91430100MA4L0001X1"


# -- marks ------------------------------------------------------------------------------------


def test_digit_mark_round_trip_survives_reformatting() -> None:
    carrier = DigitCarrier(2)
    rng = random.Random(5)
    for _ in range(500):
        value = Decimal(rng.randrange(0, 10**9)).scaleb(-2)
        bit, up = rng.randrange(2), rng.randrange(2)
        marked = embed(carrier, format(value, "f"), bit, up)
        assert abs(Decimal(marked) - value) <= Decimal("0.01")
        assert Decimal(marked) >= 0
        for shown in (
            marked,
            f"{Decimal(marked):,}",
            marked.rstrip("0").rstrip("."),
            f" {float(marked)!r} ",
            f"{Decimal(marked):.14E}",
        ):
            assert read_bit(carrier, shown) == bit, (value, marked, shown)
    assert embed(carrier, None, 1) is None
    assert embed(DigitCarrier(0), 7, 0, 0) == 6 and embed(DigitCarrier(0), 0, 1, 0) == 1
    assert embed(carrier, "-0.01", 0, 1) == "-0.02"  # never across the sign
    assert read_bit(carrier, "not a number") is None


def test_mask_mark_round_trip() -> None:
    address = MaskCarrier(MaskRule.ADDRESS)
    email = MaskCarrier(MaskRule.EMAIL)
    masked_address = mask(MaskRule.ADDRESS, "湖南省长沙市岳麓区麓山南路932号")
    masked_email = mask(MaskRule.EMAIL, "zhang.san@example.com")
    for bit in (0, 1):
        marked = embed(address, masked_address, bit)
        assert marked.startswith("湖南省长沙市岳麓区****")
        assert read_bit(address, f" {marked}  ") == bit
        marked = embed(email, masked_email, bit)
        assert marked.endswith("@example.com") and marked.startswith("z***")
        assert read_bit(email, marked.upper()) == bit
    assert read_bit(address, "湖南省长沙市岳麓区麓山南路932号") is None
    assert read_bit(address, "张**") is None


def test_binomial_tail() -> None:
    assert binomial_tail(10, 0) == 1.0
    assert binomial_tail(10, 11) == 0.0
    assert binomial_tail(10, 10) == 2.0**-10
    assert binomial_tail(4, 3) == 5 / 16
    assert binomial_tail(1000, 1000) == 2.0**-1000
    # The log-space sum used beyond 1000 trials agrees with the exact one.
    for k in (1, 300, 480, 500, 501, 520, 560, 700, 900, 1000):
        assert _log_tail(1000, k) == pytest.approx(binomial_tail(1000, k), rel=1e-8)
    assert binomial_tail(4000, 2000) == pytest.approx(0.5, abs=0.01)
    assert binomial_tail(4000, 1500) == pytest.approx(1.0)
    assert 0 < binomial_tail(4000, 2300) < 1e-20
    # Under the null (bits independent of the key) small p-values are as rare as they say.
    rng = random.Random(1)
    small = sum(
        binomial_tail(60, sum(rng.randrange(2) for _ in range(60))) <= 0.01 for _ in range(2000)
    )
    assert small <= 40


def test_recipients_get_independent_bits_and_mark_ids() -> None:
    a = recipient_key(KEY, "enterprises", "m-alpha")
    b = recipient_key(KEY, "enterprises", "m-beta")
    anchors = [f"9143010{i:011d}" for i in range(2000)]
    bits_a = [expected_bit(a, x, "registered_capital") for x in anchors]
    bits_b = [expected_bit(b, x, "registered_capital") for x in anchors]
    assert 900 < sum(bits_a) < 1100
    assert 900 < sum(x == y for x, y in zip(bits_a, bits_b, strict=True)) < 1100
    assert mark_id(KEY, "m-alpha") != mark_id(KEY, "m-beta")
    assert mark_id(KEY, "m-alpha").startswith("mk1:") and len(mark_id(KEY, "m-alpha")) == 20


# -- canaries ---------------------------------------------------------------------------------


def test_canary_identifiers_keep_format_and_check_characters() -> None:
    recipient = recipient_key(KEY, "enterprises", "m-alpha")
    other = recipient_key(KEY, "enterprises", "m-beta")
    ent = next(synthetic.generate("enterprises", 1, seed=3))
    veh = next(synthetic.generate("vehicles", 1, seed=3))
    samples = [
        (str(ent["credit_code"]), is_valid_uscc),
        (str(ent["legal_rep_id"]), is_valid_resident_id),
        (str(veh["vin"]), is_valid_vin),
        ("6222021234567890128", is_valid_bank_card),
    ]
    for value, valid in samples:
        assert valid(value)
        fake = substitute(recipient, "anchor", "f", value)
        assert isinstance(fake, str) and fake != value and len(fake) == len(value)
        assert valid(fake), (value, fake)
        assert substitute(recipient, "anchor", "f", value) == fake  # deterministic
        assert substitute(other, "anchor", "f", value) != fake
    fake_int = substitute(recipient, "anchor", "record_id", 40213)
    assert isinstance(fake_int, int) and fake_int != 40213 and len(str(fake_int)) == 5
    assert substitute(recipient, "anchor", "f", "张三丰") not in (None, "张三丰")
    assert substitute(recipient, "anchor", "f", "---") is None
    rate = sum(selects(recipient, f"a{i}", 64) for i in range(6400))
    assert 50 < rate < 160


def test_canaries_are_synthetic_records_at_keyed_places() -> None:
    """A canary is not a near-copy of a neighbouring row: a new identity with valid check
    characters, a name and address no real row of the page has, categories agreeing with
    the filters; at a keyed place in the page, the same on every fetch."""
    recipient = recipient_key(KEY, "enterprises", "m-alpha")
    page = [r for r in synthetic.generate("enterprises", 400, seed=3) if r["district"] == "岳麓区"]
    assert len(page) >= 20
    identifying = ("credit_code",)
    fakes = [
        (anchor, canary_row(recipient, anchor, page, identifying, {"district"}))
        for anchor in (str(r["credit_code"]) for r in page)
    ]
    made = [(anchor, fake) for anchor, fake in fakes if fake is not None]
    assert len(made) == len(page)
    for anchor, fake in made:
        assert fake is not None
        assert is_valid_uscc(str(fake["credit_code"]))
        assert is_valid_resident_id(str(fake["legal_rep_id"]))
        assert fake["district"] == "岳麓区"
        for field in ("credit_code", "name", "address", "legal_rep_id"):
            assert fake[field] not in {r[field] for r in page}, (field, fake[field])
        # No real row shares more than the categories and a number or date with it.
        for real in page:
            same = {f for f in fake if fake[f] == real[f]}
            assert same <= {"district", "industry", "status", "registered_capital", "established"}
        assert str(fake["name"]).endswith("公司")
        assert canary_row(recipient, anchor, page, identifying, {"district"}) == fake
        other = recipient_key(KEY, "enterprises", "m-beta")
        assert canary_row(other, anchor, page, identifying, {"district"}) != fake
    assert len({str(fake["name"]) for _a, fake in made}) == len(made)
    slots = [canary_slot(recipient, str(r["credit_code"]), len(page)) for r in page]
    assert all(0 <= s <= len(page) for s in slots)
    # Not always right after (or before) the selecting row.
    assert sum(s in (i, i + 1) for i, s in enumerate(slots)) < len(page) // 4
    assert canary_row(recipient, "x", page[:1], identifying) is None


def _enterprises(canaries: bool = True) -> Dataset:
    data = next(d for d in demo_datasets() if d["id"] == "enterprises")
    return Dataset.from_dict({**data, "canaries": canaries})


def _render(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in FIELDS:
        value = row.get(name)
        if name == "address":
            out[name] = mask(MaskRule.ADDRESS, value)
        elif name == "legal_rep_name":
            out[name] = mask(MaskRule.NAME, value)
        elif isinstance(value, Decimal):
            out[name] = format(value, "f")
        elif isinstance(value, dt.date):
            out[name] = value.isoformat()
        else:
            out[name] = value
    return out


def test_delivery_pages_never_exceed_the_limit() -> None:
    tracing = DeliveryTracing(trace_key=KEY, mark_key=KEY, canary_rate=2)
    dataset = _enterprises()
    source = [dict(r) for r in synthetic.generate("enterprises", 40, seed=9)]
    masked = {"legal_rep_name", "address"}
    page = tracing.page(
        dataset,
        "m-alpha",
        FIELDS,
        source[:10],
        render=_render,
        masked=masked,
        conditions=[Condition("district", "eq", "岳麓区")],
        limit=10,
    )
    assert len(page.rows) == 10 and page.canaries
    assert page.real_rows == 10 - len(page.canaries)
    codes = [r["credit_code"] for r in page.rows]
    real = [c for c in codes if c in {r["credit_code"] for r in source}]
    assert real == [r["credit_code"] for r in source[: page.real_rows]]
    assert page.rows_digest == rows_digest(page.trace_hashes)
    assert page.mark_id == mark_id(KEY, "m-alpha")
    # A filter on the identifying field: a fake identity would contradict it, no canary.
    page = tracing.page(
        dataset,
        "m-alpha",
        FIELDS,
        source[:10],
        render=_render,
        masked=masked,
        conditions=[Condition("credit_code", "in", tuple(r["credit_code"] for r in source))],
        limit=10,
    )
    assert not page.canaries and page.real_rows == 10
    # Without the identifying field in clear, nothing anchors a mark or a canary.
    page = tracing.page(
        dataset,
        "m-alpha",
        ["district", "registered_capital"],
        source[:10],
        render=lambda r: {k: str(r[k]) for k in ("district", "registered_capital")},
        masked=set(),
        conditions=[],
        limit=10,
    )
    assert not page.canaries and page.mark_id is None
    assert [r["registered_capital"] for r in page.rows] == [
        str(r["registered_capital"]) for r in source[:10]
    ]


# -- catalog declarations ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "district", "mark": "digit:2"}, "decimal or integer"),
        ({"name": "registered_capital", "mark": "digit:9"}, "digit:N"),
        ({"name": "legal_rep_name", "mark": "mask"}, "address or email"),
        ({"name": "registered_capital", "mark": "text"}, "digit:N"),
        ({"name": "credit_code", "mark": "mask"}, "address or email"),
    ],
)
def test_mark_declarations_are_checked(change: dict[str, str], message: str) -> None:
    data = json.loads(json.dumps(next(d for d in demo_datasets() if d["id"] == "enterprises")))
    for spec in data["fields"]:
        if spec["name"] == change["name"]:
            spec["mark"] = change["mark"]
    with pytest.raises(ValidationError, match=message):
        Dataset.from_dict(data)


def test_identifying_fields_cannot_carry_marks() -> None:
    data = json.loads(json.dumps(next(d for d in demo_datasets() if d["id"] == "social-insurance")))
    for spec in data["fields"]:
        if spec["name"] == "record_id":
            spec["mark"] = "digit:0"
    with pytest.raises(ValidationError, match="identifying"):
        Dataset.from_dict(data)
    plain = _enterprises(canaries=False)
    assert "canaries" not in plain.to_dict()
    assert _enterprises().to_dict()["canaries"] is True
    assert Dataset.from_dict(_enterprises().to_dict()) == _enterprises()
    # Merchants are not told what to scrub.
    public = json.dumps(_enterprises().public_dict())
    assert '"mark"' not in public and "canaries" not in public


async def test_only_call_records_carry_index_entries(settings: Settings) -> None:
    engine = create_engine(settings.resolved_database_url)
    await migrate(engine)
    writer = LogWriter(engine)
    await writer.start()
    try:
        now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        with pytest.raises(ValueError, match="call records"):
            await writer.append(PendingRecord("governance", "x", now, {"i": 1}, trace_hashes=(1,)))
        entry = await writer.append(
            PendingRecord("calls", "data", now, {"i": 1}, trace_hashes=(5, 7, 5))
        )
        async with engine.connect() as conn:
            rows = (await conn.execute(select(TraceRow.hash, TraceRow.seq))).all()
        assert sorted(rows) == [(5, entry.seq), (7, entry.seq)]
    finally:
        await writer.close()
        await engine.dispose()


# -- through the gateway ----------------------------------------------------------------------


@dataclasses.dataclass
class Traced:
    world: World
    creds: dict[str, tuple[str, str]]

    async def pages(
        self, merchant: str, district: str, limit: int = 50, fields: list[str] | None = None
    ) -> tuple[list[dict[str, Any]], list[int]]:
        """Every page of one district as ``merchant`` sees it, and the record seqs."""
        token = await self.world.token(f"scenario:{SCENARIO}", self.creds[merchant])
        rows: list[dict[str, Any]] = []
        seqs: list[int] = []
        offset: int | None = 0
        while offset is not None:
            body: dict[str, Any] = {
                "filters": {"district": district},
                "limit": limit,
                "offset": offset,
            }
            if fields is not None:
                body["fields"] = fields
            status, answer, headers = await self.world.data(
                token, "enterprises", "query", body, scenario=SCENARIO
            )
            assert status == 200, answer
            assert len(answer["rows"]) <= limit
            rows += answer["rows"]
            seqs.append(int(headers["Dsgw-Record-Id"].split("/")[1]))
            offset = answer["next_offset"]
        return rows, seqs


@pytest.fixture
async def traced(settings: Settings, clock: FixedClock) -> AsyncIterator[Traced]:
    """The demo world with one canary in every 4 rows, a scenario that delivers the marked
    address too, and three merchants with agreements on it."""
    settings = settings.replace(trace_canary_rate=4)
    gateway, creds = await build_world(settings, clock)
    gov = gateway.governance
    now = clock.now()
    scenario = demo_scenario(now)
    scenario["id"] = SCENARIO
    scenario["grants"] = [
        {**scenario["grants"][0], "fields": FIELDS, "modes": ["query"], "row_cap": 50}
    ]
    for key in ("verify_fields", "reveal_mismatch"):
        scenario["grants"][0].pop(key, None)
    await gov.scenarios.create_scenario(LOCAL_ADMIN, scenario)
    await gov.scenarios.set_scenario_status(LOCAL_ADMIN, SCENARIO, ScenarioStatus.PUBLISHED)
    merchant_creds: dict[str, tuple[str, str]] = {}
    for merchant in MERCHANTS:
        issued = await enrol_merchant(
            gov, merchant, f"{merchant} 有限公司", SCENARIO, now, days=365
        )
        assert issued.secret
        merchant_creds[merchant] = (issued.client.client_id, issued.secret)
    server = TestServer(create_app(gateway), host="127.0.0.1")
    client = TestClient(server)
    await client.start_server()
    try:
        world = World(
            gateway=gateway,
            client=client,
            clock=clock,
            merchant_id=DEMO_MERCHANT,
            merchant_client=creds["merchant"],
            staff=creds["staff"],
            sample={},
        )
        yield Traced(world, merchant_creds)
    finally:
        await client.close()
        await gateway.close()


SOURCE = {str(r["credit_code"]): r for r in synthetic.generate("enterprises", ROWS, seed=7)}


def _districts() -> list[str]:
    counts: dict[str, int] = {}
    for row in SOURCE.values():
        counts[str(row["district"])] = counts.get(str(row["district"]), 0) + 1
    return sorted(counts, key=lambda d: -counts[d])


async def test_answers_are_marked_deterministic_and_page_by_real_rows(traced: Traced) -> None:
    district = _districts()[0]
    expected = sorted(c for c, r in SOURCE.items() if r["district"] == district)
    rows, _seqs = await traced.pages("m-alpha", district, limit=7)
    again, _ = await traced.pages("m-alpha", district, limit=7)
    assert rows == again  # marks and canaries are the same on every fetch
    real = [r for r in rows if r["credit_code"] in SOURCE]
    fake = [r for r in rows if r["credit_code"] not in SOURCE]
    assert sorted(r["credit_code"] for r in real) == expected  # each real row exactly once
    assert fake, "one row in 4 is followed by a canary"
    for row in fake:
        assert is_valid_uscc(row["credit_code"])
        assert row["district"] == district
    for row in real:
        source = SOURCE[row["credit_code"]]
        assert abs(Decimal(row["registered_capital"]) - source["registered_capital"]) <= Decimal(
            "0.01"
        )
        assert row["address"].endswith("****") and not row["address"].endswith("******")
    beta, _ = await traced.pages("m-beta", district, limit=50)
    beta_real = {r["credit_code"]: r for r in beta if r["credit_code"] in SOURCE}
    assert set(beta_real) == set(expected)
    differing = sum(
        beta_real[r["credit_code"]]["registered_capital"] != r["registered_capital"]
        or beta_real[r["credit_code"]]["address"] != r["address"]
        for r in real
    )
    assert differing > len(real) // 3  # two recipients, two different marks
    assert {r["credit_code"] for r in beta} - set(SOURCE) != {r["credit_code"] for r in fake}


async def test_index_entries_commit_with_the_call_record(traced: Traced) -> None:
    gateway = traced.world.gateway
    district = _districts()[1]
    rows, seqs = await traced.pages("m-alpha", district, limit=50)
    canaries: set[str] = set()
    async with gateway.engine.connect() as conn:
        for seq in seqs:
            entry = await read_entry(gateway.engine, "calls", seq)
            assert entry is not None
            body = json.loads(entry.payload)
            stored = (await conn.scalars(select(TraceRow.hash).where(TraceRow.seq == seq))).all()
            assert stored and body["rows_digest"] == rows_digest(stored)
            assert body["mark_id"] == mark_id(_mark_key(gateway), "m-alpha")
            canaries.update(body["canaries"])
        trace_key = _trace_key(gateway)
        fakes = set()
        for row in rows:
            value = normalize(row["credit_code"])
            h = identity_hash(trace_key, "enterprises", "credit_code", value)
            found = (await conn.scalars(select(TraceRow.seq).where(TraceRow.hash == h))).all()
            assert set(found) & set(seqs)
            if row["credit_code"] not in SOURCE:
                fakes.add(f"{h:016x}")
    assert fakes and fakes == canaries
    # Refused calls index nothing.
    token = await traced.world.token(f"scenario:{SCENARIO}", traced.creds["m-alpha"])
    status, _body, headers = await traced.world.data(
        token, "enterprises", "query", {"filters": {"industry": "x"}}, scenario=SCENARIO
    )
    assert status == 400
    seq = int(headers["Dsgw-Record-Id"].split("/")[1])
    async with gateway.engine.connect() as conn:
        assert not (await conn.scalars(select(TraceRow.hash).where(TraceRow.seq == seq))).all()


def _keys(gateway: Gateway) -> tuple[bytes, bytes]:
    secret = gateway.keystore.secret(gateway.keystore.active(KeyPurpose.MARK).kid)
    return (
        derive_key(secret, "dsgw trace row hashes v1"),
        derive_key(secret, "dsgw recipient marks v1"),
    )


def _trace_key(gateway: Gateway) -> bytes:
    return _keys(gateway)[0]


def _mark_key(gateway: Gateway) -> bytes:
    return _keys(gateway)[1]


def _table(rows: list[dict[str, Any]], source: str = "leak.csv") -> LeakedTable:
    headers = tuple(rows[0])
    return LeakedTable(
        headers=headers,
        rows=tuple(tuple("" if r[h] is None else str(r[h]) for h in headers) for r in rows),
        source=source,
    )


def _by_merchant(report: TraceReport) -> dict[str, Any]:
    return {c.merchant_id: c for c in report.candidates}


async def test_trace_names_the_leaker_and_nobody_else(traced: Traced) -> None:
    first, second, third = _districts()[:3]
    alpha: list[dict[str, Any]] = []
    for district in (first, second):
        rows, _ = await traced.pages("m-alpha", district)
        alpha += rows
    await traced.pages("m-beta", first)
    beta_third, _ = await traced.pages("m-beta", third)
    await traced.pages("m-gamma", first)
    tracer = traced.world.gateway.tracer
    stages: list[str] = []

    report = await tracer.trace(
        LOCAL_ADMIN, _table(alpha), progress=lambda stage, _d, _t: stages.append(stage)
    )
    assert report.dataset_id == "enterprises"
    assert report.rows_total == len(alpha) and report.rows_matched == len(alpha)
    assert {"columns", "rows"} <= set(stages)
    named = [c.merchant_id for c in report.candidates if c.verdict == "named"]
    assert named == ["m-alpha"]
    top = report.candidates[0]
    assert top.merchant_id == "m-alpha"
    assert top.false_attribution_probability < 1e-12
    assert top.marks is not None and top.marks.matches == top.marks.cells
    assert top.canaries and top.rows_exclusive > 0
    assert top.deliveries and top.deliveries[0].record_id.startswith("calls/")
    others = _by_merchant(report)
    for merchant in ("m-beta", "m-gamma"):
        assert others[merchant].verdict != "named"
        assert others[merchant].false_attribution_probability > 1e-3
        assert others[merchant].rows_received > 0 and others[merchant].rows_exclusive == 0
    columns = {c.header: (c.field, c.how) for c in report.columns}
    assert columns["credit_code"] == ("credit_code", "content")
    assert json.loads(json.dumps(report.to_dict()))["candidates"][0]["merchant_id"] == "m-alpha"

    # Renamed headers, columns dropped and reordered, a 10% subset: still the leaker.
    rng = random.Random(11)
    subset = rng.sample(alpha, max(30, len(alpha) // 10))
    renamed = [
        {"资本": r["registered_capital"], "代码": r["credit_code"], "地址": r["address"]}
        for r in subset
    ]
    report = await tracer.trace(LOCAL_ADMIN, _table(renamed))
    assert [c.merchant_id for c in report.named] == ["m-alpha"]

    # Rows every recipient received, with the marks taken out (source capital, plain mask):
    # everybody received them, nobody is singled out.
    common = [
        {
            **r,
            "registered_capital": format(SOURCE[r["credit_code"]]["registered_capital"], "f"),
            "address": mask(MaskRule.ADDRESS, SOURCE[r["credit_code"]]["address"]),
        }
        for r in alpha
        if r["credit_code"] in SOURCE and r["district"] == first
    ]
    report = await tracer.trace(LOCAL_ADMIN, _table(common))
    assert report.rows_matched == len(common)
    assert not report.named
    assert {c.merchant_id for c in report.candidates} == set(MERCHANTS)
    for candidate in report.candidates:
        assert candidate.false_attribution_probability > 1e-3
        assert candidate.rows_exclusive == 0

    assert any("looks erased" in note for note in report.notes)  # the plain address masks

    # Two recipients' rows mixed, with some rows all three received: both named.
    mixed = [r for r in alpha if r["district"] != first] + beta_third + alpha[:10]
    random.Random(3).shuffle(mixed)
    report = await tracer.trace(LOCAL_ADMIN, _table(mixed))
    assert sorted(c.merchant_id for c in report.named) == ["m-alpha", "m-beta"]
    assert _by_merchant(report)["m-gamma"].verdict != "named"

    # Canaries alone are conclusive, even with the marks gone.
    canaries = [
        {"code": r["credit_code"], "name": r["name"]}
        for r in alpha
        if r["credit_code"] not in SOURCE
    ]
    report = await tracer.trace(LOCAL_ADMIN, _table(canaries[:2]))
    assert [c.merchant_id for c in report.named] == ["m-alpha"]
    assert report.named[0].marks is None and len(report.named[0].canaries) == 2
    assert report.named[0].false_attribution_probability < 1e-12

    # Nothing delivered: nobody.
    strangers = [{"code": demo_credit_code(f"x{i}"), "v": "1"} for i in range(20)]
    report = await tracer.trace(LOCAL_ADMIN, _table(strangers))
    assert report.candidates == [] and report.rows_matched == 0 and report.notes
    empty = await tracer.trace(LOCAL_ADMIN, LeakedTable(headers=("credit_code",), rows=()))
    assert empty.rows_total == 0 and empty.candidates == []
    with pytest.raises(NotFoundError):
        await tracer.trace(LOCAL_ADMIN, _table(alpha), dataset_id="no-such-dataset")
    with pytest.raises(ValidationError):
        await tracer.trace(LOCAL_ADMIN, LeakedTable(headers=(), rows=()))
    # Told the dataset, the trace finds the same.
    report = await tracer.trace(LOCAL_ADMIN, _table(alpha[:40]), dataset_id="enterprises")
    assert [c.merchant_id for c in report.named] == ["m-alpha"]
