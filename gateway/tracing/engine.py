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

Steps 1-2 are in :mod:`gateway.tracing.matching`, step 3 in :mod:`gateway.tracing.evidence`;
this module runs them in order and weighs the evidence into a verdict.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Final

from gateway.authorization.roles import Action
from gateway.catalog.models import Dataset
from gateway.errors import NotFoundError, ValidationError
from gateway.governance.actor import Actor
from gateway.tracing.evidence import LeakEvidence
from gateway.tracing.matching import (
    Columns,
    Delivery,
    Progress,
    Tally,
    dataset_by_headers,
    header_mapping,
)
from gateway.tracing.models import (
    Candidate,
    ColumnMatch,
    DeliveryRef,
    LeakedTable,
    MarkEvidence,
    TraceReport,
    Verdict,
)

__all__ = ["LeakTracer", "Progress"]


# Mark evidence against a candidate: enough cells to name it had it been the source, and a
# match rate this far below 1.
NOT_INDICATED_RATE: Final = 0.75
HASH_SPACE: Final = 2.0**63
# The smallest false-attribution probability reported: a float underflows to 0.0 past
# about a thousand matching mark cells, and 0.0 would read as certainty.
FAP_FLOOR: Final = 1e-300


class LeakTracer(LeakEvidence):
    """Traces leaked tables against the delivery index, marks and canaries."""

    @staticmethod
    def authorize(actor: Actor) -> None:
        """Raise :class:`ForbiddenError` unless ``actor`` may trace leaks. The HTTP shell
        asks before it reads the upload, so a caller without the role cannot make the
        gateway read a large file; :meth:`trace` asks again."""
        actor.may(Action.TRACE_LEAK)

    async def trace(
        self,
        actor: Actor,
        table: LeakedTable,
        *,
        dataset_id: str | None = None,
        progress: Progress | None = None,
    ) -> TraceReport:
        """Rank the recipients of ``table``'s rows, with evidence.

        Raises :class:`ForbiddenError` for a role without ``leak.trace``,
        :class:`NotFoundError` for an unknown ``dataset_id`` and :class:`ValidationError`
        for a table without columns. Reads only."""
        self.authorize(actor)
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
        columns = Columns(rows, width)

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
            dataset = dataset_by_headers(datasets, table.headers)
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
        named = header_mapping(dataset, table.headers)
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
        tallies: dict[str, Tally] = defaultdict(Tally)
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

    # -- step 4 -----------------------------------------------------------------------------

    def _candidate(
        self,
        merchant: str,
        tally: Tally,
        marks: MarkEvidence | None,
        hypotheses: int,
        canary_checks: int,
        deliveries: dict[int, Delivery],
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
