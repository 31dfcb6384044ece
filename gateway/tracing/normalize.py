"""One normalisation of cell text, used identically at delivery and at trace time.

A leaked file has been through the leaker's tools: a spreadsheet re-formats numbers (15
significant digits, no leading zeros, thousands separators, exponents), dates and spacing;
people change case and whitespace. Hashing the *normalised* text on both sides makes those
changes invisible to the delivery index, so a row is recognised whatever was done to it.

Rules, in order:

1. NFKC (full-width forms become ASCII), then upper case, all whitespace removed.
2. A date ``2020-01-05``, ``2020/1/5``, ``2020.1.5``, ``2020年1月5日`` (optionally followed
   by a midnight time, as spreadsheets write dates) becomes ``2020-01-05``. ``1/5/2020``
   is read as month/day/year, Excel's US default; a day-first ``5/1/2020`` is therefore
   read as 1 May. Rows written day-first by a European spreadsheet lose this one field.
3. A number (optional sign, digits with optional ``,`` thousands separators, optional
   fraction, optional exponent) becomes a canonical decimal rounded to 15 significant
   digits, without leading zeros or trailing fractional zeros: ``0012345`` → ``12345``,
   ``4.30102199001011E+17`` → ``430102199001011000``, ``1,234.50`` → ``1234.5``.

Rounding to 15 digits is what makes an 18-digit number survive a spreadsheet; a tool that
*truncates* instead of rounding shifts the 15th digit by one, which
:func:`normalize_variants` covers at trace time.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import unicodedata
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from typing import Final

__all__ = ["SIGNIFICANT_DIGITS", "normalize", "normalize_variants", "parse_number"]

SIGNIFICANT_DIGITS: Final = 15
# Numbers beyond this magnitude are left as text: their canonical form would be enormous.
_MAX_EXPONENT: Final = 40
_CONTEXT: Final = Context(prec=SIGNIFICANT_DIGITS, rounding=ROUND_HALF_EVEN)

_WHITESPACE: Final = re.compile(r"\s+")
# A mantissa with at least one digit: "1,234.5", "12", "1.", ".5"; then an optional exponent.
_NUMBER: Final = re.compile(
    r"[+-]?(?:(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]*)?|\.[0-9]+)(?:E[+-]?[0-9]+)?"
)
_MIDNIGHT: Final = r"(?:T?0?0:00(?::00(?:\.0+)?)?)?"
_YMD: Final = re.compile(rf"([0-9]{{4}})[-/.]([0-9]{{1,2}})[-/.]([0-9]{{1,2}}){_MIDNIGHT}")
_YMD_CJK: Final = re.compile(rf"([0-9]{{4}})年([0-9]{{1,2}})月([0-9]{{1,2}})日?{_MIDNIGHT}")
_MDY: Final = re.compile(rf"([0-9]{{1,2}})/([0-9]{{1,2}})/([0-9]{{4}}){_MIDNIGHT}")


def _squash(value: str) -> str:
    if value.isascii():
        # NFKC leaves ASCII alone: the common case, and the hot path of every answer.
        return "".join(value.upper().split())
    # Until stable: upper-casing and removing spaces can each bring characters together
    # that NFKC composes (a spacing diaeresis becomes a space and a combining mark).
    text = value
    for _ in range(4):
        squashed = _WHITESPACE.sub("", unicodedata.normalize("NFKC", text).upper())
        squashed = unicodedata.normalize("NFKC", squashed)
        if squashed == text:
            break
        text = squashed
    return text


def _date(text: str) -> str | None:
    if len(text) > 32 or not text[:1].isdigit():
        return None
    if "-" not in text and "/" not in text and "." not in text and "年" not in text:
        return None  # every date form below has one of these separators
    for pattern, order in ((_YMD, (1, 2, 3)), (_YMD_CJK, (1, 2, 3)), (_MDY, (3, 1, 2))):
        match = pattern.fullmatch(text)
        if match is None:
            continue
        year, month, day = (int(match.group(i)) for i in order)
        try:
            return dt.date(year, month, day).isoformat()
        except ValueError:
            return None
    return None


def _decimal(text: str) -> Decimal | None:
    """``text`` (already squashed) as a finite decimal, or None if it is not a number."""
    if len(text) > 64 or _NUMBER.fullmatch(text) is None:
        return None
    try:
        value = Decimal(text.replace(",", ""))
    except InvalidOperation:
        return None
    if not value.is_finite() or (value and abs(value.adjusted()) > _MAX_EXPONENT):
        return None
    return value


def _canonical(value: Decimal) -> str:
    rounded = _CONTEXT.plus(value)
    if not rounded:
        return "0"
    text = format(rounded, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def parse_number(value: str) -> Decimal | None:
    """The number a cell shows, exactly (not rounded), or None: what a mark reader needs."""
    return _decimal(_squash(value))


@functools.lru_cache(maxsize=1 << 16)
def normalize(value: str) -> str:
    """The canonical form of one cell's text (module docstring). Pure, hence cached:
    answers and leaked files repeat the same districts, industries and statuses."""
    text = _squash(value)
    date = _date(text)
    if date is not None:
        return date
    number = _decimal(text)
    if number is not None:
        return _canonical(number)
    return text


def normalize_variants(value: str) -> tuple[str, ...]:
    """:func:`normalize` first, then what the original may have normalised to if a tool
    *truncated* a longer number to 15 significant digits (rounding would have given one
    unit more in the 15th digit). Only integers of 16 or more digits showing at most 15
    significant ones have a variant: shorter numbers are kept exactly by every
    spreadsheet, and longer ones showing more digits were not cut."""
    text = _squash(value)
    canonical = normalize(value)
    number = _decimal(text) if _date(text) is None else None
    if number is None or number != number.to_integral_value() or abs(number) < 10**15:
        return (canonical,)
    rounded = _CONTEXT.plus(number)
    if rounded != number:
        return (canonical,)
    sign, digits, exponent = rounded.as_tuple()
    assert isinstance(exponent, int)
    unit = Decimal((0, (1,), exponent + len(digits) - SIGNIFICANT_DIGITS))
    bumped = rounded - unit if sign else rounded + unit
    return (canonical, _canonical(bumped))
