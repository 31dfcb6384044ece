"""The synthetic data: valid identifiers, determinism, joinable datasets, small cells, and
files the connectors can read."""

from __future__ import annotations

import csv
import sqlite3
from collections import defaultdict
from pathlib import Path

import pytest

from connectors import synthetic, synthetic_vocabulary
from connectors.base import coerce_value
from gateway.identifiers import (
    is_valid_mobile,
    is_valid_resident_id,
    is_valid_uscc,
    is_valid_vin,
)

DATASETS = tuple(synthetic.SCHEMAS)


def test_metadata_is_consistent() -> None:
    assert set(synthetic.SUBJECT_FIELDS) == set(synthetic.KEY_FIELDS) == set(DATASETS)
    for name, schema in synthetic.SCHEMAS.items():
        assert synthetic.SUBJECT_FIELDS[name] in schema
        assert all(key in schema for key in synthetic.KEY_FIELDS[name])
        assert "district" in schema


@pytest.mark.parametrize("dataset", DATASETS)
def test_rows_match_schema_and_keys_are_unique(dataset: str) -> None:
    schema = synthetic.SCHEMAS[dataset]
    rows = list(synthetic.generate(dataset, 3000, seed=5))
    assert len(rows) == 3000
    for row in rows:
        assert list(row) == list(schema)  # column order
        for name, value in row.items():
            assert value is not None
            assert coerce_value(schema[name], value) == value
            assert type(coerce_value(schema[name], value)) is type(value)
        assert row["district"] in synthetic.DISTRICTS
    keys = {tuple(row[k] for k in synthetic.KEY_FIELDS[dataset]) for row in rows}
    assert len(keys) == len(rows)


def test_enterprise_identifiers_are_valid() -> None:
    for row in synthetic.generate("enterprises", 5000, seed=3):
        assert is_valid_uscc(str(row["credit_code"])), row
        assert is_valid_resident_id(str(row["legal_rep_id"])), row
        assert is_valid_mobile(str(row["legal_rep_mobile"])), row
        code = str(row["credit_code"])
        assert code.startswith("91") and code[2:8] == synthetic.DISTRICTS[str(row["district"])][0]
        assert str(row["name"]).endswith("公司")
        assert row["registered_capital"].as_tuple().exponent == -2  # type: ignore[union-attr]


def test_vehicle_and_person_identifiers_are_valid() -> None:
    for row in synthetic.generate("vehicles", 5000, seed=3):
        assert is_valid_vin(str(row["vin"])), row
        assert is_valid_resident_id(str(row["owner_id"])), row
        plate = str(row["plate"])
        assert plate.startswith("湘A") and len(plate) in (7, 8), plate
    for row in synthetic.generate("social_insurance", 5000, seed=3):
        assert is_valid_resident_id(str(row["person_id"])), row
        assert is_valid_uscc(str(row["employer_credit_code"])), row
        assert row["month"].day == 1  # type: ignore[union-attr]


def test_gender_digit_matches_name_pool() -> None:
    # The 17th digit is odd for men; names are drawn from the matching pool.
    male = set(synthetic_vocabulary.GIVEN_MALE)
    female = set(synthetic_vocabulary.GIVEN_FEMALE)
    for row in synthetic.generate("vehicles", 2000, seed=1):
        last = str(row["owner_name"])[-1]
        odd = int(str(row["owner_id"])[16]) % 2 == 1
        assert last in (male if odd else female)


