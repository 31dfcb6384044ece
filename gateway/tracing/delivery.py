"""Applying the three tracing layers to one query answer, as it is built.

The data plane fetches a page of source rows and hands them here with how to render one
(masking and JSON forms are the data plane's business). This module adds canary rows
(synthetic records at keyed places in the page, :mod:`gateway.tracing.canaries`), embeds
the recipient's marks, keeps the page within its limit, and computes what the call record
and the ``trace_rows`` index must hold. Pure and deterministic: the same recipient asking
the same page twice gets byte-identical rows.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from connectors.base import Condition, Row
from gateway.catalog.models import Dataset
from gateway.tracing.canaries import canary_row, canary_slot, selects
from gateway.tracing.index import cell_text, identity_hash, row_hash, rows_digest
from gateway.tracing.marks import (
    Carrier,
    MaskCarrier,
    carriers,
    embed,
    mark_bits,
    mark_id,
    recipient_key,
)
from gateway.tracing.normalize import normalize

__all__ = ["DEFAULT_CANARY_RATE", "DeliveryTracing", "TracedPage"]

DEFAULT_CANARY_RATE = 64
#: Recipients whose derived keys are kept; past it the cache starts again (a recipient's key
#: is one HMAC to derive again, so the bound only caps memory).
_RECIPIENTS_KEPT = 4096
#: Page plans kept (one per dataset, field list and masking); past it the cache starts again.
_PLANS_KEPT = 1024


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a page's shape decides, the same for every page of that shape: the identifying
    fields, those delivered in clear (the first anchors a row's marks) and the carriers
    whose marks the delivered form can hold."""

    identifying: tuple[str, ...]
    clear_ids: list[str]
    anchor_field: str | None
    marked: dict[str, Carrier]


@dataclass(frozen=True, slots=True)
class TracedPage:
    """A query answer's rows with their tracing evidence.

    ``real_rows`` counts the source rows among ``rows`` (paging advances by it);
    ``trace_hashes`` are the ``trace_rows`` entries, ``rows_digest`` commits to them in the
    call record; ``canaries`` are the canary ids delivered; ``mark_id`` is set when the
    answer carries the recipient's marks."""

    rows: list[dict[str, Any]]
    real_rows: int
    trace_hashes: tuple[int, ...]
    rows_digest: str
    canaries: list[str]
    mark_id: str | None


