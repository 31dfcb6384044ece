"""The overlap audit of exact aggregates: no two answered cells differ by a few subjects.

Small-cell suppression alone is defeated by differencing: two cells of at least ``k``
subjects each whose subject sets differ by one (a range filter moved by a step, an ``in``
list with one member more) subtract to that one subject's values. The audit keeps, per
merchant and dataset, a sketch (:mod:`gateway.privacy.sketch`) of every cell it answered,
and withholds a new cell whose elements differ from an answered cell's by 1 to ``k - 1``.

A cell's elements are its subjects *with their contributions*: one element per subject,
the keyed hash of the subject and its row count, sum and count of every measure field of
the grant in that cell. So a cell with one subject more or less differs by one element; a
cell with the same subjects where one subject has a row more or less differs by two; and the
elements do not depend on which measures a call asked for. An identical cell (difference 0)
is answered again: it reveals nothing new.

The check and the record of the answered cells are one store transaction under a lock per
merchant and dataset (PostgreSQL: a transaction-scoped advisory lock; SQLite: the
database's write lock), committed before the answer leaves, so two concurrent calls that
differ by one subject cannot both be answered, on one worker or many. A store failure
propagates as the driver's error, which the HTTP layer maps to 503 ``store-unavailable``.

What it does not prevent is said in docs/privacy.md: combinations of three or more answers,
merchants colluding, and it withholds (rather than explains) differences that come from the
data changing between two calls.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from sqlalchemy import and_, insert, or_, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from connectors.base import Value
from gateway.clock import Clock
from gateway.db.schema import AnsweredCellRow
from gateway.db.sessions import LOCK_NAMESPACE
from gateway.errors import AuditStateError
from gateway.privacy.sketch import PRIME, CellSketch, SketchFormatError, terms_for

__all__ = ["AuditOutcome", "OverlapAudit", "lock_key"]

_PERSON: Final = b"dsgw-overlap-v1"
# Advisory-lock keys of the audit (second key, under LOCK_NAMESPACE) start here, clear of the
# fixed keys of the log streams (0-2), the leader lock (100) and migrations (101).
_LOCK_BASE: Final = 1 << 20


def lock_key(merchant_id: str, dataset_id: str) -> int:
    """The advisory-lock key of one merchant's audit of one dataset: a 31-bit hash above
    the fixed keys. Two pairs sharing a key only wait for each other; they never mix."""
    digest = hashlib.blake2b(
        f"{merchant_id}\x1f{dataset_id}".encode(), digest_size=8, person=_PERSON
    ).digest()
    return _LOCK_BASE + int.from_bytes(digest, "big") % ((1 << 31) - _LOCK_BASE)


def _number(value: Value) -> str:
    """A contribution value as text: equal values from any connector (a sum read as
    1907.770 from one source and 1907.77 from another) give equal text. Every position of a
    contribution holds one kind (a count, or a sum or nothing), so no type tag is needed."""
    if value is None:
        return "n"
    if isinstance(value, Decimal):
        return "0" if value == 0 else format(value.normalize(), "f")
    return str(value)


def _subject(value: Value) -> str:
    """A subject value as tagged text (a string "7" and an integer 7 stay apart)."""
    if isinstance(value, str):
        return "s" + value
    if isinstance(value, bool):
        return "b1" if value else "b0"
    if isinstance(value, int | Decimal):
        return "i" + _number(value)
    return "n" if value is None else "t" + value.isoformat()


@dataclass(frozen=True, slots=True)
class AuditOutcome:
    """Per cell (in the order given) whether it may be answered, and how many answered
    cells the decision compared against (for the call record)."""

    answered: tuple[bool, ...]
    compared: int

    @property
    def withheld(self) -> int:
        return self.answered.count(False)


class OverlapAudit:
    """Decides which cells of an exact aggregate may be answered to a merchant, and keeps
    the sketches of those answered in ``answered_cells``.

    ``threshold`` is ``k``: a cell whose elements differ from an answered cell's by fewer
    than ``k`` (and not zero) is withheld. ``max_subject_rows`` bounds the subject-level
    rows one call may fetch for the audit (the data plane refuses beyond it)."""

    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        *,
        key: bytes,
        threshold: int,
        max_subject_rows: int,
    ) -> None:
        terms_for(threshold)  # refuses an unsupported threshold now
        self._engine = engine
        self._clock = clock
        self._hasher = hashlib.blake2b(key=key, digest_size=16, person=_PERSON)
        self.threshold = threshold
        self.max_subject_rows = max_subject_rows

    def element(self, subject: Value, contribution: Iterable[Value]) -> int:
        """The field element of one subject and its contribution to a cell: a keyed
        BLAKE2b of the canonical values, in [1, PRIME) (zero would vanish from every sum).
        Keyed so a merchant cannot predict elements nor craft sets that look far apart."""
        h = self._hasher.copy()
        # Numbers never hold "," or the separator, so the text parses back unambiguously.
        h.update(f"{','.join(map(_number, contribution))}\x1f{_subject(subject)}".encode())
        return 1 + int.from_bytes(h.digest(), "big") % (PRIME - 1)

    def sketch(self, elements: Sequence[int]) -> CellSketch:
        return CellSketch.of(elements, self.threshold)

    async def admit(
        self, merchant_id: str, dataset_id: str, cells: Sequence[CellSketch]
    ) -> AuditOutcome:
        """Decide every cell of one answer and record those answered, in one transaction
        under the (merchant, dataset) lock, committed when this returns.

        Each cell is compared with every answered cell of the merchant and dataset whose
        size is within ``k - 1`` of its own (no other can be closer) and with the cells of
        this answer admitted before it. A cell identical to an answered one is answered
        and not stored again. Raises the store's error when it fails (nothing is recorded
        and the caller answers nothing) and :class:`AuditStateError` for a stored sketch it
        cannot read."""
        if not cells:
            return AuditOutcome((), 0)
        k = self.threshold
        now = self._clock.now()
        async with self._engine.begin() as conn:
            await self._lock(conn, merchant_id, dataset_id)
            known = await self._nearby(conn, merchant_id, dataset_id, [c.size for c in cells])
            answered: list[bool] = []
            compared = 0
            fresh: list[CellSketch] = []
            for cell in cells:
                allowed, stored_already = True, False
                for size in range(cell.size - k + 1, cell.size + k):
                    for old in known.get(size, ()):
                        compared += 1
                        difference = _difference(cell, old)
                        if difference == 0:
                            stored_already = True
                        elif difference is not None:
                            allowed = False
                            break
                    if not allowed:
                        break
                answered.append(allowed)
                if allowed and not stored_already:
                    known.setdefault(cell.size, []).append(cell)
                    fresh.append(cell)
            if fresh:
                await conn.execute(
                    insert(AnsweredCellRow),
                    [
                        {
                            "merchant_id": merchant_id,
                            "dataset_id": dataset_id,
                            "subjects": cell.size,
                            "sketch": cell.to_bytes(),
                            "answered_at": now,
                        }
                        for cell in fresh
                    ],
                )
        return AuditOutcome(tuple(answered), compared)

    async def _lock(self, conn: AsyncConnection, merchant_id: str, dataset_id: str) -> None:
        if conn.dialect.name == "postgresql":
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(:namespace, :key)"),
                {"namespace": LOCK_NAMESPACE, "key": lock_key(merchant_id, dataset_id)},
            )
        else:
            # SQLite has one write lock; a write that changes nothing takes it now, before
            # the answered cells are read (as gateway.ledger.log.lock_streams does).
            await conn.execute(text("UPDATE answered_cells SET id = id WHERE 0 = 1"))

    async def _nearby(
        self, conn: AsyncConnection, merchant_id: str, dataset_id: str, sizes: list[int]
    ) -> dict[int, list[CellSketch]]:
        """The answered cells whose sizes are within ``k - 1`` of one of ``sizes``, by size;
        one indexed query over the merged size ranges."""
        k = self.threshold
        ranges: list[list[int]] = []
        for size in sorted(sizes):
            low, high = size - k + 1, size + k - 1
            if ranges and low <= ranges[-1][1] + 1:
                ranges[-1][1] = high
            else:
                ranges.append([low, high])
        column = AnsweredCellRow.subjects
        rows = await conn.execute(
            select(AnsweredCellRow.id, column, AnsweredCellRow.sketch).where(
                AnsweredCellRow.merchant_id == merchant_id,
                AnsweredCellRow.dataset_id == dataset_id,
                or_(*(and_(column >= low, column <= high) for low, high in ranges)),
            )
        )
        known: dict[int, list[CellSketch]] = {}
        for row_id, size, data in rows:
            try:
                sketch = CellSketch.from_bytes(bytes(data), int(size))
            except SketchFormatError as exc:
                raise AuditStateError(
                    "the overlap audit cannot read the sketch of an answered cell "
                    f"(answered_cells id {row_id}): {exc}; nothing was answered. Operators: "
                    "see docs/privacy.md, 'Exact aggregates: the overlap audit'"
                ) from exc
            known.setdefault(sketch.size, []).append(sketch)
        return known


def _difference(new: CellSketch, old: CellSketch) -> int | None:
    """``|A △ B|`` when below the smaller of the two sketches' thresholds, else ``None``.

    A sketch made under a larger threshold has more sums; its first ones are the sums of the
    smaller threshold, so two sketches always compare on their common prefix. A cell
    answered under a lower threshold therefore protects at that threshold only
    (docs/privacy.md says so)."""
    if new.threshold == old.threshold:
        return new.difference_below(old)
    k = min(new.threshold, old.threshold)
    terms = terms_for(k)
    return CellSketch(k, new.size, new.sums[:terms]).difference_below(
        CellSketch(k, old.size, old.sums[:terms])
    )