@pytest.mark.parametrize("dataset", DATASETS)
def test_deterministic_by_seed(dataset: str) -> None:
    first = list(synthetic.generate(dataset, 500, seed=42))
    assert first == list(synthetic.generate(dataset, 500, seed=42))
    assert first != list(synthetic.generate(dataset, 500, seed=43))
    if dataset != "social_insurance":
        assert list(synthetic.generate(dataset, 200, seed=42)) == first[:200]
    else:
        shorter = synthetic.generate(dataset, 200, seed=42, employers=500 // 3)
        assert list(shorter) == first[:200]


def test_social_insurance_joins_enterprises() -> None:
    enterprises = {r["credit_code"]: r for r in synthetic.generate("enterprises", 400, seed=7)}
    insured = list(synthetic.generate("social_insurance", 1200, seed=7))
    employers = {r["employer_credit_code"] for r in insured}
    assert employers <= set(enterprises)
    assert len(employers) > 50
    for row in insured:
        # Contributions are paid in the employer's district.
        assert row["district"] == enterprises[row["employer_credit_code"]]["district"]
    assert synthetic.enterprise_identity(7, 0) == (
        next(iter(enterprises)),
        next(iter(enterprises.values()))["district"],
    )


def _subjects_by_district(dataset: str, rows: int) -> dict[str, int]:
    subjects: dict[str, set[object]] = defaultdict(set)
    for row in synthetic.generate(dataset, rows, seed=7):
        subjects[str(row["district"])].add(row[synthetic.SUBJECT_FIELDS[dataset]])
    return {d: len(s) for d, s in subjects.items()}


@pytest.mark.parametrize(
    ("dataset", "rows"), [("enterprises", 400), ("vehicles", 400), ("social_insurance", 1200)]
)
def test_small_and_large_district_cells(dataset: str, rows: int) -> None:
    counts = _subjects_by_district(dataset, rows)
    assert any(n < 10 for n in counts.values()), counts
    assert any(n >= 10 for n in counts.values()), counts


def test_large_generation_streams() -> None:
    for dataset in DATASETS:
        count = sum(1 for _ in synthetic.generate(dataset, 100_000, seed=9))
        assert count == 100_000


def test_generate_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown dataset"):
        synthetic.generate("households", 10)
    with pytest.raises(ValueError, match="negative"):
        synthetic.generate("enterprises", -1)
    with pytest.raises(ValueError, match="employers"):
        synthetic.generate("social_insurance", 10, employers=0)
    assert list(synthetic.generate("vehicles", 0)) == []


def test_write_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite3"
    synthetic.write_sqlite(path, {"enterprises": 300, "social_insurance": 2000}, seed=7, batch=128)
    synthetic.write_sqlite(path, {"enterprises": 300, "social_insurance": 2000}, seed=7)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT count(*) FROM enterprises").fetchone() == (300,)
        assert conn.execute("SELECT count(*) FROM social_insurance").fetchone() == (2000,)
        # Employers come from exactly the enterprises written, even at another ratio.
        orphans = conn.execute(
            "SELECT count(*) FROM social_insurance s LEFT JOIN enterprises e "
            "ON e.credit_code = s.employer_credit_code WHERE e.credit_code IS NULL"
        ).fetchone()
        assert orphans == (0,)
        indexes = {
            row[0]: row[1]
            for row in conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'")
        }
        assert "UNIQUE" in indexes["enterprises_credit_code"]
        assert {
            "enterprises_district",
            "social_insurance_record_id",
            "social_insurance_district",
            "social_insurance_person_id",
        } <= set(indexes)
        declared = {r[1]: r[2] for r in conn.execute("PRAGMA table_info(enterprises)")}
        assert declared["registered_capital"] == "NUMERIC"
        assert declared["established"] == "DATE"
        first = conn.execute(
            "SELECT credit_code, established FROM enterprises ORDER BY rowid LIMIT 1"
        ).fetchone()
    finally:
        conn.close()
    expected = next(synthetic.generate("enterprises", 1, seed=7))
    assert first == (expected["credit_code"], expected["established"].isoformat())  # type: ignore[union-attr]


def test_write_sqlite_refuses_unknown_dataset(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset"):
        synthetic.write_sqlite(tmp_path / "x.sqlite3", {"households": 1})


def test_write_csv(tmp_path: Path) -> None:
    path = tmp_path / "vehicles.csv"
    synthetic.write_csv(path, "vehicles", 250, seed=7)
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == list(synthetic.SCHEMAS["vehicles"])
    assert len(rows) == 251
    generated = list(synthetic.generate("vehicles", 250, seed=7))
    schema = synthetic.SCHEMAS["vehicles"]
    for text_row, row in zip(rows[1:], generated, strict=True):
        assert {
            k: coerce_value(schema[k], v) for k, v in zip(rows[0], text_row, strict=True)
        } == row
