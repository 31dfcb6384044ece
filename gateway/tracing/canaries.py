"""Layer 3: per-recipient canary rows.

In a query answer on a dataset that allows them, a real row T whose keyed draw selects it
(``HMAC(K_r, "canary|" + anchor(T))``, one row in ``rate``) brings one fake row into the
page, at a keyed position anywhere in it (:func:`canary_slot`), not next to T.

The fake is a synthetic record, not a copy of T: built from the page's own rows so that it
looks like them, yet repeats no real row's identity or distinctive text.

- identifying values: keyed, format-preserving substitutes of a keyed donor row's values
  (digits by digits, letters by letters, same length, check characters recomputed so a
  validator does not give the fake away), different from every value of the page;
- distinctive text (a field whose values are distinct across the page, such as a company
  or person name or an address): the head of one donor's value joined to the tail of
  another's at a keyed cut, e.g. 长沙星河 + 物流有限公司, never a value of the page;
- everything else (categories, numbers, dates): each field from a keyed donor row, the
  categories and filtered fields from one donor so that they agree with each other and with
  the filters of the query.

The fake identity exists nowhere but in that recipient's answers, so finding it in a leak
points at that recipient alone; removing rows with repeated names, or rows next to a
look-alike, removes no canary.

Everything is a keyed function of (recipient, T, the page's rows): fetching the same page
twice shows the same canary at the same place, and two recipients get different ones.
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Collection, Mapping, Sequence
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

__all__ = ["canary_row", "canary_slot", "selects", "substitute"]

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
# A text field is distinctive (a name, an address) when at least this share of the page's
# values of it are distinct: a canary must not repeat one of them.
_DISTINCT_SHARE: Final = 0.9


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


def _is_identifier(text: str) -> bool:
    """Whether ``text`` is a credit code, resident identity number, VIN or bank card number
    with a valid check character: splicing two of them would break it."""
    upper = text.upper()
    if text == upper and (is_valid_uscc(text) or is_valid_resident_id(text) or is_valid_vin(text)):
        return True
    return len(text) >= 15 and is_valid_bank_card(text)


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


def canary_slot(recipient: bytes, anchor: str, rows: int) -> int:
    """Where the canary selected by the row anchored at ``anchor`` goes in a page of
    ``rows`` real rows: before real row ``slot`` (``rows`` = after the last)."""
    return _KeyedStream(recipient, f"canary-slot|{anchor}").below(rows + 1)


def substitute(
    recipient: bytes,
    anchor: str,
    field: str,
    value: Value,
    avoid: Collection[Value] = (),
) -> Value:
    """The canary's value of identifying ``field`` of the row anchored at ``anchor``: same
    type and shape as ``value``, different from it and from every value in ``avoid``; None
    when no such value can be made (the row then gets no canary)."""
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        return None
    text = str(value)
    for attempt in range(_ATTEMPTS):
        stream = _KeyedStream(recipient, f"canary-value|{anchor}|{field}|{attempt}")
        fake = _substitute_text(stream, text)
        if fake != text:
            out = int(fake) if isinstance(value, int) else fake
            if out not in avoid:
                return out
    return None


def _shared(first: str, second: str) -> int:
    """How many leading characters ``first`` and ``second`` have in common."""
    count = 0
    for a, b in zip(first, second, strict=False):
        if a != b:
            break
        count += 1
    return count


def _splice(stream: _KeyedStream, head: str, tail: str, taken: Collection[str]) -> str | None:
    """The start of ``head`` joined to the end of ``tail``: what the two share at the start
    (湖南省长沙市岳麓区) and at the end (有限公司) is kept once, and the parts in between are
    cut at the same keyed share of each (30 % to 70 %), so a name keeps the shape names have.
    None if every cut gives a value in ``taken`` (or one of the two)."""
    prefix = _shared(head, tail)
    suffix = _shared(head[prefix:][::-1], tail[prefix:][::-1])
    middle_head = head[prefix : len(head) - suffix]
    middle_tail = tail[prefix : len(tail) - suffix]
    if len(middle_head) < 2 or len(middle_tail) < 2:
        return None
    for _ in range(_ATTEMPTS):
        share = 0.3 + 0.4 * stream.below(1001) / 1000
        cut_head = min(len(middle_head) - 1, max(1, round(share * len(middle_head))))
        cut_tail = min(len(middle_tail) - 1, max(1, round(share * len(middle_tail))))
        middle = middle_head[:cut_head] + middle_tail[cut_tail:]
        text = head[:prefix] + middle + head[len(head) - suffix :]
        if text not in taken and text not in (head, tail):
            return text
    return None


def _distinctive(page: Sequence[Mapping[str, Value]], field: str) -> bool:
    values = [row.get(field) for row in page]
    texts = [v for v in values if isinstance(v, str) and v]
    return len(texts) >= 2 and len(set(texts)) >= _DISTINCT_SHARE * len(texts)


def canary_row(
    recipient: bytes,
    anchor: str,
    page: Sequence[Mapping[str, Value]],
    identifying: Sequence[str],
    fixed: Collection[str] = (),
) -> Row | None:
    """The synthetic canary that the row anchored at ``anchor`` selects, made from the
    ``page`` of real rows it was fetched with (module docstring). ``fixed`` are the fields
    the query filters on: they come from one real row of the page, so the canary satisfies
    the filters too. None when the page is too small to hide a record in (fewer than two
    rows) or a value cannot be made."""
    if len(page) < 2:
        return None
    stream = _KeyedStream(recipient, f"canary-row|{anchor}")
    base = page[stream.below(len(page))]
    # The fake identity depends on the base row too: a page that starts elsewhere shows no
    # second canary with the same identity and other values.
    label = f"{anchor}|" + "|".join(str(base.get(field)) for field in identifying)
    fake: Row = {}
    for field in base:
        value = base[field]
        if field in identifying:
            taken = {row.get(field) for row in page}
            made = substitute(recipient, label, field, value, taken)
            if made is None:
                return None
            fake[field] = made
        elif field in fixed or value is None:
            fake[field] = value
        elif isinstance(value, str) and _is_identifier(value):
            # An identifier that is not an identifying field (a legal representative's
            # identity number): a new valid one, as for the identity.
            taken = {row.get(field) for row in page}
            made = substitute(recipient, label, field, value, taken)
            if made is None:
                return None
            fake[field] = made
        elif isinstance(value, str) and _distinctive(page, field):
            others = [row for row in page if row is not base and isinstance(row.get(field), str)]
            if not others:
                return None
            texts = {text for row in page if isinstance(text := row.get(field), str)}
            spliced = None
            for _ in range(_ATTEMPTS):
                donor = others[stream.below(len(others))]
                spliced = _splice(stream, value, str(donor[field]), texts)
                if spliced is not None:
                    break
            if spliced is None:
                return None
            fake[field] = spliced
        elif isinstance(value, str):
            fake[field] = value  # a category: agrees with the base row's other categories
        else:
            fake[field] = page[stream.below(len(page))].get(field)
    return fake
