"""Steps 1 and 2 of a trace: find the identifying columns, then the deliveries of each row.

Matching needs only the keyed index (``trace_rows``) and the ``calls`` records; it says who
*could* have leaked a row. What says who *did* is in :mod:`gateway.tracing.evidence`.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.catalog.models import Dataset
from gateway.clock import utc
from gateway.dataplane.connectors import ConnectorRegistry
from gateway.db.schema import LogEntryRow, TraceRow
from gateway.governance.policy import PolicyStore
from gateway.tracing.index import identity_hash, row_hash
from gateway.tracing.marks import (
    Carrier,
    DigitCarrier,
    read_bit,
)
from gateway.tracing.normalize import (
    normalize,
    normalize_variants,
    parse_number,
)

__all__ = [
    "CHUNK",
    "MIN_HIT_RATE",
    "SAMPLE_SIZE",
    "Columns",
    "Delivery",
    "LeakMatcher",
    "MatchedRow",
    "Progress",
    "Tally",
    "dataset_by_headers",
    "header_mapping",
]

Progress = Callable[[str, int, int], None]

CHUNK: Final = 500

SAMPLE_SIZE: Final = 64


# A column is identifying for a field when at least this share of its sampled values hit.
MIN_HIT_RATE: Final = 0.05


@dataclass(frozen=True, slots=True)
class Delivery:
    seq: int
    merchant_id: str
    scenario_id: str | None
    recorded_at: Any
    fields: frozenset[str]
    marked: bool
    canaries: frozenset[str]


@dataclass(slots=True)
class MatchedRow:
    """One leaked row's matches: per delivery seq, the identifying values (normalised
    variant, by field) that hit it."""

    hits: dict[int, dict[str, str]] = field(default_factory=dict)


@dataclass(slots=True)
class Tally:
    rows: int = 0
    exclusive: int = 0
    log_innocence: float = 0.0
    deliveries: Counter[int] = field(default_factory=Counter)
    canaries: set[str] = field(default_factory=set)


def _sample(values: Iterable[str]) -> list[str]:
    """Up to SAMPLE_SIZE distinct non-empty values, spread over the column."""
    distinct = [v for v in dict.fromkeys(values) if v]
    if len(distinct) <= SAMPLE_SIZE:
        return distinct
    step = len(distinct) / SAMPLE_SIZE
    return [distinct[int(i * step)] for i in range(SAMPLE_SIZE)]


def _carries(carrier: Carrier, cell: str) -> bool:
    if read_bit(carrier, cell) is None:
        return False
    if isinstance(carrier, DigitCarrier):
        number = parse_number(cell)
        exponent = number.as_tuple().exponent if number is not None else 0
        return isinstance(exponent, int) and -exponent <= carrier.places
    return True


class Columns:
    """The leaked table by column, normalising each distinct value once."""

    def __init__(self, rows: Sequence[tuple[str, ...]], width: int) -> None:
        self._rows = rows
        self.width = width
        self._cache: dict[str, str] = {}
        self._normalized: dict[int, list[str]] = {}
        self._readable: dict[tuple[int, Carrier], float] = {}

    def normalized(self, j: int) -> list[str]:
        column = self._normalized.get(j)
        if column is None:
            cache = self._cache
            column = []
            for row in self._rows:
                raw = row[j]
                value = cache.get(raw)
                if value is None:
                    value = cache[raw] = normalize(raw)
                column.append(value)
            self._normalized[j] = column
        return column

    def bits(self, j: int, carrier: Carrier, rows: Sequence[int]) -> tuple[int, int]:
        """How many of ``rows`` read bit 0 and bit 1 in column ``j``."""
        counts = [0, 0]
        for i in rows:
            bit = read_bit(carrier, self._rows[i][j])
            if bit is not None:
                counts[bit] += 1
        return counts[0], counts[1]

    def places(self, j: int, rows: Sequence[int]) -> int | None:
        """The most decimal places any number of ``rows`` shows in column ``j`` (None if
        none is a number): fewer than a digit carrier's means the column was rounded."""
        most: int | None = None
        for i in rows:
            number = parse_number(self._rows[i][j])
            if number is None:
                continue
            exponent = number.as_tuple().exponent
            if isinstance(exponent, int):
                most = max(most or 0, -exponent)
        return most

    def readable(self, j: int, carrier: Carrier) -> float:
        """Share of the column's non-empty cells that can carry ``carrier``'s bit."""
        key = (j, carrier)
        if key not in self._readable:
            cells = [row[j] for row in self._rows if row[j].strip()]
            ok = sum(1 for cell in cells if _carries(carrier, cell))
            self._readable[key] = ok / len(cells) if cells else 0.0
        return self._readable[key]


