"""What a trace reads and what it reports.

A :class:`LeakedTable` is a leaked file reduced to text cells, whatever its format; a
:class:`TraceReport` is the answer: which columns were recognised, which recipients received
the leaked rows, and for each the evidence that does (or does not) single it out.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "Candidate",
    "ColumnMatch",
    "DeliveryRef",
    "LeakedTable",
    "MarkEvidence",
    "MarkRows",
    "TraceReport",
    "Verdict",
]

Verdict = Literal["named", "possible", "not-indicated"]
MarkRows = Literal["received", "exclusive", "unexplained"]


@dataclass(frozen=True, slots=True)
class LeakedTable:
    """A leaked file as rows of text cells ("" for an empty cell); ``source`` names the file."""

    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    source: str = ""


@dataclass(frozen=True, slots=True)
class ColumnMatch:
    """How a leaked column was recognised: ``header`` (its name is the field's) or
    ``content`` (its values hash to delivered values, or carry the field's mark)."""

    header: str
    field: str
    how: Literal["header", "content"]
    hit_rate: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"header": self.header, "field": self.field, "how": self.how}
        if self.hit_rate is not None:
            out["hit_rate"] = round(self.hit_rate, 4)
        return out


@dataclass(frozen=True, slots=True)
class MarkEvidence:
    """The keyed-mark test of one candidate: of ``cells`` marked cells it received, ``matches``
    carry its expected bit. ``p_value`` is P(Binom(cells, 1/2) >= matches): the chance of at
    least this many matches if the candidate is not the source. ``rows`` says which leaked
    rows were tested: ``received`` (every row the candidate received), ``exclusive`` (only
    the rows no other candidate received, where another recipient's marks cannot dilute it)
    or ``unexplained`` (the rows no *named* recipient received)."""

    cells: int
    matches: int
    p_value: float
    rows: MarkRows = "received"

    def to_dict(self) -> dict[str, Any]:
        return {
            "cells": self.cells,
            "matches": self.matches,
            "p_value": self.p_value,
            "rows": self.rows,
        }


@dataclass(frozen=True, slots=True)
class DeliveryRef:
    """One delivery (a query answer, a ``calls`` record) that contained leaked rows."""

    seq: int
    record_id: str
    recorded_at: dt.datetime
    scenario_id: str | None
    rows_matched: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "record_id": self.record_id,
            "recorded_at": self.recorded_at.isoformat(),
            "scenario_id": self.scenario_id,
            "rows_matched": self.rows_matched,
        }


@dataclass(frozen=True, slots=True)
class Candidate:
    """A recipient of at least one leaked row, with the evidence about it.

    ``verdict`` is ``named`` only when a mark or canary makes another source implausible
    (``false_attribution_probability`` at most the configured threshold); receiving rows
    alone never names anyone, since public data reaches several recipients.
    """

    merchant_id: str
    verdict: Verdict
    guilt: float
    false_attribution_probability: float
    rows_received: int
    rows_exclusive: int
    marks: MarkEvidence | None
    canaries: list[str]
    deliveries: list[DeliveryRef]

    def to_dict(self) -> dict[str, Any]:
        return {
            "merchant_id": self.merchant_id,
            "verdict": self.verdict,
            "guilt": self.guilt,
            "false_attribution_probability": self.false_attribution_probability,
            "rows_received": self.rows_received,
            "rows_exclusive": self.rows_exclusive,
            "marks": None if self.marks is None else self.marks.to_dict(),
            "canaries": list(self.canaries),
            "deliveries": [d.to_dict() for d in self.deliveries],
        }


@dataclass(frozen=True, slots=True)
class TraceReport:
    """The ranked answer of one trace (most implicated candidate first)."""

    dataset_id: str | None
    columns: list[ColumnMatch]
    rows_total: int
    rows_matched: int
    rows_unmatched: int
    candidates: list[Candidate]
    notes: list[str] = field(default_factory=list)
    source: str = ""

    @property
    def named(self) -> list[Candidate]:
        return [c for c in self.candidates if c.verdict == "named"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "dataset_id": self.dataset_id,
            "columns": [c.to_dict() for c in self.columns],
            "rows_total": self.rows_total,
            "rows_matched": self.rows_matched,
            "rows_unmatched": self.rows_unmatched,
            "candidates": [c.to_dict() for c in self.candidates],
            "notes": list(self.notes),
        }
