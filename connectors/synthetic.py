"""Deterministic, realistic-looking, entirely fake source data for development and demos.

Three datasets of a Changsha (长沙) data space: the enterprise registry (``enterprises``),
motor-vehicle registrations (``vehicles``) and monthly social-insurance contributions
(``social_insurance``). Identifiers carry correct check characters (credit codes, resident
identity numbers, VINs) and mobile numbers have real prefixes, so the data exercises the
same validation paths as production data; no value belongs to a real person or company.

Determinism: the same ``(dataset, rows, seed)`` always yields the same rows, and a run with
fewer rows yields a prefix of a longer one (for ``social_insurance``, with the same
``employers``). Enterprise ``i``'s credit code and district depend only on ``(seed, i)``
(:func:`enterprise_identity`), which is how ``social_insurance`` draws its
``employer_credit_code`` from ``generate("enterprises", n, seed)`` without generating it:
every employer is one of the first ``employers`` enterprises of the same seed (default
``rows // 3``; :func:`write_sqlite` passes the number of enterprises it writes), so the two
tables join, and an insured person's ``district`` is their employer's.

Small cells on purpose: district weights make 望城区 rare (about 1 % of enterprises,
vehicles and insured persons), while the large districts have 12-18 % each. At a few
hundred rows, a ``GROUP BY district`` therefore yields groups both above and below 10
distinct subjects, which is what the gateway's small-cell suppression needs to be seen
working. At large sizes every district passes the threshold.

Speed: generation is a single streaming pass over precomputed tables and partial check
sums; on a modest CPU, CPython makes about 55k enterprise rows/s, 100k vehicle rows/s and
600k social-insurance rows/s, and memory does not grow with ``rows`` (a million-row
``write_sqlite`` stays near 60 MB). The vocabulary is in :mod:`connectors.synthetic_vocabulary`,
the precomputed check sums in :mod:`connectors.synthetic_checksums`.
"""

from __future__ import annotations

import csv
import datetime as dt
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from itertools import islice
from pathlib import Path
from random import Random

from connectors.base import FieldType, Row
from connectors.synthetic_checksums import (
    BIRTH_REGION_TABLE,
    ORG_CHECK,
    ORG_HI,
    ORG_LO,
    ORG_MULTIPLIER,
    RESIDENT_CHECK,
    RID_MONTH_DAY,
    RID_SEQ,
    RID_YEAR,
    USCC_HI,
    USCC_LO,
    USCC_PREFIX,
    USCC_VALUE,
    VIN_PLANTS,
    VIN_SERIAL_HI,
    VIN_SERIAL_LO,
    VIN_SERIAL_MULTIPLIER,
)
from connectors.synthetic_vocabulary import (
    BRAND_CHARS,
    BRAND_TABLE,
    BRANDS,
    CAPITAL_ROUND,
    DISTRICT_TABLE,
    DISTRICTS,
    ENTERPRISE_STATUS_TABLE,
    FORM_TABLE,
    GIVEN_ANY,
    GIVEN_FEMALE,
    GIVEN_MALE,
    INDUSTRIES,
    INDUSTRY_TABLE,
    INSURANCE_RATES,
    INSURANCE_TAKEN,
    KEY_FIELDS,
    MOBILE_PREFIXES,
    PLATE_LETTERS,
    SCHEMAS,
    STREETS,
    SUBJECT_FIELDS,
    SURNAME_TABLE,
    VEHICLE_STATUS_TABLE,
    VEHICLE_TYPE_TABLE,
    VIN_YEAR,
)
from gateway.identifiers import (
    USCC_ALPHABET,
    USCC_WEIGHTS,
    VIN_ALPHABET,
    VIN_VALUES,
    VIN_WEIGHTS,
)

__all__ = [
    "DISTRICTS",
    "KEY_FIELDS",
    "SCHEMAS",
    "SUBJECT_FIELDS",
    "enterprise_identity",
    "generate",
    "write_csv",
    "write_sqlite",
]

_CENT = Decimal("0.01")

_MASK = (1 << 64) - 1


