"""Step 3 of a trace: the evidence per recipient, canary rows found and the keyed-mark test.

Kept apart from matching because this is where a recipient can be *named*: the statistics
(binomial tail, Bonferroni correction, erased and unreadable cells) read in one place.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from connectors.base import Condition, Row, RowQuery, coerce_value
from gateway.catalog.models import Dataset
from gateway.errors import DsgwError
from gateway.tracing.index import cell_text, identity_hash
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
from gateway.tracing.matching import CHUNK, Columns, Delivery, LeakMatcher, MatchedRow, Tally
from gateway.tracing.models import (
    MarkEvidence,
    MarkRows,
)
from gateway.tracing.normalize import (
    SIGNIFICANT_DIGITS,
    normalize,
    parse_number,
)

__all__ = ["LeakEvidence"]


# A column may hold a mark carrier when at least this share of its cells can be read.
MIN_READABLE: Final = 0.5


# A mark column whose minority bit is rarer than this reads as erased.
ERASED_SHARE: Final = 0.1


# Source rows asked for per 14-digit prefix of a long identifier a spreadsheet cut.
PREFIX_ROWS: Final = 16


# The row sets each candidate's marks are tested on (MarkEvidence.rows).
MARK_ROWS: Final[tuple[MarkRows, ...]] = ("received", "exclusive", "unexplained")


@dataclass(slots=True)
class _Hypotheses:
    """How many hypotheses the mark tests tried (candidates x column choices), and the
    column each mark field was read from."""

    count: int
    chosen: dict[str, int] = field(default_factory=dict)
    # The mark test of a candidate over the rows no named recipient received; None until
    # marks are tested.
    retest: Callable[[str, frozenset[str]], MarkEvidence | None] | None = None


def _rounds_to(delivered: Any, shown: Decimal, places: int) -> bool:
    """Whether ``delivered``, rounded to the nearest ``places`` decimals, can show as
    ``shown``, a tie going either way: 12.345 may show as 12.34 (half-even, or a binary
    double just below the tie) or 12.35 (half-up, as Excel displays it)."""
    try:
        value = Decimal(str(delivered))
    except InvalidOperation:
        return False
    return abs(value - shown) * 2 <= Decimal(1).scaleb(-places)


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


def _erased(bits: tuple[int, int]) -> bool:
    """Whether a column's mark bits are (nearly) all the same: a carrier the leaker's
    tools flattened (rounded numbers, rewritten masks), or one never marked. Keyed bits of
    marked values are balanced; such a column carries no evidence either way."""
    zeros, ones = bits
    total = zeros + ones
    minority = min(zeros, ones)
    return (total >= 5 and minority == 0) or (total >= 10 and minority < ERASED_SHARE * total)


class LeakEvidence(LeakMatcher):
    """Reads canaries and keyed marks out of the matched rows, per candidate recipient."""

    async def _canaries(
        self,
        dataset: Dataset,
        matches: Sequence[MatchedRow],
        deliveries: dict[int, Delivery],
        tallies: dict[str, Tally],
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

    async def _marks(
        self,
        dataset: Dataset,
        rows: Sequence[tuple[str, ...]],
        columns: Columns,
        matches: Sequence[MatchedRow],
        deliveries: dict[int, Delivery],
        recipients: Sequence[frozenset[str]],
        id_columns: dict[str, tuple[int, float]],
        mapping: dict[str, int],
        tallies: dict[str, Tally],
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
        matches: Sequence[MatchedRow],
        deliveries: dict[int, Delivery],
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
        delivery: Delivery,
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
