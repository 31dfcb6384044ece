"""The trace robustness list, as a test suite (issue 6, "Leak tracing").

Four merchants query a marked, canary-bearing enterprises dataset through the real HTTP
data plane, paging through overlapping districts: one district every merchant received,
some two received, some only one. Leaked files are then built from merchant A's answers
(and B's) and transformed as leakers do; each must name the true recipient(s) and never
an innocent one, including when the file holds rows every merchant received. Built once
per database (SQLite, PostgreSQL) for the whole module.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from random import Random
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner

from connectors import synthetic
from gateway.api.app import create_app
from gateway.authorization.roles import Role
from gateway.cli.demo import demo_datasets, demo_scenario
from gateway.cli.main import cli
from gateway.clock import FixedClock
from gateway.governance.models import ScenarioStatus
from gateway.governance.service import LOCAL_ADMIN
from gateway.ledger.bundles import verify_bundle
from gateway.privacy.masking import MaskRule, mask
from gateway.runtime import Gateway
from gateway.settings import Settings
from gateway.tracing.files import read_leaked_file
from gateway.tracing.models import LeakedTable, TraceReport
from tests.support.databases import PG_ADMIN_DSN, create_pg_database, drop_pg_database
from tests.support.enrolment import enrol_merchant
from tests.support.leaks import (
    CHINESE_TITLES,
    Sheet,
    drop_columns,
    excel_round_trip,
    mix,
    reformat,
    rename_headers,
    reorder_columns,
    subset,
    write_csv,
    write_json,
)
from tests.support.templates import store_settings
from tests.support.world import ROWS, TEST_PASSPHRASE, World, build_world

pytestmark = pytest.mark.asyncio(loop_scope="module")

DATASET = "enterprises-traced"
SCENARIO = "leak-watch"
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
COMMON = "岳麓区"  # every merchant pages through it
DISTRICTS = {
    "merchant-a": ["芙蓉区", "天心区", COMMON],
    "merchant-b": ["天心区", COMMON, "开福区"],
    "merchant-c": [COMMON, "雨花区"],
    "merchant-d": [COMMON, "长沙县"],
}
A, B, C, D = sorted(DISTRICTS)
UPLOAD_LIMIT = 256 * 1024
PASSPHRASE = TEST_PASSPHRASE  # the passphrase store_settings opens the keystore with
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
NAMED_THRESHOLD = Settings().trace.named_threshold


@dataclass
class Leaks:
    """The deliveries made, and what is needed to trace files against them."""

    world: World
    settings: Settings
    # merchant -> district -> the rows its answers carried (canaries included)
    answers: dict[str, dict[str, list[dict[str, Any]]]]
    creds: dict[str, tuple[str, str]]
    tmp: Path

    @property
    def gateway(self) -> Gateway:
        return self.world.gateway

    def sheet(self, merchant: str, *districts: str) -> Sheet:
        rows = [r for d in districts or DISTRICTS[merchant] for r in self.answers[merchant][d]]
        return Sheet.from_answers(rows, FIELDS)

    async def trace(self, sheet: Sheet | LeakedTable, dataset: str | None = None) -> TraceReport:
        table = sheet if isinstance(sheet, LeakedTable) else LeakedTable(sheet.headers, sheet.rows)
        return await self.gateway.tracer.trace(LOCAL_ADMIN, table, dataset_id=dataset)

    async def trace_file(self, path: Path) -> TraceReport:
        return await self.trace(read_leaked_file(path))


def _settings(data_dir: Path, database_url: str, **overrides: Any) -> Settings:
    return store_settings(data_dir, database_url, trace_upload_max_bytes=UPLOAD_LIMIT, **overrides)


async def _setup(
    world: World, merchants: Iterable[str] = tuple(DISTRICTS)
) -> dict[str, tuple[str, str]]:
    """The traced dataset, a scenario granting it, four merchants with agreements."""
    gov = world.gateway.governance
    now = world.clock.now()
    entry = next(d for d in demo_datasets() if d["id"] == "enterprises")
    entry = json.loads(json.dumps(entry)) | {"id": DATASET, "canaries": True}
    for spec in entry["fields"]:
        if spec["name"] == "registered_capital":
            spec["mark"] = "digit:2"
        elif spec["name"] == "address":
            spec["mark"] = "mask"
    await gov.catalog.register_dataset(LOCAL_ADMIN, entry)
    await gov.scenarios.create_scenario(
        LOCAL_ADMIN,
        demo_scenario(now)
        | {
            "id": SCENARIO,
            "name": "泄露溯源测试",
            "domain": "finance",
            "purpose": "Exercise leak tracing over overlapping deliveries.",
            "valid_from": (now - dt.timedelta(days=1)).date().isoformat(),
            "valid_until": (now + dt.timedelta(days=365)).date().isoformat(),
            "quotas": {"rate_per_minute": 6000, "daily_calls": 100_000},
            "grants": [
                {
                    "dataset": DATASET,
                    "modes": ["query"],
                    "fields": FIELDS,
                    "filter_fields": ["credit_code", "district"],
                    "required_filters": ["credit_code", "district"],
                    "row_cap": 50,
                }
            ],
        },
    )
    await gov.scenarios.set_scenario_status(LOCAL_ADMIN, SCENARIO, ScenarioStatus.PUBLISHED)
    creds = {}
    for merchant in merchants:
        issued = await enrol_merchant(
            gov, merchant, f"测试商户 {merchant}", SCENARIO, now, days=300
        )
        assert issued.secret
        creds[merchant] = (issued.client.client_id, issued.secret)
    return creds


async def _deliver(world: World, creds: tuple[str, str], district: str) -> list[dict[str, Any]]:
    """Page through one district as the merchant, as its client would."""
    token = await world.token(f"scenario:{SCENARIO}", creds)
    rows: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        status, body, _ = await world.data(
            token,
            DATASET,
            "query",
            {"filters": {"district": district}, "limit": 50, "offset": offset},
            scenario=SCENARIO,
        )
        assert status == 200, body
        assert len(body["rows"]) <= 50
        rows += body["rows"]
        offset = body["next_offset"]
    return rows


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgresql"])
async def leaks(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    source_dir: Path,
) -> AsyncIterator[Leaks]:
    base = tmp_path_factory.mktemp(f"trace-{request.param}")
    data_dir = base / "data"
    data_dir.mkdir()
    (data_dir / "sources").symlink_to(source_dir / "sources")
    pg_name = None
    database_url = ""
    if request.param == "postgresql":
        pg_name = await create_pg_database()
        database_url = PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + pg_name
    settings = _settings(data_dir, database_url)
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
        merchant_creds = await _setup(world)
        answers = {
            m: {d: await _deliver(world, merchant_creds[m], d) for d in districts}
            for m, districts in DISTRICTS.items()
        }
        yield Leaks(world=world, settings=settings, answers=answers, creds=merchant_creds, tmp=base)
    finally:
        await client.close()
        await gateway.close()
        if pg_name is not None:
            await drop_pg_database(pg_name)


def named(report: TraceReport) -> set[str]:
    return {c.merchant_id for c in report.candidates if c.verdict == "named"}


def assert_attributed(report: TraceReport, *culprits: str) -> None:
    """Exactly ``culprits`` named; every innocent recipient of leaked rows stays above the
    named threshold (its evidence could be chance)."""
    got = {c.merchant_id: c for c in report.candidates}
    summary = {
        m: (c.verdict, c.false_attribution_probability, c.marks, c.canaries) for m, c in got.items()
    }
    assert named(report) == set(culprits), summary
    for merchant, candidate in got.items():
        if merchant in culprits:
            assert candidate.false_attribution_probability <= NAMED_THRESHOLD, summary
            assert candidate.deliveries, summary
            assert all(d.record_id == f"calls/{d.seq}" for d in candidate.deliveries)
        else:
            assert candidate.verdict != "named", summary
            assert candidate.false_attribution_probability > NAMED_THRESHOLD, summary


# -- the robustness list ----------------------------------------------------------------------


async def test_setup_overlaps_as_intended(leaks: Leaks) -> None:
    """The premise of every case below: rows received by one, two and all four merchants."""
    codes = {
        m: {r["credit_code"] for d in ds for r in leaks.answers[m][d]}
        for m, ds in DISTRICTS.items()
    }
    common = set.intersection(*codes.values())
    assert len(common) >= 30
    assert codes[A] - codes[B] - codes[C] - codes[D]
    assert (codes[A] & codes[B]) - codes[C]
    # Re-fetching a page gives the same marked values and canaries (no averaging attack).
    assert await _deliver(leaks.world, leaks.creds[A], COMMON) == leaks.answers[A][COMMON]


async def test_whole_answer_file_names_the_recipient(leaks: Leaks) -> None:
    report = await leaks.trace(leaks.sheet(A))
    assert_attributed(report, A)
    assert report.rows_matched == report.rows_total
    (a,) = [c for c in report.candidates if c.merchant_id == A]
    assert a.rows_exclusive > 0 and a.rows_received == report.rows_total
    assert report.candidates[0].merchant_id == A


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_ten_percent_subset(leaks: Leaks, seed: int) -> None:
    rng = Random(seed)
    report = await leaks.trace(subset(leaks.sheet(A), 0.10, rng))
    assert_attributed(report, A)


async def test_columns_dropped(leaks: Leaks) -> None:
    sheet = leaks.sheet(A)
    # Only the identifier and one marked field left.
    only_capital = drop_columns(sheet, set(FIELDS) - {"credit_code", "registered_capital"})
    assert_attributed(await leaks.trace(only_capital), A)
    # The marked number gone: the masked address still carries the mark.
    no_capital = drop_columns(sheet, {"registered_capital", "name", "status"})
    assert_attributed(await leaks.trace(no_capital), A)


async def test_columns_reordered(leaks: Leaks) -> None:
    report = await leaks.trace(reorder_columns(leaks.sheet(A), Random(5)))
    assert_attributed(report, A)


@pytest.mark.parametrize("titles", ["chinese", "nonsense"])
async def test_headers_renamed(leaks: Leaks, titles: str) -> None:
    sheet = leaks.sheet(A)
    renamed = rename_headers(sheet, CHINESE_TITLES if titles == "chinese" else None)
    assert not set(renamed.headers) & set(FIELDS)
    report = await leaks.trace(renamed)
    assert_attributed(report, A)
    assert {c.field for c in report.columns} >= {"credit_code"}
    assert all(c.how == "content" for c in report.columns if c.header not in FIELDS)


async def test_excel_round_trip(leaks: Leaks) -> None:
    sheet = leaks.sheet(A)
    xlsx, csv_path = excel_round_trip(sheet, leaks.tmp / "excel", "a")
    exported = read_leaked_file(csv_path)
    # Excel did change the values: trailing zeros and ISO dates are gone.
    capital = exported.headers.index("registered_capital")
    assert any(not row[capital].endswith("0") or "." not in row[capital] for row in exported.rows)
    assert "/" in exported.rows[0][exported.headers.index("established")]
    assert_attributed(await leaks.trace(exported), A)
    assert_attributed(await leaks.trace_file(xlsx), A)


async def test_excel_round_trip_of_a_subset_with_renamed_headers(leaks: Leaks) -> None:
    sheet = rename_headers(subset(leaks.sheet(A), 0.25, Random(11)), CHINESE_TITLES)
    _, csv_path = excel_round_trip(sheet, leaks.tmp / "excel", "a-subset")
    assert_attributed(await leaks.trace_file(csv_path), A)


async def test_values_reformatted(leaks: Leaks) -> None:
    sheet = reformat(leaks.sheet(A), Random(13))
    capital = sheet.column("registered_capital")
    assert any("," in v for v in capital) and any(v != v.strip() for v in sheet.column("name"))
    assert any("年" in v or "/" in v or "." in v for v in sheet.column("established"))
    assert_attributed(await leaks.trace(sheet), A)


async def test_combined_transformations(leaks: Leaks) -> None:
    rng = Random(17)
    sheet = leaks.sheet(A)
    sheet = drop_columns(subset(sheet, 0.3, rng), {"name", "industry"})
    sheet = rename_headers(reorder_columns(reformat(sheet, rng), rng))
    path = write_csv(sheet, leaks.tmp / "combined.csv", encoding="gb18030", delimiter=";")
    assert_attributed(await leaks.trace_file(path), A)


async def test_mix_of_two_recipients_names_both(leaks: Leaks) -> None:
    rng = Random(19)
    a_part = subset(leaks.sheet(A, "芙蓉区", "天心区"), 0.5, rng)
    b_part = subset(leaks.sheet(B, "开福区", COMMON), 0.5, rng)
    report = await leaks.trace(mix(a_part, b_part, rng=rng))
    assert_attributed(report, A, B)


async def test_rows_every_merchant_received_taken_from_a(leaks: Leaks) -> None:
    sheet = leaks.sheet(A, COMMON)
    report = await leaks.trace(sheet)
    assert_attributed(report, A)
    received = {c.merchant_id: c.rows_received for c in report.candidates}
    assert set(received) >= set(DISTRICTS)
    # Every merchant received every real row of the file; only A's marks single it out.
    assert all(c.rows_exclusive <= len(c.canaries) for c in report.candidates if c.merchant_id != A)


async def test_same_rows_unmarked_from_the_source_name_nobody(leaks: Leaks) -> None:
    source = [r for r in synthetic.generate("enterprises", ROWS, seed=7) if r["district"] == COMMON]
    rows = [
        {
            **{f: r[f] for f in FIELDS},
            "legal_rep_name": mask(MaskRule.NAME, r["legal_rep_name"]),
            "address": mask(MaskRule.ADDRESS, r["address"]),
            "registered_capital": format(Decimal(r["registered_capital"]), ".2f"),
            "established": str(r["established"]),
        }
        for r in source
    ]
    report = await leaks.trace(Sheet.from_answers(rows, FIELDS))
    assert report.rows_matched >= len(rows) - 1
    assert_attributed(report)
    assert {c.merchant_id for c in report.candidates} >= set(DISTRICTS)


async def test_file_with_no_traceable_rows_names_nobody_with_a_note(leaks: Leaks) -> None:
    strangers = [
        {f: str(r[f]) for f in FIELDS} for r in synthetic.generate("enterprises", ROWS + 40, seed=7)
    ][ROWS:]  # generated but never in the source, so never delivered
    report = await leaks.trace(Sheet.from_answers(strangers, FIELDS))
    assert_attributed(report)
    assert report.rows_matched == 0 and report.candidates == []
    assert report.notes


# -- through the file readers, the CLI and HTTP -------------------------------------------------


async def test_json_leak_file(leaks: Leaks) -> None:
    path = write_json(subset(leaks.sheet(A), 0.5, Random(23)), leaks.tmp / "a.json")
    assert_attributed(await leaks.trace_file(path), A)


def _dsgw(leaks: Leaks, *args: str) -> Any:
    settings = leaks.settings
    return CliRunner().invoke(
        cli,
        [
            "--data-dir",
            str(settings.data_dir),
            *(["--database-url", settings.database.url] if settings.database.url else []),
            *args,
        ],
        env={"DSGW_KEYSTORE_PASSPHRASE": PASSPHRASE},
        catch_exceptions=False,
    )


async def test_cli_names_the_recipient_and_writes_verifiable_bundles(leaks: Leaks) -> None:
    sheet = rename_headers(subset(leaks.sheet(A), 0.2, Random(29)), CHINESE_TITLES)
    path = write_csv(sheet, leaks.tmp / "cli-leak.csv", encoding="gb18030")
    bundles = leaks.tmp / "bundles"
    result = await asyncio.to_thread(
        _dsgw, leaks, "trace", str(path), "--json", "--bundles", str(bundles)
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    (a,) = [c for c in document["candidates"] if c["verdict"] == "named"]
    assert a["merchant_id"] == A
    for delivery in a["deliveries"]:
        bundle = json.loads(Path(delivery["bundle"]).read_text(encoding="utf-8"))
        check = verify_bundle(bundle)
        assert check.record is not None and check.record["merchant"] == A
    assert sorted(p.name for p in bundles.iterdir()) == sorted(
        f"calls-{d['seq']}.json" for d in a["deliveries"]
    )
    # The table for people says the same.
    result = await asyncio.to_thread(_dsgw, leaks, "trace", str(path), "--top", "2")
    assert result.exit_code == 0, result.output
    assert A in result.stdout and "named" in result.stdout


async def test_cli_exit_codes_for_nobody_and_bad_input(leaks: Leaks) -> None:
    strangers = [
        {f: str(r[f]) for f in FIELDS} for r in synthetic.generate("enterprises", ROWS + 10, seed=7)
    ][ROWS:]
    path = write_csv(Sheet.from_answers(strangers, FIELDS), leaks.tmp / "nobody.csv")
    result = await asyncio.to_thread(_dsgw, leaks, "trace", str(path))
    assert result.exit_code == 8, result.output
    assert "nobody is named" in result.stdout
    empty = leaks.tmp / "empty.csv"
    empty.write_text("credit_code,name\n", encoding="utf-8")
    result = await asyncio.to_thread(_dsgw, leaks, "trace", str(empty))
    assert result.exit_code == 2, result.output
    assert "no data rows" in result.output


async def test_http_trace_by_role(leaks: Leaks) -> None:
    world = leaks.world
    sheet = subset(leaks.sheet(A), 0.3, Random(31))
    body = write_csv(sheet, leaks.tmp / "http.csv").read_bytes()
    url = "/admin/trace"

    async def post(token: str, data: Any, **headers: str) -> aiohttp.ClientResponse:
        return await world.client.post(
            url, data=data, headers={"Authorization": f"Bearer {token}", **headers}
        )

    merchant_token = await world.token()
    resp = await post(merchant_token, body, **{"Content-Type": "text/csv"})
    assert resp.status == 401, await resp.text()
    operator = await world.staff_token(Role.OPERATOR)
    resp = await post(operator, body, **{"Content-Type": "text/csv"})
    assert resp.status == 403 and (await resp.json())["type"] == "/problems/forbidden"

    supervisor = await world.staff_token(Role.SUPERVISOR)
    resp = await post(supervisor, body, **{"Content-Type": "text/csv"})
    assert resp.status == 200, await resp.text()
    assert resp.headers["Dsgw-Record-Id"].startswith("calls/")
    document = await resp.json()
    (a,) = [c for c in document["candidates"] if c["verdict"] == "named"]
    assert a["merchant_id"] == A
    bundle_url = a["deliveries"][0]["bundle"]
    assert bundle_url == f"/admin/bundles/{a['deliveries'][0]['record_id']}"
    got = await world.client.get(bundle_url, headers={"Authorization": f"Bearer {supervisor}"})
    assert got.status == 200 and verify_bundle(await got.json()).record["merchant"] == A
    for candidate in document["candidates"]:
        if candidate["verdict"] != "named":
            assert all("bundle" not in d for d in candidate["deliveries"])

    # The same file as a form upload, restricted to the dataset; a larger body than the
    # default 64 KiB limit is accepted here, a body past trace_upload_max_bytes is not.
    form = aiohttp.FormData()
    form.add_field("file", body + b"\r\n" * 40_000, filename="leak.csv", content_type="text/csv")
    form.add_field("dataset", DATASET)
    resp = await post(supervisor, form)
    assert resp.status == 200, await resp.text()
    assert {
        c["merchant_id"] for c in (await resp.json())["candidates"] if c["verdict"] == "named"
    } == {A}
    xlsx, _ = excel_round_trip(sheet, leaks.tmp / "http", "upload")
    resp = await post(supervisor, xlsx.read_bytes(), **{"Content-Type": XLSX})
    assert resp.status == 200, await resp.text()
    assert {
        c["merchant_id"] for c in (await resp.json())["candidates"] if c["verdict"] == "named"
    } == {A}
    resp = await post(supervisor, b"x" * (UPLOAD_LIMIT + 1), **{"Content-Type": "text/csv"})
    assert resp.status == 413 and (await resp.json())["type"] == "/problems/payload-too-large"
    resp = await post(supervisor, b"", **{"Content-Type": "text/csv"})
    assert resp.status == 400 and "empty" in (await resp.json())["detail"]
    resp = await post(supervisor, body, **{"Content-Type": "image/png"})
    assert resp.status == 415
    for ctype, raw in [
        ("multipart/form-data", b"no boundary"),
        ("multipart/form-data; boundary=b", b"--b\r\nContent-Disposition: form-data; name=x"),
        ("multipart/form-data; boundary=b", b"--b--\r\n"),
    ]:
        resp = await post(supervisor, raw, **{"Content-Type": ctype})
        assert resp.status == 400, (ctype, raw, await resp.text())
        assert resp.headers["Dsgw-Record-Id"].startswith("calls/")
    resp = await world.client.post(
        url + "?dataset=no-such",
        data=body,
        headers={"Authorization": f"Bearer {supervisor}", "Content-Type": "text/csv"},
    )
    assert resp.status == 400 and "no-such" in (await resp.json())["detail"]
