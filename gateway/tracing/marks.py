"""Layer 2: a keyed per-recipient mark in values that tolerate it (Agrawal and Kiernan).

A dataset field may declare a *carrier* (``FieldSpec.mark``):

``digit:N``
    A number delivered with N decimal places. The parity of its last kept digit carries
    one bit; embedding moves the value by at most one unit in that place (0.01 for N=2),
    never below zero or across its sign. Read back by parsing the number and re-quantising
    it to N places, so spreadsheets (15 significant digits, dropped trailing zeros),
    thousands separators and spacing do not matter.
``mask``
    A masked field whose mask does not preserve length (the ``address`` rule's ``****``
    tail, the ``email`` rule's ``***``): one star more or not carries one bit. Case,
    spacing and encodings do not touch stars.

Each (recipient, row, field) has one bit, the low bit of ``HMAC(K_r, anchor | field)``,
where ``K_r`` is the recipient's key for the dataset and the anchor is the row's first
identifying value delivered in clear. Bits are keyed-random and independent of the data,
so for anyone but the recipient a leaked cell matches with probability exactly 1/2; k
matches in n cells has p-value P(Binom(n, 1/2) >= k) (:func:`binomial_tail`). The same row
always gets the same bits, so re-fetching and averaging does not wash the mark out.

Free text carries no mark: the carriers that survive whitespace and case changes (word
order, synonyms, punctuation variants) either change the meaning or are undone by the
NFKC normalisation any tool may apply; docs/tracing.md explains.
"""

from __future__ import annotations

import hmac
import math
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from fractions import Fraction
from typing import Any, Final

from gateway.catalog.models import Dataset, FieldSpec
from gateway.privacy.masking import MaskRule
from gateway.tracing.normalize import SIGNIFICANT_DIGITS, parse_number

__all__ = [
    "Carrier",
    "DigitCarrier",
    "MaskCarrier",
    "binomial_tail",
    "carrier_of",
    "embed",
    "expected_bit",
    "mark_bits",
    "mark_id",
    "read_bit",
    "recipient_key",
]

ADDRESS_STARS: Final = 4
EMAIL_STARS: Final = 3
_EXACT_LIMIT: Final = 1000
_EMAIL_LOCAL: Final = re.compile(r"(?P<head>[^*@]?)(?P<stars>\*+)@")


@dataclass(frozen=True, slots=True)
class DigitCarrier:
    """Parity of the last of ``places`` decimal places."""

    places: int

    @property
    def readable_below(self) -> int:
        """Values of this many units or more lose their last digit in a spreadsheet."""
        return 10**SIGNIFICANT_DIGITS


@dataclass(frozen=True, slots=True)
class MaskCarrier:
    """Star count of a length-hiding mask: the rule's base count, or one more."""

    rule: MaskRule

    @property
    def base(self) -> int:
        return ADDRESS_STARS if self.rule is MaskRule.ADDRESS else EMAIL_STARS


Carrier = DigitCarrier | MaskCarrier


def carrier_of(spec: FieldSpec) -> Carrier | None:
    """The carrier a catalog field declares (validated by :class:`FieldSpec`), or None."""
    if spec.mark is None:
        return None
    if spec.mark.startswith("digit:"):
        return DigitCarrier(int(spec.mark.removeprefix("digit:")))
    if spec.sensitive is None:
        return None
    return MaskCarrier(spec.sensitive)


def carriers(dataset: Dataset) -> dict[str, Carrier]:
    """Every field of ``dataset`` that carries a mark, by name."""
    out: dict[str, Carrier] = {}
    for spec in dataset.fields:
        carrier = carrier_of(spec)
        if carrier is not None:
            out[spec.name] = carrier
    return out


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.digest(key, message.encode("utf-8"), "sha256")


def recipient_key(mark_key: bytes, dataset_id: str, merchant_id: str) -> bytes:
    """``K_r``: one key per recipient and dataset, so bits of two datasets are independent."""
    return _hmac(mark_key, f"recipient|{dataset_id}|{merchant_id}")


def mark_id(mark_key: bytes, merchant_id: str) -> str:
    """The mark identifier a delivery's call record carries (``mk1:`` + 16 hex)."""
    return "mk1:" + _hmac(mark_key, f"mark-id|{merchant_id}").hex()[:16]


def mark_bits(recipient: bytes, anchor: str, field: str) -> tuple[int, int]:
    """The bit ``field`` of the row anchored at ``anchor`` carries for the recipient, and
    whether a digit that must change moves up (1) or down (0): two bits of one HMAC, so
    the marked values carry no visible bias either way."""
    first = _hmac(recipient, f"{anchor}|{field}")[0]
    return first & 1, (first >> 1) & 1