class DeliveryTracing:
    """The delivery side of leak tracing, keyed by sub-keys of the keystore's MARK key."""

    def __init__(
        self, *, trace_key: bytes, mark_key: bytes, canary_rate: int = DEFAULT_CANARY_RATE
    ) -> None:
        self._trace_key = trace_key
        self._mark_key = mark_key
        self._canary_rate = canary_rate
        # Derived once, not per answer: each recipient's key K_r and mark id, and each
        # page plan (by the dataset definition it was derived from, so a changed definition
        # derives again).
        self._recipients: dict[tuple[str, str], tuple[bytes, str]] = {}
        self._plans: dict[tuple[str, tuple[str, ...], frozenset[str]], tuple[Dataset, _Plan]] = {}

    def _plan(self, dataset: Dataset, fields: Sequence[str], masked: Collection[str]) -> _Plan:
        """The page plan of ``dataset`` delivering ``fields`` with ``masked`` ones masked,
        derived again when the dataset's definition changed (another object)."""
        key = (dataset.id, tuple(fields), frozenset(masked))
        cached = self._plans.get(key)
        if cached is not None and cached[0] is dataset:
            return cached[1]
        identifying = dataset.identifying_fields
        clear_ids = [f for f in identifying if f in fields and f not in masked]
        plan = _Plan(
            identifying=identifying,
            clear_ids=clear_ids,
            anchor_field=clear_ids[0] if clear_ids else None,
            marked={
                name: carrier
                for name, carrier in carriers(dataset).items()
                if name in fields and (name in masked) == isinstance(carrier, MaskCarrier)
            },
        )
        if len(self._plans) >= _PLANS_KEPT:
            self._plans.clear()
        self._plans[key] = (dataset, plan)
        return plan

    def _recipient(self, dataset_id: str, merchant_id: str) -> tuple[bytes, str]:
        """``K_r`` of the merchant for the dataset, and the merchant's mark id."""
        key = (dataset_id, merchant_id)
        found = self._recipients.get(key)
        if found is None:
            if len(self._recipients) >= _RECIPIENTS_KEPT:
                self._recipients.clear()
            found = (
                recipient_key(self._mark_key, dataset_id, merchant_id),
                mark_id(self._mark_key, merchant_id),
            )
            self._recipients[key] = found
        return found

    def page(
        self,
        dataset: Dataset,
        merchant_id: str,
        fields: Sequence[str],
        rows: Sequence[Row],
        *,
        render: Callable[[Row], dict[str, Any]],
        masked: Collection[str],
        conditions: Sequence[Condition],
        limit: int,
    ) -> TracedPage:
        """Build the answer's rows from the fetched ``rows`` (at most ``limit``).

        ``masked`` are the fields delivered masked. A canary is added only when the
        answer shows an identifying field in clear (else it could never be recognised) and
        no filter touches an identifying field (a fake identity could contradict it)."""
        plan = self._plan(dataset, fields, masked)
        identifying, clear_ids, anchor_field = plan.identifying, plan.clear_ids, plan.anchor_field
        marked = plan.marked
        recipient, recipient_mark = self._recipient(dataset.id, merchant_id)
        with_canaries = (
            dataset.canaries
            and anchor_field is not None
            and not any(c.field in identifying for c in conditions)
        )
        marked_rows: list[dict[str, Any]] = []
        anchors: list[str | None] = []
        for source in rows:
            rendered = render(source)
            anchor = _anchor(rendered, anchor_field)
            anchors.append(anchor)
            marked_rows.append(self._mark(rendered, anchor, marked, recipient))
        # Canaries by the index of the real row that selected them.
        canaries: dict[int, tuple[int, dict[str, Any], int]] = {}
        if with_canaries:
            fixed = {c.field for c in conditions}
            real = {a for a in anchors if a is not None}
            for index, anchor in enumerate(anchors):
                if anchor is None or not selects(recipient, anchor, self._canary_rate):
                    continue
                fake = canary_row(recipient, anchor, rows, identifying, fixed)
                if fake is None:
                    continue
                rendered = render(fake)
                fake_anchor = _anchor(rendered, anchor_field)
                if fake_anchor is None or fake_anchor in real:
                    continue
                real.add(fake_anchor)
                canary_id = identity_hash(
                    self._trace_key, dataset.id, str(anchor_field), fake_anchor
                )
                slot = canary_slot(recipient, anchor, len(rows))
                canary = self._mark(rendered, fake_anchor, marked, recipient)
                canaries[index] = (slot, canary, canary_id)
        page = _cut(marked_rows, canaries, limit)
        hashes: set[int] = set()
        for row, _canary in page:
            hashes.update(self._hashes(dataset, row, clear_ids))
        return TracedPage(
            rows=[row for row, _canary in page],
            real_rows=sum(1 for _row, canary in page if canary is None),
            trace_hashes=tuple(sorted(hashes)),
            rows_digest=rows_digest(hashes),
            canaries=[f"{c:016x}" for _row, c in page if c is not None],
            mark_id=recipient_mark if marked and anchor_field else None,
        )

    @staticmethod
    def _mark(
        row: dict[str, Any],
        anchor: str | None,
        marked: dict[str, Carrier],
        recipient: bytes,
    ) -> dict[str, Any]:
        if anchor is None:
            return row
        for name, carrier in marked.items():
            bit, up = mark_bits(recipient, anchor, name)
            row[name] = embed(carrier, row[name], bit, up)
        return row

    def _hashes(self, dataset: Dataset, row: dict[str, Any], clear_ids: list[str]) -> list[int]:
        cells = {
            name: value if type(value) is str else cell_text(value) for name, value in row.items()
        }
        out = [row_hash(self._trace_key, dataset.id, cells)]
        for name in clear_ids:
            text = normalize(cells[name])
            if text:
                out.append(identity_hash(self._trace_key, dataset.id, name, text))
        return out


def _anchor(row: dict[str, Any], field: str | None) -> str | None:
    """The normalised first identifying value in clear: what keys a row's marks."""
    if field is None:
        return None
    text = normalize(cell_text(row.get(field)))
    return text or None


def _cut(
    rows: list[dict[str, Any]],
    canaries: dict[int, tuple[int, dict[str, Any], int]],
    limit: int,
) -> list[tuple[dict[str, Any], int | None]]:
    """The page: real rows in order, each canary before the real row of its slot, cut at
    ``limit``. A canary whose selecting row is cut (it opens the next page, where it selects
    its canary again) is left out, so no canary is delivered twice."""
    if not canaries:  # most pages: the real rows up to the limit
        return [(row, None) for row in rows[:limit]]
    kept = dict(canaries)
    while True:
        slots: dict[int, list[tuple[dict[str, Any], int]]] = {}
        for slot, canary, canary_id in kept.values():
            slots.setdefault(slot, []).append((canary, canary_id))
        out: list[tuple[dict[str, Any], int | None]] = []
        for index in range(len(rows) + 1):
            out.extend(slots.get(index, ()))
            if index < len(rows):
                out.append((rows[index], None))
        page = out[:limit]
        delivered = sum(1 for _row, canary_id in page if canary_id is None)
        cut = [index for index in kept if index >= delivered]
        if not cut:
            return page
        for index in cut:
            del kept[index]
