"""A fixed-size sketch of a set that tells exactly how far apart two sets are, when close.

The overlap audit (docs/privacy.md, "Exact aggregates: the overlap audit") must decide, for
a new aggregate cell and every cell answered before, whether their subject sets differ by
fewer than ``k`` elements, without keeping the subjects. The sketch of a set ``S`` of
elements of the prime field GF(p), p = 2^61 - 1, is its power sums

    s_j(S) = sum(x^j for x in S) mod p,    j = 1 .. N,   N = 2(k - 1) + 4.

For two sets A and B the differences ``u_j = s_{j+1}(A) - s_{j+1}(B)`` are a sum of
geometric sequences, one per element of the symmetric difference A △ B with that element as
its ratio (coefficient x for x in A \\ B, -y for y in B \\ A, all non-zero). Such a sequence
satisfies a linear recurrence whose order is exactly ``D = |A △ B|`` and no shorter one, and
Berlekamp-Massey finds the shortest recurrence of ``N`` terms; it is the true one whenever
``N >= 2D``. So for ``D <= k + 1`` the linear complexity ``L`` of the ``N`` differences equals
``D``. For larger ``D`` the ``N`` terms would need to satisfy a recurrence of order below ``k``
by accident, a polynomial condition on the (keyed, unpredictable) elements that holds with
probability of order k N / p, about 2^-50 for k = 10 (Schwartz-Zippel). Hence the test
``L < k`` decides ``D < k`` exactly for differences up to ``k + 1`` and with negligible
error beyond.

Why not a plain list of hashed subjects: it grows with the cell (a 10,000-subject cell would
cost 80 kB per answer) and would keep who was in every answered cell; the sketch is
``8 N + 2`` bytes whatever the cell's size (178 bytes for k = 10).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "MAX_THRESHOLD",
    "PRIME",
    "CellSketch",
    "SketchFormatError",
    "linear_complexity",
    "terms_for",
]

#: The Mersenne prime 2^61 - 1: elements and sums fit in 8 bytes, reduction is cheap.
PRIME: Final = (1 << 61) - 1
#: The largest threshold whose sketch fits the store's 512-byte column (8 N + 2 <= 512).
MAX_THRESHOLD: Final = 30
_VERSION: Final = 1


class SketchFormatError(ValueError):
    """Stored sketch bytes that are not a sketch of this format (another version or a
    different threshold): the caller decides what that means for its audit."""


def terms_for(threshold: int) -> int:
    """How many power sums decide differences below ``threshold``: 2(k - 1) + 4, the 2(k - 1)
    Berlekamp-Massey needs for a difference of k - 1 plus a margin of two orders, so that a
    difference of k or k + 1 is still measured exactly rather than by chance."""
    if not 2 <= threshold <= MAX_THRESHOLD:
        raise ValueError(f"the threshold must be from 2 to {MAX_THRESHOLD}, got {threshold}")
    return 2 * (threshold - 1) + 4


def _power_sums(elements: Sequence[int], terms: int) -> tuple[int, ...]:
    # Column by column: one list comprehension per power keeps the loop tight, about twice
    # as fast as a Python loop per element (docs/privacy.md gives the measured cost). The
    # powers are only partly reduced, (y & p) + (y >> 61), congruent to y since 2^61 = 1
    # (mod p) and cheaper than a division; each round adds less than p to their bound, so
    # they stay small integers, and the sums are reduced exactly at the end.
    p = PRIME
    current = list(elements)
    sums = [sum(current) % p]
    for _ in range(terms - 1):
        current = [((y := c * x) & p) + (y >> 61) for c, x in zip(current, elements, strict=True)]
        sums.append(sum(current) % p)
    return tuple(sums)


def linear_complexity(sequence: Sequence[int], *, stop_at: int | None = None) -> int:
    """The length of the shortest linear recurrence over GF(PRIME) that generates
    ``sequence`` (Berlekamp-Massey). With ``stop_at``, stops as soon as the length reaches it
    (the caller only needs to know it is that large) and returns ``stop_at``."""
    p = PRIME
    c = [1]  # connection polynomial C(z), c[0] = 1
    b = [1]  # C before the last length change
    length, shift, last = 0, 1, 1
    for n, term in enumerate(sequence):
        discrepancy = term
        for i in range(1, length + 1):
            discrepancy = (discrepancy + c[i] * sequence[n - i]) % p
        if discrepancy == 0:
            shift += 1
            continue
        factor = discrepancy * pow(last, p - 2, p) % p
        previous = c[:]
        if len(c) < len(b) + shift:
            c.extend([0] * (len(b) + shift - len(c)))
        for i, coefficient in enumerate(b):
            c[i + shift] = (c[i + shift] - factor * coefficient) % p
        if 2 * length <= n:
            length = n + 1 - length
            b, last, shift = previous, discrepancy, 1
            if stop_at is not None and length >= stop_at:
                return stop_at
        else:
            shift += 1
    return length


@dataclass(frozen=True, slots=True)
class CellSketch:
    """The power sums of one cell's elements (non-zero field elements, one per subject and
    its contribution), with the number of elements and the threshold they were made for."""

    threshold: int
    size: int
    sums: tuple[int, ...]

    @classmethod
    def of(cls, elements: Iterable[int], threshold: int) -> CellSketch:
        """Sketch a set of distinct elements of [1, PRIME). Repeating an element would count
        it twice; the audit's elements are distinct by construction (one per subject)."""
        items = list(elements)
        return cls(threshold, len(items), _power_sums(items, terms_for(threshold)))

    def difference_below(self, other: CellSketch) -> int | None:
        """``|A △ B|`` when it is below the threshold (0: the same set), else ``None``.

        Raises :class:`ValueError` for sketches made for different thresholds: their sums do
        not compare."""
        if other.threshold != self.threshold:
            raise ValueError("sketches of different thresholds do not compare")
        k = self.threshold
        if abs(self.size - other.size) >= k:  # |A △ B| >= ||A| - |B||
            return None
        p = PRIME
        deltas = [(a - b) % p for a, b in zip(self.sums, other.sums, strict=True)]
        found = linear_complexity(deltas, stop_at=k)
        return found if found < k else None

    def to_bytes(self) -> bytes:
        """Version, threshold, then the sums as 8-byte big-endian integers."""
        return bytes((_VERSION, self.threshold)) + b"".join(s.to_bytes(8, "big") for s in self.sums)

    @classmethod
    def from_bytes(cls, data: bytes, size: int) -> CellSketch:
        """Read a sketch written by :meth:`to_bytes`; ``size`` is stored beside it.

        Raises :class:`SketchFormatError` for another version, a threshold outside the
        supported range, a length that does not match the threshold, or a sum not reduced."""
        if len(data) < 2 or data[0] != _VERSION:
            raise SketchFormatError("not a version-1 cell sketch")
        threshold = data[1]
        try:
            terms = terms_for(threshold)
        except ValueError as exc:
            raise SketchFormatError(str(exc)) from exc
        if len(data) != 2 + 8 * terms:
            raise SketchFormatError(
                f"a sketch for threshold {threshold} has {2 + 8 * terms} bytes, not {len(data)}"
            )
        sums = tuple(int.from_bytes(data[i : i + 8], "big") for i in range(2, len(data), 8))
        if any(s >= PRIME for s in sums):
            raise SketchFormatError("a power sum is not reduced modulo 2^61 - 1")
        return cls(threshold, size, sums)