def _mix(x: int) -> int:
    """SplitMix64 finaliser: a cheap, well-spread hash of a 64-bit integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _seed_key(seed: int, salt: int) -> int:
    return _mix((seed & _MASK) ^ salt)


def _dates(start: dt.date, end: dt.date) -> tuple[dt.date, ...]:
    first = start.toordinal()
    return tuple(dt.date.fromordinal(o) for o in range(first, end.toordinal() + 1))


def _draw_date(r: Callable[[], float], dates: Sequence[dt.date], skew: float) -> dt.date:
    """One of ``dates``; ``skew`` < 1 leans towards the end (more recent)."""
    return dates[int(len(dates) * r() ** skew)]


class _People:
    """Draws fake people: a name whose gender matches the sequence digit of a valid
    resident identity number born between ``year_from`` and ``year_to``."""

    def __init__(self, rng: Random, year_from: int, year_to: int) -> None:
        self._random = rng.random
        # Each birth date as its 8 ID digits and their share of the check sum.
        self._births = tuple(
            (
                f"{d.year}{d.month:02d}{d.day:02d}",
                RID_YEAR[d.year] + RID_MONTH_DAY[d.month * 100 + d.day],
            )
            for d in _dates(dt.date(year_from, 1, 1), dt.date(year_to, 12, 31))
        )

    def draw(self) -> tuple[str, str]:
        """``(name, resident_id)``."""
        r = self._random
        region, region_sum = BIRTH_REGION_TABLE[int(r() * len(BIRTH_REGION_TABLE))]
        birth, birth_sum = self._births[int(r() * len(self._births))]
        seq = int(r() * 1000)
        check = RESIDENT_CHECK[(region_sum + birth_sum + RID_SEQ[seq]) % 11]
        pool = GIVEN_MALE if seq % 2 else GIVEN_FEMALE  # odd sequence number: male
        given = pool[int(r() * len(pool))]
        if r() < 0.75:  # most given names have two characters
            second = GIVEN_ANY if r() < 0.3 else pool
            given = second[int(r() * len(second))] + given
        surname = SURNAME_TABLE[int(r() * len(SURNAME_TABLE))]
        return surname + given, f"{region}{birth}{seq:03d}{check}"


def _mobile(r: Callable[[], float]) -> str:
    return MOBILE_PREFIXES[int(r() * len(MOBILE_PREFIXES))] + f"{int(r() * 1e8):08d}"


def _identity(key: int, index: int) -> tuple[str, str]:
    district = DISTRICT_TABLE[_mix(key ^ index) % len(DISTRICT_TABLE)]
    region = DISTRICTS[district][0]
    # An affine map with a multiplier coprime to 10**8 is a bijection on 0..10**8-1.
    hi, lo = divmod((index * ORG_MULTIPLIER + key) % 10**8, 10_000)
    org_check = ORG_CHECK[(ORG_HI[hi] + ORG_LO[lo]) % 11]
    total = USCC_PREFIX[region] + USCC_HI[hi] + USCC_LO[lo]
    total += USCC_VALUE[org_check] * USCC_WEIGHTS[16]
    check = USCC_ALPHABET[-total % 31]
    return f"91{region}{hi:04d}{lo:04d}{org_check}{check}", district


_IDENTITY_SALT = 0xE17E


def enterprise_identity(seed: int, index: int) -> tuple[str, str]:
    """``(credit_code, district)`` of enterprise ``index`` (0-based) generated with ``seed``.

    A pure function of its arguments, so other datasets can refer to enterprises without
    generating them. Credit codes are unique for ``index < 10**8``; their organization-code
    part (characters 9-17) carries a correct GB 11714 check character too.
    """
    return _identity(_seed_key(seed, _IDENTITY_SALT), index)


def _enterprises(rows: int, seed: int) -> Iterator[Row]:
    if rows > 10**8:
        raise ValueError("enterprises: at most 10**8 rows have unique credit codes")
    rng = Random(f"dsgw-synthetic:enterprises:{seed}")  # noqa: S311 - fake data, not secrets
    r = rng.random
    people = _People(rng, 1955, 2000)
    founded = _dates(dt.date(1998, 1, 1), dt.date(2024, 12, 31))
    key = _seed_key(seed, _IDENTITY_SALT)
    brand_chars = len(BRAND_CHARS)
    for i in range(rows):
        credit_code, district = _identity(key, i)
        industry = INDUSTRY_TABLE[int(r() * len(INDUSTRY_TABLE))]
        words = INDUSTRIES[industry][1]
        pair = int(r() * brand_chars * brand_chars)
        brand = BRAND_CHARS[pair // brand_chars] + BRAND_CHARS[pair % brand_chars]
        place = r()
        if place < 0.6:
            prefix = "长沙"
        elif place < 0.85:
            prefix = "湖南"
        else:  # a district-level name: 长沙市岳麓区…, or 浏阳市… for a county-level city
            prefix = district if district[-1] in "县市" else "长沙市" + district
        rep_name, rep_id = people.draw()
        if r() < 0.55:  # round amounts are the most common registered capital
            capital = CAPITAL_ROUND[int(r() * len(CAPITAL_ROUND))]
        else:  # 10.00 .. about 316,000.00 万元, log-uniform
            capital = Decimal(int(10 ** (3 + r() * 4.5))).scaleb(-2)
        streets = STREETS[district]
        address = f"湖南省长沙市{district}{streets[int(r() * len(streets))]}{1 + int(r() * 899)}号"
        if r() < 0.4:
            address += f"{1 + int(r() * 20)}栋{1 + int(r() * 30)}{1 + int(r() * 20):02d}室"
        yield {
            "credit_code": credit_code,
            "name": prefix
            + brand
            + words[int(r() * len(words))]
            + FORM_TABLE[int(r() * len(FORM_TABLE))],
            "legal_rep_name": rep_name,
            "legal_rep_id": rep_id,
            "legal_rep_mobile": _mobile(r),
            "registered_capital": capital,
            "established": _draw_date(r, founded, 0.6),
            "district": district,
            "industry": industry,
            "status": ENTERPRISE_STATUS_TABLE[int(r() * len(ENTERPRISE_STATUS_TABLE))],
            "address": address,
        }


def _models() -> dict[str, tuple[tuple[str, int], ...]]:
    """Per brand, a few vehicle-descriptor sections (VIN characters 4-8, the model) with
    the weighted sum of the world manufacturer code and those characters."""
    rng = Random("dsgw-synthetic:vin-models")  # noqa: S311 - fake data, not secrets
    out: dict[str, tuple[tuple[str, int], ...]] = {}
    for brand, (wmi, _nev, _w) in BRANDS.items():
        models = []
        for _ in range(6):
            vds = "".join(rng.choice(VIN_ALPHABET) for _ in range(5))
            head = wmi + vds
            models.append(
                (head, sum(VIN_VALUES[c] * w for c, w in zip(head, VIN_WEIGHTS, strict=False)))
            )
        out[brand] = tuple(models)
    return out


_MODELS = _models()


def _plate(r: Callable[[], float], new_energy: bool) -> str:
    """A Changsha (湘A) plate: new-energy D (battery) or F (hybrid) and five digits, or
    five characters with up to two letters."""
    if new_energy:
        return ("湘AD" if r() < 0.8 else "湘AF") + f"{int(r() * 100_000):05d}"
    number = f"{int(r() * 100_000):05d}"
    shape = r()
    if shape < 0.35:
        return "湘A" + number
    letter = PLATE_LETTERS[int(r() * len(PLATE_LETTERS))]
    if shape < 0.7:
        return "湘A" + letter + number[1:]
    if shape < 0.85:
        return "湘A" + number[1:] + letter
    return "湘A" + letter + PLATE_LETTERS[int(r() * len(PLATE_LETTERS))] + number[2:]


def _vehicles(rows: int, seed: int) -> Iterator[Row]:
    if rows > 10**6 * len(VIN_PLANTS):
        raise ValueError(f"vehicles: at most {10**6 * len(VIN_PLANTS)} rows have unique VINs")
    rng = Random(f"dsgw-synthetic:vehicles:{seed}")  # noqa: S311 - fake data, not secrets
    r = rng.random
    people = _People(rng, 1955, 2004)
    offset = _seed_key(seed, 0x7E1) % 10**6
    registrations = _dates(dt.date(2008, 1, 1), dt.date(2024, 12, 31))
    for i in range(rows):
        brand = BRAND_TABLE[int(r() * len(BRAND_TABLE))]
        nev_share = BRANDS[brand][1]
        models = _MODELS[brand]
        head, head_sum = models[int(r() * len(models))]
        registered = _draw_date(r, registrations, 0.7)
        year = VIN_YEAR[registered.year - (r() < 0.2)]  # model year: this or last year
        # Serial and plant encode i, so VINs are unique whatever the random parts are.
        serial = (i % 10**6 * VIN_SERIAL_MULTIPLIER + offset) % 10**6
        plant = VIN_PLANTS[i // 10**6]
        total = head_sum + VIN_VALUES[year] * 9 + VIN_VALUES[plant] * 8
        total += VIN_SERIAL_HI[serial // 1000] + VIN_SERIAL_LO[serial % 1000]
        check = total % 11
        vehicle_type = VEHICLE_TYPE_TABLE[int(r() * len(VEHICLE_TYPE_TABLE))]
        new_energy = vehicle_type[:2] == "小型" and r() < nev_share
        owner_name, owner_id = people.draw()
        yield {
            "plate": _plate(r, new_energy),
            "vin": f"{head}{'X' if check == 10 else check}{year}{plant}{serial:06d}",
            "owner_name": owner_name,
            "owner_id": owner_id,
            "vehicle_type": vehicle_type,
            "brand": brand,
            "registered": registered,
            "district": DISTRICT_TABLE[int(r() * len(DISTRICT_TABLE))],
            "status": VEHICLE_STATUS_TABLE[int(r() * len(VEHICLE_STATUS_TABLE))],
        }


_MONTHS = tuple(dt.date(2023 + m // 12, m % 12 + 1, 1) for m in range(24))


def _social_insurance(rows: int, seed: int, employers: int) -> Iterator[Row]:
    """Insured people, each with one employer, one to four consecutive months (2023-2024)
    and the insurance types their employer pays; one row per person, month and type."""
    rng = Random(f"dsgw-synthetic:social_insurance:{seed}")  # noqa: S311 - fake data
    r = rng.random
    people = _People(rng, 1962, 2004)
    key = _seed_key(seed, _IDENTITY_SALT)
    record_id = 0
    while record_id < rows:
        name, person_id = people.draw()
        employer, district = _identity(key, int(r() * employers))
        base = Decimal(400_000 + int(r() * 1_800_000)).scaleb(-2)  # 4,000-22,000 yuan
        amounts = [
            (kind, (base * rate).quantize(_CENT))
            for kind, rate in INSURANCE_RATES.items()
            if r() < INSURANCE_TAKEN[kind]
        ]
        start = int(r() * len(_MONTHS))
        for month in _MONTHS[start : start + 1 + int(r() * 4)]:
            for kind, amount in amounts:
                record_id += 1
                yield {
                    "record_id": record_id,
                    "person_id": person_id,
                    "person_name": name,
                    "employer_credit_code": employer,
                    "month": month,
                    "insurance_type": kind,
                    "base": base,
                    "amount": amount,
                    "district": district,
                }


def generate(
    dataset: str, rows: int, seed: int = 0, *, employers: int | None = None
) -> Iterator[Row]:
    """Stream ``rows`` rows of ``dataset`` (a key of :data:`SCHEMAS`), in column order.

    ``employers`` (``social_insurance`` only) is how many enterprises of the same seed the
    employer codes are drawn from; default ``max(1, rows // 3)``.
    Raises ``ValueError`` for an unknown dataset or a bad count.
    """
    if dataset not in SCHEMAS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(SCHEMAS)}")
    if rows < 0:
        raise ValueError("rows must not be negative")
    if dataset == "enterprises":
        return _enterprises(rows, seed)
    if dataset == "vehicles":
        return _vehicles(rows, seed)
    pool = max(1, rows // 3) if employers is None else employers
    if not 1 <= pool <= 10**8:
        raise ValueError("employers must be between 1 and 10**8")
    return islice(_social_insurance(rows, seed, pool), rows)


_SQLITE_TYPES: dict[FieldType, str] = {
    "string": "TEXT",
    "integer": "INTEGER",
    "decimal": "NUMERIC",
    "date": "DATE",
    "boolean": "BOOLEAN",
}


def _decimal_text(value: object) -> str:
    assert isinstance(value, Decimal)
    return format(value, "f")


def _date_text(value: object) -> str:
    assert isinstance(value, dt.date)
    return value.isoformat()


def _bool_text(value: object) -> str:
    return "true" if value else "false"


def _rows_as(
    dataset: str, source: Iterator[Row], converters: Mapping[FieldType, Callable[[object], object]]
) -> Iterator[list[object]]:
    """Rows as lists, with values of the types in ``converters`` converted (nulls kept).
    Only the few columns that need it are touched, which keeps writing fast."""
    special = [
        (i, converters[t]) for i, t in enumerate(SCHEMAS[dataset].values()) if t in converters
    ]
    for row in source:
        values: list[object] = list(row.values())
        for i, convert in special:
            if values[i] is not None:
                values[i] = convert(values[i])
        yield values


#: SQLite adapts str, int and bool (as 0/1) itself.
_SQLITE_CONVERT: dict[FieldType, Callable[[object], object]] = {
    "decimal": _decimal_text,
    "date": _date_text,
}


#: csv writes None as an empty cell and str/int as they are.
_CSV_CONVERT: dict[FieldType, Callable[[object], object]] = {
    "decimal": _decimal_text,
    "date": _date_text,
    "boolean": _bool_text,
}


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def write_sqlite(
    path: Path, datasets: Mapping[str, int], seed: int = 0, *, batch: int = 10_000
) -> None:
    """Write each ``{dataset: rows}`` to a table of that name in the SQLite file ``path``.

    Existing tables of those names are replaced. Columns get the declared types (decimals
    as ``NUMERIC``, dates as ISO text); indexes cover the key (unique), ``district`` and the
    subject field. Each batch of rows is one transaction. When ``enterprises`` is among the
    datasets, ``social_insurance`` employers are drawn from exactly those enterprises.
    """
    unknown = [name for name in datasets if name not in SCHEMAS]
    if unknown:
        raise ValueError(f"unknown dataset(s) {unknown}; choose from {', '.join(SCHEMAS)}")
    conn = sqlite3.connect(path)
    try:
        for name, rows in datasets.items():
            schema = SCHEMAS[name]
            table = _quote(name)
            columns = ", ".join(f"{_quote(f)} {_SQLITE_TYPES[t]}" for f, t in schema.items())
            with conn:
                conn.execute(f"DROP TABLE IF EXISTS {table}")
                conn.execute(f"CREATE TABLE {table} ({columns})")
            insert = f"INSERT INTO {table} VALUES ({', '.join('?' for _ in schema)})"  # noqa: S608
            employers = datasets.get("enterprises") if name == "social_insurance" else None
            source = generate(name, rows, seed, employers=employers or None)
            values = _rows_as(name, source, _SQLITE_CONVERT)
            while chunk := list(islice(values, batch)):
                with conn:
                    conn.executemany(insert, chunk)
            indexed: Sequence[str] = (*KEY_FIELDS[name], "district", SUBJECT_FIELDS[name])
            with conn:
                for i, field in enumerate(dict.fromkeys(indexed)):
                    unique = "UNIQUE " if i == 0 and len(KEY_FIELDS[name]) == 1 else ""
                    conn.execute(
                        f"CREATE {unique}INDEX {_quote(f'{name}_{field}')} "
                        f"ON {table} ({_quote(field)})"
                    )
    finally:
        conn.close()


def write_csv(path: Path, dataset: str, rows: int, seed: int = 0) -> None:
    """Write ``rows`` rows of ``dataset`` to a UTF-8 CSV file with a header row; empty
    cells are nulls, decimals are plain notation, dates ISO."""
    source = generate(dataset, rows, seed)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(SCHEMAS[dataset])
        writer.writerows(_rows_as(dataset, source, _CSV_CONVERT))
