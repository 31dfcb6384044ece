"""The trace: from a leaked table to ranked candidate recipients with evidence.

1. **Columns.** Identifying columns are found by content, not by header (headers get
   renamed): a sample of each column's normalised values is hashed as each identifying
   field of each dataset and looked up in ``trace_rows``. A keyed 63-bit hash does not match
   by accident, so hits mean delivered values. Headers equal to a field name are used as
   hints for the other columns.
2. **Rows → deliveries.** Every leaked row's identity hashes name the deliveries (``calls``
   records) that contained it, hence its recipients R_t.
3. **Evidence per recipient.** Canary ids found (conclusive), the keyed-mark test over the
   rows the recipient received (a binomial p-value, Bonferroni-corrected for the candidates
   and column choices tried), and a guilt score in the spirit of Papadimitriou and
   Garcia-Molina: ``P(G_r) = 1 - prod_t (1 - (1 - p_guess) / |R_t|)``.
4. **Verdict.** ``named`` iff the false-attribution probability (canary or mark evidence) is
   at most the threshold. Receiving the rows alone never names anyone: public data reaches
   several recipients, and a row match says only who *could* have leaked it.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.base import Condition, Row, RowQuery, coerce_value
from gateway.catalog.models import Dataset
from gateway.clock import utc
from gateway.dataplane.connectors import ConnectorRegistry
from gateway.db.schema import LogEntryRow, TraceRow
from gateway.errors import DsgwError, NotFoundError, ValidationError
from gateway.governance.policy import PolicyStore
from gateway.tracing.index import cell_text, identity_hash, row_hash
from gateway.tracing.marks import (
    Carrier,
    DigitCarrier,
    binomial_tail,
    carriers,
    embed,
    mark_bits,
    read_bit,
    recipient_key,
)
from gateway.tracing.models import (
    Candidate,
    ColumnMatch,
    DeliveryRef,
    LeakedTable,
    MarkEvidence,
    MarkRows,
    TraceReport,
    Verdict,
)
from gateway.tracing.normalize import (
    SIGNIFICANT_DIGITS,
    normalize,
    normalize_variants,
    parse_number,
)

__all__ = ["LeakTracer", "Progress"]

Progress = Callable[[str, int, int], None]

CHUNK: Final = 500
SAMPLE_SIZE: Final = 64
# A column is identifying for a field when at least this share of its sampled values hit.
MIN_HIT_RATE: Final = 0.05
# A column may hold a mark carrier when at least this share of its cells can be read.
MIN_READABLE: Final = 0.5
# Mark evidence against a candidate: enough cells to name it had it been the source, and a
# match rate this far below 1.
NOT_INDICATED_RATE: Final = 0.75
# A mark column whose minority bit is rarer than this reads as erased.
ERASED_SHARE: Final = 0.1
HASH_SPACE: Final = 2.0**63
# Source rows asked for per 14-digit prefix of a long identifier a spreadsheet cut.
PREFIX_ROWS: Final = 16
# The row sets each candidate's marks are tested on (MarkEvidence.rows).
MARK_ROWS: Final[tuple[MarkRows, ...]] = ("received", "exclusive", "unexplained")
# The smallest false-attribution probability reported: a float underflows to 0.0 past
# about a thousand matching mark cells, and 0.0 would read as certainty.
FAP_FLOOR: Final = 1e-300


@dataclass(frozen=True, slots=True)
class _Delivery:
    seq: int
    merchant_id: str
    scenario_id: str | None
    recorded_at: Any
    fields: frozenset[str]
    marked: bool
    canaries: frozenset[str]


@dataclass(slots=True)
class _Row:
    """One leaked row's matches: per delivery seq, the identifying values (normalised
    variant, by field) that hit it."""

    hits: dict[int, dict[str, str]] = field(default_factory=dict)


@dataclass(slots=True)
class _Tally:
    rows: int = 0
    exclusive: int = 0
    log_innocence: float = 0.0
    deliveries: Counter[int] = field(default_factory=Counter)
    canaries: set[str] = field(default_factory=set)


def _header_key(text: str) -> str:
    return re.sub(r"[\s_\-]+", "", unicodedata.normalize("NFKC", text)).lower()


def _sample(values: Iterable[str]) -> list[str]:
    """Up to SAMPLE_SIZE distinct non-empty values, spread over the column."""
    distinct = [v for v in dict.fromkeys(values) if v]
    if len(distinct) <= SAMPLE_SIZE:
        return distinct
    step = len(distinct) / SAMPLE_SIZE
    return [distinct[int(i * step)] for i in range(SAMPLE_SIZE)]


class LeakTracer:
    """Traces leaked tables against the delivery index, marks and canaries."""

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

    async def trace(
        self,
        table: LeakedTable,
        *,
        dataset_id: str | None = None,
        progress: Progress | None = None,
    ) -> TraceReport:
        """Rank the recipients of ``table``'s rows, with evidence.

        Raises :class:`NotFoundError` for an unknown ``dataset_id`` and
        :class:`ValidationError` for a table without columns. Reads only."""
        tell = progress or (lambda _stage, _done, _total: None)
        width = len(table.headers)
        if width == 0:
            raise ValidationError(f"{table.source or 'leaked table'}: no columns to trace")
        rows = [tuple((list(r) + [""] * width)[:width]) for r in table.rows]
        snapshot = await self._policy.current()
        if dataset_id is not None:
            if dataset_id not in snapshot.datasets:
                raise NotFoundError(f"dataset {dataset_id} is not in the catalog")
            datasets = [snapshot.datasets[dataset_id]]
        else:
            datasets = sorted(snapshot.datasets.values(), key=lambda d: d.id)
        notes: list[str] = []
        columns = _Columns(rows, width)

        # 1. Identifying columns, by content.
        tell("columns", 0, width)
        found = await self._identifying_columns(datasets, columns, tell)
        scores = {d: sum(hits for _f, _j, hits, _rate in found[d]) for d in found}
        dataset: Dataset | None
        if dataset_id is not None:
            dataset = datasets[0]
        elif scores:
            dataset = snapshot.datasets[max(scores, key=lambda d: (scores[d], d))]
        else:
            dataset = _dataset_by_headers(datasets, table.headers)
        if dataset is None:
            notes.append(
                "no identifying column found: no column's values were delivered as an "
                "identifying field of any dataset, and no header names a dataset's fields"
            )
            return _empty_report(table, len(rows), notes)
        others = sorted(d for d in scores if d != dataset.id)
        if others:
            notes.append(
                "values of other datasets were found too ("
                + ", ".join(others)
                + "); trace them separately with their dataset id"
            )
        id_columns = {f: (j, rate) for f, j, _hits, rate in found.get(dataset.id, [])}
        id_cols = {j for j, _rate in id_columns.values()}
        named = _header_mapping(dataset, table.headers)
        mapping = {f: j for f, j in named.items() if j not in id_cols and f not in id_columns}
        column_matches = [
            ColumnMatch(table.headers[j], f, "content", rate) for f, (j, rate) in id_columns.items()
        ] + [ColumnMatch(table.headers[j], f, "header") for f, j in mapping.items()]
        if not id_columns:
            notes.append(
                f"no identifying column of {dataset.id} found "
                f"({', '.join(dataset.identifying_fields)} delivered in clear): rows can only "
                "be matched whole, by their exact delivered fields"
            )

        # 2. Rows -> deliveries.
        whole = named if len(named) == width else {}
        matches = await self._match_rows(dataset, rows, columns, id_columns, whole, tell)
        seqs = sorted({s for m in matches for s in m.hits})
        deliveries = await self._deliveries(dataset, seqs, tell)
        for m in matches:
            for seq in [s for s in m.hits if s not in deliveries]:
                del m.hits[seq]
        recipients = [frozenset(deliveries[s].merchant_id for s in m.hits) for m in matches]
        rows_matched = sum(1 for r in recipients if r)
        if not rows_matched:
            notes.append("no leaked row was found in any delivery")

        # 3. Evidence per recipient.
        tallies: dict[str, _Tally] = defaultdict(_Tally)
        # A leaked row came from one of its recipients with probability 1 - p_guess, each
        # of them equally likely; log P(r not guilty) sums over the rows r received.
        from_recipients = 1.0 - self._p_guess
        for m, received_by in zip(matches, recipients, strict=True):
            for merchant in received_by:
                tally = tallies[merchant]
                tally.rows += 1
                tally.exclusive += int(len(received_by) == 1)
                tally.log_innocence += math.log1p(-from_recipients / len(received_by))
            for seq in m.hits:
                tallies[deliveries[seq].merchant_id].deliveries[seq] += 1
        canary_checks = await self._canaries(dataset, matches, deliveries, tallies, notes)
        marks, hypotheses = await self._marks(
            dataset,
            rows,
            columns,
            matches,
            deliveries,
            recipients,
            id_columns,
            mapping,
            tallies,
            notes,
        )
        for name, j in hypotheses.chosen.items():
            if name not in mapping:
                column_matches.append(ColumnMatch(table.headers[j], name, "content"))
        tell("evidence", len(tallies), len(tallies))

        candidates = [
            self._candidate(
                merchant, tally, marks.get(merchant), hypotheses.count, canary_checks, deliveries
            )
            for merchant, tally in tallies.items()
        ]
        # One more round: the rows a named recipient received are explained by it; test
        # every other candidate on the rest. Who is named was decided without the other
        # candidates' bits, so each of these tests stays exact; it is the third row set
        # counted in the hypotheses.
        explained = frozenset(c.merchant_id for c in candidates if c.verdict == "named")
        if explained and hypotheses.retest is not None:
            for index, candidate in enumerate(candidates):
                if candidate.verdict == "named":
                    continue
                again = hypotheses.retest(candidate.merchant_id, explained)
                before = marks.get(candidate.merchant_id)
                if again is None or (before is not None and again.p_value >= before.p_value):
                    continue
                candidates[index] = self._candidate(
                    candidate.merchant_id,
                    tallies[candidate.merchant_id],
                    again,
                    hypotheses.count,
                    canary_checks,
                    deliveries,
                )
        order = {"named": 0, "possible": 1, "not-indicated": 2}
        candidates.sort(
            key=lambda c: (
                order[c.verdict],
                c.false_attribution_probability,
                -c.guilt,
                -c.rows_received,
                c.merchant_id,
            )
        )
        return TraceReport(
            dataset_id=dataset.id,
            columns=sorted(column_matches, key=lambda c: table.headers.index(c.header)),
            rows_total=len(rows),
            rows_matched=rows_matched,
            rows_unmatched=len(rows) - rows_matched,
            candidates=candidates,
            notes=list(dict.fromkeys(notes)),
            source=table.source,
        )

    # -- step 1 -----------------------------------------------------------------------------

    async def _identifying_columns(
        self, datasets: Sequence[Dataset], columns: _Columns, tell: Progress
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

    # -- step 2 -----------------------------------------------------------------------------

    async def _match_rows(
        self,
        dataset: Dataset,
        rows: Sequence[tuple[str, ...]],
        columns: _Columns,
        id_columns: dict[str, tuple[int, float]],
        mapping: dict[str, int],
        tell: Progress,
    ) -> list[_Row]:
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
        matches = [_Row() for _ in rows]
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
    ) -> dict[int, _Delivery]:
        """The allowed ``calls`` records of ``seqs`` that delivered ``dataset``."""
        out: dict[int, _Delivery] = {}
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
                    out[int(seq)] = _Delivery(
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

    # -- step 3: canaries -------------------------------------------------------------------

    async def _canaries(
        self,
        dataset: Dataset,
        matches: Sequence[_Row],
        deliveries: dict[int, _Delivery],
        tallies: dict[str, _Tally],
        notes: list[str],
    ) -> int:
        """Record the canaries found per recipient; returns how many comparisons were made
        (for the chance of a hash collision)."""
        all_canaries = {c for d in deliveries.values() for c in d.canaries}
        if not all_canaries:
            return 0
        found: list[tuple[str, str, str, str]] = []
        ids: dict[tuple[str, str], str] = {}
        for m in matches:
            for seq, hit in m.hits.items():
                delivery = deliveries[seq]
                for name, value in hit.items():
                    canary = ids.get((name, value))
                    if canary is None:
                        h = identity_hash(self._trace_key, dataset.id, name, value)
                        canary = ids[(name, value)] = f"{h:016x}"
                    if canary in delivery.canaries:
                        found.append((delivery.merchant_id, canary, name, value))
        fake: dict[tuple[str, str], bool] = {}
        for merchant, canary, name, value in found:
            if (name, value) not in fake:
                fake[(name, value)] = await self._absent_from_source(dataset, name, value)
            if fake[(name, value)]:
                tallies[merchant].canaries.add(canary)
            else:
                notes.append(
                    f"canary {canary} of {merchant} was not counted: its value of {name} "
                    "exists in the source (or the source could not be asked)"
                )
        return len(ids) * len(all_canaries)

    async def _absent_from_source(self, dataset: Dataset, name: str, value: str) -> bool:
        """Whether no real row has ``value`` as ``name``: a canary's identity must be fake.
        Fails closed: if the source cannot say, the canary does not count."""
        try:
            typed = coerce_value(dataset.field(name).type, value)
            rows = await (await self._connectors.get(dataset)).fetch(
                RowQuery(
                    fields=(name,),
                    conditions=(Condition(name, "eq", typed),),
                    order_by=dataset.key_fields,
                    limit=1,
                )
            )
        except (DsgwError, KeyError, TypeError, ValueError):
            return False
        return not rows

    # -- step 3: marks ----------------------------------------------------------------------

    async def _marks(
        self,
        dataset: Dataset,
        rows: Sequence[tuple[str, ...]],
        columns: _Columns,
        matches: Sequence[_Row],
        deliveries: dict[int, _Delivery],
        recipients: Sequence[frozenset[str]],
        id_columns: dict[str, tuple[int, float]],
        mapping: dict[str, int],
        tallies: dict[str, _Tally],
        notes: list[str],
    ) -> tuple[dict[str, MarkEvidence], _Hypotheses]:
        """The mark test per recipient, with the columns chosen and hypotheses tried.

        Each candidate is tested twice: on every leaked row it received, and on the rows
        only it received (rows other candidates also received hold *their* marks when they
        leaked them, and would dilute a small share of the file to a coin toss). The
        smaller p-value counts, so both tests are hypotheses of the Bonferroni correction.
        """
        hypotheses = _Hypotheses(count=max(1, len(tallies)))
        fields = carriers(dataset)
        if not fields or not tallies:
            return {}, hypotheses
        id_cols = {j for j, _rate in id_columns.values()}
        taken = id_cols | {j for name, j in mapping.items() if name not in fields}
        matched_rows = [i for i, m in enumerate(matches) if m.hits]
        choices: dict[str, list[int]] = {}
        reading = _Reading(fields, rows)
        for name, carrier in fields.items():
            if name in mapping:
                options = [mapping[name]]
            else:
                options = [
                    j
                    for j in range(columns.width)
                    if j not in taken and columns.readable(j, carrier) >= MIN_READABLE
                ]
            if not options:
                notes.append(f"no column carries the mark of {name}: marks not tested on it")
                continue
            # Which columns to test, and how to read them, is decided from the leaked cells
            # alone, never from a recipient's bits, so the test stays exact under "not the
            # source".
            kept: list[int] = []
            for j in options:
                shown = columns.places(j, matched_rows)
                if (
                    isinstance(carrier, DigitCarrier)
                    and shown is not None
                    and shown < carrier.places
                ):
                    reading.rounded[(name, j)] = shown
                    kept.append(j)
                    continue
                if not _erased(columns.bits(j, carrier, matched_rows)):
                    kept.append(j)
            if kept:
                choices[name] = kept
            else:
                notes.append(
                    f"the mark of {name} looks erased (every cell reads the same bit, e.g. "
                    "values rounded or masks rewritten): marks not tested on it"
                )
        if not choices:
            return {}, hypotheses
        for options in choices.values():
            hypotheses.count *= len(options)
        hypotheses.count *= len(MARK_ROWS)
        received = self._marked_rows(dataset, rows, matches, deliveries, id_columns, choices)
        if reading.rounded:
            # A long all-digit identifier's anchor is its 15-digit normal form: ask the
            # source for the leaked cell's own text too, which may still hold every digit.
            lookup = {anchor for got in received.values() for _i, anchor, _names in got}
            first = id_columns.get(dataset.identifying_fields[0])
            if first is not None:
                leaked = {i for got in received.values() for i, _anchor, _names in got}
                lookup |= {"".join(rows[i][first[0]].split()).upper() for i in leaked}
            reading.sources = await self._source_values(dataset, lookup, notes)
            if reading.sources:
                notes.append(
                    "numbers rounded to fewer places than delivered ("
                    + ", ".join(sorted({name for name, _j in reading.rounded}))
                    + "): compared with each candidate's delivered value, rounded either way"
                )
        evidence: dict[str, MarkEvidence] = {}
        votes: dict[str, Counter[int]] = defaultdict(Counter)
        for merchant in tallies:
            recipient = recipient_key(self._mark_key, dataset.id, merchant)
            mine = received.get(merchant, [])
            tests: list[MarkEvidence] = []
            for scope in MARK_ROWS[:2]:
                tested = (
                    mine
                    if scope == "received"
                    else [entry for entry in mine if recipients[entry[0]] == {merchant}]
                )
                cells, matched, columns_used = _mark_test(reading, recipient, choices, tested)
                if scope == "received":
                    for name, (j, n) in columns_used.items():
                        votes[name][j] += n
                if cells:
                    tests.append(MarkEvidence(cells, matched, binomial_tail(cells, matched), scope))
            if tests:
                # The first of equal p-values is kept: the test over every row received.
                evidence[merchant] = min(tests, key=lambda t: (t.p_value, -t.cells))
        for name, counter in votes.items():
            hypotheses.chosen[name] = counter.most_common(1)[0][0]

        def retest(merchant: str, named: frozenset[str]) -> MarkEvidence | None:
            """The test over the rows no ``named`` recipient received (``unexplained``)."""
            recipient = recipient_key(self._mark_key, dataset.id, merchant)
            tested = [
                entry for entry in received.get(merchant, []) if not recipients[entry[0]] & named
            ]
            cells, matched, _used = _mark_test(reading, recipient, choices, tested)
            if not cells:
                return None
            return MarkEvidence(cells, matched, binomial_tail(cells, matched), "unexplained")

        hypotheses.retest = retest
        return evidence, hypotheses

    async def _source_values(
        self, dataset: Dataset, anchors: set[str], notes: list[str]
    ) -> dict[str, Row]:
        """The source rows whose first identifying field is one of ``anchors``, by their
        anchor (the normalised value): what a rounded mark cell is compared with. Empty,
        with a note, when the source cannot be asked: rounded cells then count neither
        way."""
        name = dataset.identifying_fields[0]
        out: dict[str, Row] = {}
        wanted = sorted(anchors)
        try:
            connector = await self._connectors.get(dataset)
            field_type = dataset.field(name).type
            fields = tuple(dict.fromkeys((name, *carriers(dataset))))
            for start in range(0, len(wanted), CHUNK):
                values = tuple(
                    coerce_value(field_type, value) for value in wanted[start : start + CHUNK]
                )
                found = await connector.fetch(
                    RowQuery(
                        fields=fields,
                        conditions=(Condition(name, "in", values),),
                        order_by=dataset.key_fields,
                        limit=len(values) * 2,
                    )
                )
                for row in found:
                    out[normalize(cell_text(row.get(name)))] = row
            if field_type == "string":
                # A spreadsheet kept 15 digits of a long all-digit identifier: the source
                # rows starting with its first 14 are few, and one has this normal form.
                for anchor in [a for a in wanted if a.isdigit() and len(a) > SIGNIFICANT_DIGITS]:
                    if anchor in out:
                        continue
                    found = await connector.fetch(
                        RowQuery(
                            fields=fields,
                            conditions=(
                                Condition(name, "prefix", anchor[: SIGNIFICANT_DIGITS - 1]),
                            ),
                            order_by=dataset.key_fields,
                            limit=PREFIX_ROWS,
                        )
                    )
                    for row in found:
                        if normalize(cell_text(row.get(name))) == anchor:
                            out[anchor] = row
        except (DsgwError, KeyError, TypeError, ValueError):
            notes.append(
                "the source could not be asked for the delivered values of rounded numbers: "
                "those cells were not tested"
            )
            return {}
        return out

    def _marked_rows(
        self,
        dataset: Dataset,
        rows: Sequence[tuple[str, ...]],
        matches: Sequence[_Row],
        deliveries: dict[int, _Delivery],
        id_columns: dict[str, tuple[int, float]],
        choices: dict[str, list[int]],
    ) -> dict[str, list[tuple[int, str, set[str]]]]:
        """Per recipient, the leaked rows it received in marked deliveries: (row, anchor,
        marked fields delivered). One pass over the matches, whatever the candidates."""
        received: dict[str, list[tuple[int, str, set[str]]]] = defaultdict(list)
        for i, m in enumerate(matches):
            mine: dict[str, tuple[str, set[str]]] = {}
            for seq, hit in m.hits.items():
                delivery = deliveries[seq]
                marked = delivery.fields & choices.keys()
                if not delivery.marked or not marked:
                    continue
                anchor = self._anchor(dataset, rows[i], delivery, hit, id_columns)
                if anchor is None:
                    continue
                entry = mine.setdefault(delivery.merchant_id, (anchor, set()))
                if entry[0] == anchor:
                    entry[1].update(marked)
            for merchant, (anchor, names) in mine.items():
                received[merchant].append((i, anchor, names))
        return received

    @staticmethod
    def _anchor(
        dataset: Dataset,
        row: tuple[str, ...],
        delivery: _Delivery,
        hit: dict[str, str],
        id_columns: dict[str, tuple[int, float]],
    ) -> str | None:
        """The anchor this delivery used for the row: its first identifying field delivered
        in clear (a sensitive one only if its clear value matched), as delivered."""
        for name in dataset.identifying_fields:
            if name not in delivery.fields:
                continue
            if name in hit:
                return hit[name]
            if dataset.field(name).sensitive is not None:
                continue
            if name not in id_columns:
                return None
            value = normalize(row[id_columns[name][0]])
            return value or None
        return None

    # -- step 4 -----------------------------------------------------------------------------

    def _candidate(
        self,
        merchant: str,
        tally: _Tally,
        marks: MarkEvidence | None,
        hypotheses: int,
        canary_checks: int,
        deliveries: dict[int, _Delivery],
    ) -> Candidate:
        fap = 1.0
        if tally.canaries:
            fap = min(fap, max(canary_checks, 1) / HASH_SPACE)
        if marks is not None:
            fap = min(fap, marks.p_value * hypotheses)
        fap = max(fap, FAP_FLOOR)
        verdict: Verdict = "possible"
        if fap <= self._threshold:
            verdict = "named"
        elif marks is not None and not tally.canaries:
            # Enough cells that a perfect match would have named this recipient, and a
            # match rate far from it: the marks point away from this recipient.
            needed = math.log2(hypotheses / self._threshold)
            if marks.cells >= needed and marks.matches < NOT_INDICATED_RATE * marks.cells:
                verdict = "not-indicated"
        refs = sorted(tally.deliveries.items(), key=lambda item: (-item[1], item[0]))
        return Candidate(
            merchant_id=merchant,
            verdict=verdict,
            guilt=-math.expm1(tally.log_innocence),
            false_attribution_probability=fap,
            rows_received=tally.rows,
            rows_exclusive=tally.exclusive,
            marks=marks,
            canaries=sorted(tally.canaries),
            deliveries=[
                DeliveryRef(
                    seq=seq,
                    record_id=f"calls/{seq}",
                    recorded_at=deliveries[seq].recorded_at,
                    scenario_id=deliveries[seq].scenario_id,
                    rows_matched=count,
                )
                for seq, count in refs
            ],
        )


@dataclass(slots=True)
class _Hypotheses:
    """How many hypotheses the mark tests tried (candidates x column choices), and the
    column each mark field was read from."""

    count: int
    chosen: dict[str, int] = field(default_factory=dict)
    # The mark test of a candidate over the rows no named recipient received; None until
    # marks are tested.
    retest: Callable[[str, frozenset[str]], MarkEvidence | None] | None = None


@dataclass(slots=True)
class _Reading:
    """How the leaked mark cells are read: by the parity of their last digit, or, in a
    column of numbers rounded to fewer places than delivered (``rounded``: (field, column)
    -> places shown), by comparison with the value the candidate was delivered, computed
    from the source row (``sources``, by anchor) and the candidate's bits."""

    fields: dict[str, Carrier]
    rows: Sequence[tuple[str, ...]]
    rounded: dict[tuple[str, int], int] = field(default_factory=dict)
    sources: dict[str, Row] = field(default_factory=dict)
    _bits: dict[tuple[str, int, int], int | None] = field(default_factory=dict)

    def match(self, name: str, i: int, j: int, anchor: str, recipient: bytes) -> bool | None:
        """Whether cell (i, j) carries the candidate's mark of ``name``; None when it says
        nothing either way.

        A rounded cell is compared with both values the candidate could have been given
        for the row: the source value with its bit, and with the other bit (the two differ
        by one unit in the last place). A cell consistent with both (or neither), rounded
        either way, is no evidence. A cell consistent with exactly one of them matches when
        it is the candidate's: for anyone but the source, which of the two is "its" value
        is its keyed bit, independent of the file, so the chance of a match stays exactly
        1/2 and the binomial test is unchanged."""
        bit, up = mark_bits(recipient, anchor, name)
        places = self.rounded.get((name, j))
        if places is None:
            key = (name, i, j)
            if key not in self._bits:
                self._bits[key] = read_bit(self.fields[name], self.rows[i][j])
            got = self._bits[key]
            return None if got is None else got == bit
        source = self.sources.get(anchor)
        shown = parse_number(self.rows[i][j])
        if source is None or shown is None or source.get(name) is None:
            return None
        carrier = self.fields[name]
        mine = _rounds_to(embed(carrier, source[name], bit, up), shown, places)
        other = _rounds_to(embed(carrier, source[name], 1 - bit, up), shown, places)
        return None if mine == other else mine


