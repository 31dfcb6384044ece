"""Layer 3: per-recipient canary rows.

In a query answer on a dataset that allows them, a real row T whose keyed draw selects it
(``HMAC(K_r, "canary|" + anchor(T))``, one row in ``rate``) is followed by one fake row: T with
its identifying values replaced by keyed, format-preserving substitutes (digits by digits,
letters by letters, same length, check characters recomputed so a validator does not give
the fake away) and every other field copied. The fake identity exists nowhere but in that
recipient's answers, so finding it in a leak points at that recipient alone.

Everything is a keyed function of (recipient, T): fetching the same page twice shows the
same canary, and two recipients get different ones.
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Mapping
from typing import Final

from connectors.base import Row, Value
from gateway.identifiers import (
    USCC_ALPHABET,
    VIN_ALPHABET,
    is_valid_bank_card,
    is_valid_resident_id,
    is_valid_uscc,
    is_valid_vin,
    luhn_check_digit,
    resident_id_check_char,
    uscc_check_char,
    vin_check_char,
)

__all__ = ["canary_row", "selects", "substitute"]

DIGITS: Final = "0123456789"
UPPER: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
LOWER: Final = "abcdefghijklmnopqrstuvwxyz"
_USCC_LETTERS: Final = "".join(ch for ch in USCC_ALPHABET if ch.isalpha())
_VIN_LETTERS: Final = "".join(ch for ch in VIN_ALPHABET if ch.isalpha())
# Common CJK unified ideographs: a fake name or title stays plausible text.
_CJK_FIRST: Final = 0x4E00
_CJK_COUNT: Final = 0x9FA5 - 0x4E00 + 1
_BIRTH_SHIFT_DAYS: Final = 3650
_ATTEMPTS: Final = 8


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.digest(key, message.encode("utf-8"), "sha256")


def selects(recipient: bytes, anchor: str, rate: int) -> bool:
    """Whether the row anchored at ``anchor`` is followed by a canary for this recipient."""
    if rate <= 0:
        return False
    return int.from_bytes(_hmac(recipient, f"canary|{anchor}")[:8], "big") % rate == 0


class _KeyedStream:
    """Unbiased keyed choices: HMAC blocks in counter mode, rejection sampling per draw."""

    def __init__(self, key: bytes, label: str) -> None:
        self._key = key
        self._label = label
        self._counter = 0
        self._buffer = b""

    def _byte(self) -> int:
        if not self._buffer:
            self._buffer = _hmac(self._key, f"{self._label}|{self._counter}")
            self._counter += 1
        value, self._buffer = self._buffer[0], self._buffer[1:]
        return value

    def below(self, bound: int) -> int:
        """A uniform integer in [0, bound), bound <= 2**16."""
        limit = (1 << 16) - (1 << 16) % bound
        while True:
            value = (self._byte() << 8) | self._byte()
            if value < limit:
                return value % bound

    def choice(self, alphabet: str) -> str:
        return alphabet[self.below(len(alphabet))]


def _generic(stream: _KeyedStream, text: str) -> str:
    out = []
    for i, ch in enumerate(text):
        if "0" <= ch <= "9":
            # A leading zero stays a leading zero and a leading digit stays non-zero, so a
            # number keeps its length.
            out.append(ch if ch == "0" and i == 0 else stream.choice(DIGITS[i == 0 :]))
        elif "A" <= ch <= "Z":
            out.append(stream.choice(UPPER))
        elif "a" <= ch <= "z":
            out.append(stream.choice(LOWER))
        elif _CJK_FIRST <= ord(ch) < _CJK_FIRST + _CJK_COUNT:
            out.append(chr(_CJK_FIRST + stream.below(_CJK_COUNT)))
        else:
            out.append(ch)
    return "".join(out)


def _like(stream: _KeyedStream, text: str, letters: str) -> str:
    return "".join(stream.choice(DIGITS if ch.isdigit() else letters) for ch in text)


def _uscc(stream: _KeyedStream, code: str) -> str:
    """Keep registration authority, type and division (the row's district stays true);
    replace the organisation code; recompute the check character."""
    body = code[:8] + _like(stream, code[8:17], _USCC_LETTERS)
    return body + uscc_check_char(body)


def _resident_id(stream: _KeyedStream, number: str) -> str:
    """Keep the region; move the birth date by up to ten years; new sequence and check."""
    born = dt.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    shift = stream.below(2 * _BIRTH_SHIFT_DAYS) - _BIRTH_SHIFT_DAYS
    born = born + dt.timedelta(days=shift or 1)
    body = number[:6] + born.strftime("%Y%m%d") + _like(stream, number[14:17], DIGITS)
    return body + resident_id_check_char(body)


def _vin(stream: _KeyedStream, vin: str) -> str:
    """Keep the manufacturer (WMI); replace the rest; recompute the check character."""
    body = vin[:3] + _like(stream, vin[3:8], _VIN_LETTERS) + "0"
    body += _like(stream, vin[9:], _VIN_LETTERS)
    return body[:8] + vin_check_char(body) + body[9:]


def _bank_card(stream: _KeyedStream, number: str) -> str:
    """Keep the issuer (first 6 digits); new account digits; recompute the Luhn digit."""
    body = number[:6] + _like(stream, number[6:-1], DIGITS)
    return body + luhn_check_digit(body)


def _substitute_text(stream: _KeyedStream, text: str) -> str:
    upper = text.upper()
    if text == upper and is_valid_uscc(text):
        return _uscc(stream, text)
    if text == upper and is_valid_resident_id(text):
        return _resident_id(stream, text)
    if text == upper and is_valid_vin(text):
        return _vin(stream, text)
    if len(text) >= 15 and is_valid_bank_card(text):
        return _bank_card(stream, text)
    return _generic(stream, text)


def substitute(recipient: bytes, anchor: str, field: str, value: Value) -> Value:
    """The canary's value of identifying ``field`` of the row anchored at ``anchor``: same
    type and shape as ``value``, different from it; None when no different value of that
    shape can be made (the row then gets no canary)."""
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        return None
    text = str(value)
    for attempt in range(_ATTEMPTS):
        stream = _KeyedStream(recipient, f"canary-value|{anchor}|{field}|{attempt}")
        fake = _substitute_text(stream, text)
        if fake != text:
            return int(fake) if isinstance(value, int) else fake
    return None


def canary_row(
    recipient: bytes, anchor: str, row: Mapping[str, Value], replaced: tuple[str, ...]
) -> Row | None:
    """The canary derived from real ``row``: fields in ``replaced`` (the identifying ones it
    holds) substituted, the rest copied. None if one of them cannot be substituted."""
    fake: Row = dict(row)
    for field in replaced:
        if field not in row:
            continue
        value = substitute(recipient, anchor, field, row[field])
        if value is None:
            return None
        fake[field] = value
    return fake