def _header_key(text: str) -> str:
    return re.sub(r"[\s_\-]+", "", unicodedata.normalize("NFKC", text)).lower()


def header_mapping(dataset: Dataset, headers: Sequence[str]) -> dict[str, int]:
    """Fields whose name a header spells (ignoring case, spaces, ``_`` and ``-``)."""
    by_key = {_header_key(name): name for name in dataset.field_names}
    out: dict[str, int] = {}
    for j, header in enumerate(headers):
        name = by_key.get(_header_key(header))
        if name is not None and name not in out:
            out[name] = j
    return out


def dataset_by_headers(datasets: Sequence[Dataset], headers: Sequence[str]) -> Dataset | None:
    keys = {_header_key(h) for h in headers}
    scored = [(sum(_header_key(n) in keys for n in d.field_names), d.id, d) for d in datasets]
    best = max(scored, default=None, key=lambda item: (item[0], item[1]))
    return best[2] if best is not None and best[0] > 0 else None


class LeakMatcher:
    """The trace state and its matching steps: columns by content, rows to deliveries."""

    def __init__(
        self,
        engine: AsyncEngine,
        policy: PolicyStore,
        connectors: ConnectorRegistry,
        *,
        trace_key: bytes,
        mark_key: bytes,
        p_guess: float = 0.5,
        named_threshold: float = 1e-6,
    ) -> None:
        self._engine = engine
        self._policy = policy
        self._connectors = connectors
        self._trace_key = trace_key
        self._mark_key = mark_key
        self._p_guess = p_guess
        self._threshold = named_threshold

    async def _identifying_columns(
        self, datasets: Sequence[Dataset], columns: Columns, tell: Progress
    ) -> dict[str, list[tuple[str, int, int, float]]]:
        """Per dataset: (field, column, hits, hit rate) of each identifying field's best
        column."""
        probes: dict[int, list[tuple[str, str, int, str]]] = defaultdict(list)
        samples: dict[int, list[str]] = {}
        for j in range(columns.width):
            samples[j] = _sample(columns.normalized(j))
            for dataset in datasets:
                for name in dataset.identifying_fields:
                    for value in samples[j]:
                        for variant in normalize_variants(value):
                            h = identity_hash(self._trace_key, dataset.id, name, variant)
                            probes[h].append((dataset.id, name, j, value))
            tell("columns", j + 1, columns.width)
        present = await self._present(probes)
        hit_values: dict[tuple[str, str, int], set[str]] = defaultdict(set)
        for h in present:
            for dataset_id, name, j, value in probes[h]:
                hit_values[(dataset_id, name, j)].add(value)
        best: dict[tuple[str, str], tuple[int, int, float]] = {}
        for (dataset_id, name, j), values in hit_values.items():
            hits = len(values)
            rate = hits / max(1, len(samples[j]))
            if hits < max(1, math.ceil(MIN_HIT_RATE * len(samples[j]))):
                continue
            current = best.get((dataset_id, name))
            if current is None or (hits, -j) > (current[1], -current[0]):
                best[(dataset_id, name)] = (j, hits, rate)
        out: dict[str, list[tuple[str, int, int, float]]] = defaultdict(list)
        for (dataset_id, name), (j, hits, rate) in sorted(best.items()):
            out[dataset_id].append((name, j, hits, rate))
        return out

    async def _present(self, hashes: Iterable[int]) -> set[int]:
        return set(await self._lookup(hashes))

    async def _lookup(
        self, hashes: Iterable[int], tell: Progress | None = None
    ) -> dict[int, list[int]]:
        """``trace_rows`` entries for ``hashes``: hash -> delivery seqs. ``tell`` hears
        ("lookup", hashes done, hashes in all) after each chunk."""
        items = sorted(set(hashes))
        out: dict[int, list[int]] = defaultdict(list)
        async with self._engine.connect() as conn:
            for start in range(0, len(items), CHUNK):
                chunk = items[start : start + CHUNK]
                result = await conn.execute(
                    select(TraceRow.hash, TraceRow.seq).where(TraceRow.hash.in_(chunk))
                )
                for h, seq in result:
                    out[int(h)].append(int(seq))
                if tell is not None:
                    tell("lookup", min(start + CHUNK, len(items)), len(items))
        return out

    async def _match_rows(
        self,
        dataset: Dataset,
        rows: Sequence[tuple[str, ...]],
        columns: Columns,
        id_columns: dict[str, tuple[int, float]],
        mapping: dict[str, int],
        tell: Progress,
    ) -> list[MatchedRow]:
        wanted: dict[int, list[tuple[int, str | None, str]]] = defaultdict(list)
        for name, (j, _rate) in id_columns.items():
            for i, value in enumerate(columns.normalized(j)):
                for variant in normalize_variants(value) if value else ():
                    h = identity_hash(self._trace_key, dataset.id, name, variant)
                    wanted[h].append((i, name, variant))
        # A file that kept exactly the delivered fields under their names also matches whole
        # rows, which finds rows whose identifiers were delivered masked.
        if mapping:
            for i, row in enumerate(rows):
                cells = {name: row[j] for name, j in mapping.items()}
                wanted[row_hash(self._trace_key, dataset.id, cells)].append((i, None, ""))
        tell("rows", 0, len(rows))
        total = len(rows)
        found = await self._lookup(
            wanted, lambda _stage, done, hashes: tell("rows", done * total // hashes, total)
        )
        matches = [MatchedRow() for _ in rows]
        for h, seqs in found.items():
            for i, field_name, variant in wanted[h]:
                for seq in seqs:
                    hit = matches[i].hits.setdefault(seq, {})
                    if field_name is not None:
                        hit.setdefault(field_name, variant)
        tell("rows", len(rows), len(rows))
        return matches

    async def _deliveries(
        self, dataset: Dataset, seqs: Sequence[int], tell: Progress
    ) -> dict[int, Delivery]:
        """The allowed ``calls`` records of ``seqs`` that delivered ``dataset``."""
        out: dict[int, Delivery] = {}
        async with self._engine.connect() as conn:
            for start in range(0, len(seqs), CHUNK):
                chunk = seqs[start : start + CHUNK]
                result = await conn.execute(
                    select(LogEntryRow.seq, LogEntryRow.recorded_at, LogEntryRow.payload).where(
                        LogEntryRow.stream == "calls", LogEntryRow.seq.in_(chunk)
                    )
                )
                for seq, recorded_at, payload in result:
                    body = json.loads(payload)
                    if body.get("dataset") != dataset.id or body.get("decision") != "allow":
                        continue
                    merchant = body.get("merchant")
                    if not isinstance(merchant, str):
                        continue
                    out[int(seq)] = Delivery(
                        seq=int(seq),
                        merchant_id=merchant,
                        scenario_id=body.get("scenario"),
                        recorded_at=utc(recorded_at),
                        fields=frozenset(body.get("fields") or ()),
                        marked=bool(body.get("mark_id")),
                        canaries=frozenset(body.get("canaries") or ()),
                    )
                tell("deliveries", min(start + CHUNK, len(seqs)), len(seqs))
        return out