def _rounds_to(delivered: Any, shown: Decimal, places: int) -> bool:
    """Whether ``delivered``, rounded to the nearest ``places`` decimals, can show as
    ``shown``, a tie going either way: 12.345 may show as 12.34 (half-even, or a binary
    double just below the tie) or 12.35 (half-up, as Excel displays it)."""
    try:
        value = Decimal(str(delivered))
    except InvalidOperation:
        return False
    return abs(value - shown) * 2 <= Decimal(1).scaleb(-places)


def _mark_test(
    reading: _Reading,
    recipient: bytes,
    choices: dict[str, list[int]],
    tested: Sequence[tuple[int, str, set[str]]],
) -> tuple[int, int, dict[str, tuple[int, int]]]:
    """Cells and matches of one candidate over the ``tested`` rows (row, anchor, marked
    fields delivered): per field, the column with the smallest p-value. Also, per field,
    the column used and its cells."""
    cells = matched = 0
    used: dict[str, tuple[int, int]] = {}
    for name, options in choices.items():
        expected = [(i, anchor) for i, anchor, names in tested if name in names]
        best: tuple[float, int, int, int] | None = None
        for j in options:
            # Each anchor counts once: a row repeated in the file is no new evidence.
            seen: set[str] = set()
            n = k = 0
            for i, anchor in expected:
                if anchor in seen:
                    continue
                got = reading.match(name, i, j, anchor, recipient)
                if got is None:
                    continue
                seen.add(anchor)
                n += 1
                k += got
            p = binomial_tail(n, k)
            if best is None or (p, -n) < (best[0], -best[1]):
                best = (p, n, k, j)
        assert best is not None
        cells += best[1]
        matched += best[2]
        if best[1]:
            used[name] = (best[3], best[1])
    return cells, matched, used