def expected_bit(recipient: bytes, anchor: str, field: str) -> int:
    """The bit ``field`` of the row anchored at ``anchor`` carries for the recipient."""
    return mark_bits(recipient, anchor, field)[0]


def _units(value: Decimal, places: int) -> int | None:
    """``value`` as an integer count of 10^-places, rounded half-even; None if absurd."""
    if not value.is_finite() or (value and value.adjusted() > SIGNIFICANT_DIGITS + 3):
        return None
    try:
        return int(value.scaleb(places).to_integral_value(rounding=ROUND_HALF_EVEN))
    except InvalidOperation:
        return None


def _digit_embed(carrier: DigitCarrier, value: Any, bit: int, up: int) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    integer = isinstance(value, int)
    try:
        number = Decimal(value) if integer else Decimal(str(value))
    except InvalidOperation:
        return value
    units = _units(number, carrier.places)
    if units is None:
        return value
    magnitude = abs(units)
    if magnitude < carrier.readable_below and magnitude % 2 != bit:
        magnitude = magnitude + 1 if up or magnitude == 0 else magnitude - 1
    units = -magnitude if units < 0 else magnitude
    if integer and carrier.places == 0:
        return units
    quantum = Decimal(1).scaleb(-carrier.places)
    return format((Decimal(units) * quantum).quantize(quantum), "f")


def _mask_embed(carrier: MaskCarrier, value: Any, bit: int) -> Any:
    if not isinstance(value, str):
        return value
    if carrier.rule is MaskRule.ADDRESS:
        tail = "*" * ADDRESS_STARS
        if not value.endswith(tail) or value.endswith(tail + "*"):
            return value
        return value + "*" * bit
    match = _EMAIL_LOCAL.match(value)
    if match is None or len(match.group("stars")) != EMAIL_STARS:
        return value
    stars = "*" * (EMAIL_STARS + bit)
    return match.group("head") + stars + value[match.end() - 1 :]


def embed(carrier: Carrier, value: Any, bit: int, up: int = 1) -> Any:
    """``value`` (as rendered for the answer) carrying ``bit``; unchanged when it cannot
    carry one (empty, mis-shaped, too large to survive a spreadsheet). A digit carrier also
    quantises the value to its places, as the declaration promises."""
    if isinstance(carrier, DigitCarrier):
        return _digit_embed(carrier, value, bit, up)
    return _mask_embed(carrier, value, bit)


def read_bit(carrier: Carrier, raw: str) -> int | None:
    """The bit a leaked cell's *raw* text carries, or None when it carries none readably."""
    if isinstance(carrier, DigitCarrier):
        number = parse_number(raw)
        if number is None:
            return None
        units = _units(number, carrier.places)
        if units is None or abs(units) >= carrier.readable_below:
            return None
        return abs(units) % 2
    text = "".join(raw.split())
    if carrier.rule is MaskRule.ADDRESS:
        stars = len(text) - len(text.rstrip("*"))
    else:
        match = _EMAIL_LOCAL.match(text)
        if match is None:
            return None
        stars = len(match.group("stars"))
    bit = stars - carrier.base
    return bit if bit in (0, 1) else None


def binomial_tail(n: int, k: int) -> float:
    """P(X >= k) for X ~ Binom(n, 1/2): exact up to 1000 trials, in log space beyond
    (relative error about 1e-9; values below about 1e-308 become 0.0)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if n <= _EXACT_LIMIT:
        total = sum(math.comb(n, i) for i in range(k, n + 1))
        return float(Fraction(total, 1 << n))
    return _log_tail(n, k)


def _log_tail(n: int, k: int) -> float:
    """:func:`binomial_tail` summed in log space from the largest term outwards, stopping
    once terms fall below e^-60 of it; the lower tail is summed and subtracted when
    ``k`` is below the mean, so the sum always starts at its largest term."""
    upper = 2 * k >= n
    indices = range(k, n + 1) if upper else range(k - 1, -1, -1)
    log_norm = math.lgamma(n + 1) - n * math.log(2)
    logs: list[float] = []
    for i in indices:
        term = log_norm - math.lgamma(i + 1) - math.lgamma(n - i + 1)
        logs.append(term)
        if term < logs[0] - 60:
            break
    peak = max(logs)
    log_sum = peak + math.log(sum(math.exp(t - peak) for t in logs))
    tail = math.exp(log_sum) if log_sum > -745 else 0.0
    return min(1.0, tail) if upper else max(0.0, 1.0 - tail)
