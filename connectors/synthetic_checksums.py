"""Precomputed partial check sums, so the generator writes valid identifiers in one pass.

A credit code, resident identity number, organisation code or VIN is built from parts whose
weighted digit sums are looked up here instead of summed per row; the check character then
costs a few table lookups and additions (see the speed note in :mod:`connectors.synthetic`).
"""

from __future__ import annotations

from collections.abc import Sequence

from connectors.synthetic_vocabulary import (
    BIRTH_REGIONS,
    DISTRICTS,
    weighted_table,
)
from gateway.identifiers import (
    RESIDENT_ID_WEIGHTS,
    USCC_ALPHABET,
    USCC_WEIGHTS,
    VIN_WEIGHTS,
)

__all__ = [
    "BIRTH_REGION_TABLE",
    "ORG_CHECK",
    "ORG_HI",
    "ORG_LO",
    "ORG_MULTIPLIER",
    "RESIDENT_CHECK",
    "RID_MONTH_DAY",
    "RID_SEQ",
    "RID_YEAR",
    "USCC_HI",
    "USCC_LO",
    "USCC_PREFIX",
    "USCC_VALUE",
    "VIN_PLANTS",
    "VIN_SERIAL_HI",
    "VIN_SERIAL_LO",
    "VIN_SERIAL_MULTIPLIER",
]

_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)  # GB 11714 organization code

ORG_MULTIPLIER = 73_939_133  # coprime with 10**8, so i -> i * M + c is a bijection

VIN_SERIAL_MULTIPLIER = 482_711  # coprime with 10**6

VIN_PLANTS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"

USCC_VALUE = {ch: i for i, ch in enumerate(USCC_ALPHABET)}


def _digit_sums(width: int, weights: Sequence[int]) -> tuple[int, ...]:
    """Weighted digit sum of every ``width``-digit number (leading zeros included)."""
    sums = [0]
    for k in range(width):
        sums = [prev + d * weights[k] for prev in sums for d in range(10)]
    return tuple(sums)


RESIDENT_CHECK = "10X98765432"

RID_YEAR = _digit_sums(4, RESIDENT_ID_WEIGHTS[6:10])

RID_MONTH_DAY = _digit_sums(4, RESIDENT_ID_WEIGHTS[10:14])

RID_SEQ = _digit_sums(3, RESIDENT_ID_WEIGHTS[14:17])


#: Birth regions as drawn: each with its share of the identity-number check sum.
BIRTH_REGION_TABLE = tuple(
    (code, sum(int(c) * w for c, w in zip(code, RESIDENT_ID_WEIGHTS, strict=False)))
    for code in weighted_table(BIRTH_REGIONS)
)

ORG_HI = _digit_sums(4, _ORG_WEIGHTS[:4])

ORG_LO = _digit_sums(4, _ORG_WEIGHTS[4:])

USCC_HI = _digit_sums(4, USCC_WEIGHTS[8:12])

USCC_LO = _digit_sums(4, USCC_WEIGHTS[12:16])


#: GB 11714 check character for each organization-code sum modulo 11.
ORG_CHECK = tuple("0" if k == 0 else "X" if k == 1 else str(11 - k) for k in range(11))

USCC_PREFIX = {
    code: sum(USCC_VALUE[c] * w for c, w in zip("91" + code, USCC_WEIGHTS, strict=False))
    for code, _w in DISTRICTS.values()
}

VIN_SERIAL_HI = _digit_sums(3, VIN_WEIGHTS[11:14])

VIN_SERIAL_LO = _digit_sums(3, VIN_WEIGHTS[14:17])