class _Columns:
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


def _erased(bits: tuple[int, int]) -> bool:
    """Whether a column's mark bits are (nearly) all the same: a carrier the leaker's
    tools flattened (rounded numbers, rewritten masks), or one never marked. Keyed bits of
    marked values are balanced; such a column carries no evidence either way."""
    zeros, ones = bits
    total = zeros + ones
    minority = min(zeros, ones)
    return (total >= 5 and minority == 0) or (total >= 10 and minority < ERASED_SHARE * total)


def _carries(carrier: Carrier, cell: str) -> bool:
    if read_bit(carrier, cell) is None:
        return False
    if isinstance(carrier, DigitCarrier):
        number = parse_number(cell)
        exponent = number.as_tuple().exponent if number is not None else 0
        return isinstance(exponent, int) and -exponent <= carrier.places
    return True


def _header_mapping(dataset: Dataset, headers: Sequence[str]) -> dict[str, int]:
    """Fields whose name a header spells (ignoring case, spaces, ``_`` and ``-``)."""
    by_key = {_header_key(name): name for name in dataset.field_names}
    out: dict[str, int] = {}
    for j, header in enumerate(headers):
        name = by_key.get(_header_key(header))
        if name is not None and name not in out:
            out[name] = j
    return out


def _dataset_by_headers(datasets: Sequence[Dataset], headers: Sequence[str]) -> Dataset | None:
    keys = {_header_key(h) for h in headers}
    scored = [(sum(_header_key(n) in keys for n in d.field_names), d.id, d) for d in datasets]
    best = max(scored, default=None, key=lambda item: (item[0], item[1]))
    return best[2] if best is not None and best[0] > 0 else None


def _empty_report(table: LeakedTable, total: int, notes: list[str]) -> TraceReport:
    return TraceReport(
        dataset_id=None,
        columns=[],
        rows_total=total,
        rows_matched=0,
        rows_unmatched=total,
        candidates=[],
        notes=notes,
        source=table.source,
    )
