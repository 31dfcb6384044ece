"""Check-character algorithms of the identifiers found in Chinese public data.

The gateway validates identifiers before they reach a data source (a malformed credit code
is a client mistake, not a miss), and the synthetic data generator uses the same functions
so its fake identifiers pass the same checks real ones do. Every function is pure and
strict: input must already be normalised (ASCII, upper case, no spaces); callers that accept
user input normalise first, so that what was validated is exactly what gets compared.

The check characters themselves come from python-stdnum (``stdnum.cn.uscc``,
``stdnum.cn.ric``, ``stdnum.luhn``), which maintains them. Its ``validate`` functions are not
used: they normalise their input (strip spaces, upper-case) and judge more than the check
(the first 8 credit-code characters must be digits, the region code must be known), while
these functions are strict about form and lenient about the rest, as documented on each.
VINs are computed here: stdnum has no VIN module.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from types import MappingProxyType

from stdnum import luhn
from stdnum.cn import ric, uscc

__all__ = [
    "RESIDENT_ID_WEIGHTS",
    "USCC_ALPHABET",
    "USCC_WEIGHTS",
    "VIN_ALPHABET",
    "VIN_VALUES",
    "VIN_WEIGHTS",
    "is_valid_bank_card",
    "is_valid_mobile",
    "is_valid_resident_id",
    "is_valid_uscc",
    "is_valid_vin",
    "luhn_check_digit",
    "resident_id_check_char",
    "uscc_check_char",
    "vin_check_char",
]

# --- Unified social credit code, GB 32100-2015 ------------------------------------------

#: The 31 characters a credit code may use: digits and upper-case letters without I, O, Z,
#: S and V, which are too easily confused with digits. A character's value is its index.
USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
#: Weight of position i (0-based) is 3**i mod 31.
USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_USCC_VALUE = {ch: i for i, ch in enumerate(USCC_ALPHABET)}


def uscc_check_char(first17: str) -> str:
    """The 18th character of a unified social credit code whose first 17 are ``first17``.

    Raises ``ValueError`` when ``first17`` is not 17 characters of the credit-code alphabet.
    """
    if len(first17) != 17:
        raise ValueError(f"a credit code body has 17 characters, got {len(first17)}")
    for ch in first17:
        if ch not in _USCC_VALUE:
            raise ValueError(
                f"{ch!r} is not a credit-code character (digits and upper-case letters "
                "except I, O, Z, S, V)"
            )
    return uscc.calc_check_digit(first17)


def is_valid_uscc(code: str) -> bool:
    """True when ``code`` is 18 credit-code characters with a correct check character."""
    if len(code) != 18 or any(ch not in _USCC_VALUE for ch in code):
        return False
    return uscc_check_char(code[:17]) == code[17]


# --- Resident identity number, GB 11643-1999 --------------------------------------------

#: Weight of position i (0-based) is 2**(17-i) mod 11.
RESIDENT_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_DIGITS17 = re.compile(r"[0-9]{17}")


def resident_id_check_char(first17: str) -> str:
    """The 18th character (a digit or ``X``) of a resident identity number.

    Raises ``ValueError`` when ``first17`` is not 17 ASCII digits.
    """
    if not _DIGITS17.fullmatch(first17):
        raise ValueError("a resident identity number body is 17 ASCII digits")
    # stdnum's takes the whole number and ignores its last character.
    return ric.calc_check_digit(first17 + "X")


def is_valid_resident_id(number: str) -> bool:
    """True when ``number`` is an 18-character resident identity number whose birth date
    (characters 7-14, ``YYYYMMDD``) is a real calendar date and whose check character is
    right. The check ``X`` must be upper case. The region code is not looked up: codes
    change over time and old numbers keep theirs.
    """
    if len(number) != 18 or not _DIGITS17.fullmatch(number[:17]):
        return False
    try:
        dt.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return False
    return resident_id_check_char(number[:17]) == number[17]


# --- Mobile number ----------------------------------------------------------------------

_MOBILE = re.compile(r"1[3-9][0-9]{9}")


def is_valid_mobile(number: str) -> bool:
    """True for an 11-digit mainland mobile number (``1`` then ``3``-``9``), no prefix."""
    return _MOBILE.fullmatch(number) is not None


# --- Bank card number, Luhn (ISO/IEC 7812-1) --------------------------------------------

_CARD = re.compile(r"[0-9]{12,19}")


def luhn_check_digit(partial: str) -> str:
    """The Luhn digit to append to ``partial`` (ASCII digits, at least one).

    Raises ``ValueError`` for anything else.
    """
    if not partial or not all("0" <= ch <= "9" for ch in partial):
        raise ValueError("a card number body is one or more ASCII digits")
    return luhn.calc_check_digit(partial)


def is_valid_bank_card(number: str) -> bool:
    """True for 12-19 ASCII digits passing the Luhn check.

    ISO/IEC 7812 allows up to 19 digits; UnionPay cards have 16-19. A few old domestic
    debit cards were issued without a valid Luhn digit, so a ``False`` here is a strong
    hint, not proof, that a number was mistyped.
    """
    if _CARD.fullmatch(number) is None:
        return False
    return luhn.checksum(number) == 0


# --- Vehicle identification number, ISO 3779 / GB 16735 --------------------------------

#: Characters a VIN may use: digits and upper-case letters without I, O and Q.
VIN_ALPHABET = "0123456789ABCDEFGHJKLMNPRSTUVWXYZ"
#: Position 9 (0-based index 8) holds the check character and has weight 0.
VIN_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
#: ISO 3779 transliteration of each VIN character to the number the check sum uses.
VIN_VALUES: Mapping[str, int] = MappingProxyType(
    {str(d): d for d in range(10)}
    | dict(zip("ABCDEFGH", range(1, 9), strict=True))
    | dict(zip("JKLMN", range(1, 6), strict=True))
    | {"P": 7, "R": 9}
    | dict(zip("STUVWXYZ", range(2, 10), strict=True))
)
_VIN_VALUE = VIN_VALUES


def vin_check_char(vin: str) -> str:
    """The check character (``0``-``9`` or ``X``) for the 17-character ``vin``.

    The character already at position 9 is ignored (its weight is 0), so pass the VIN with
    any placeholder there, e.g. ``0``. Raises ``ValueError`` when ``vin`` is not 17 VIN
    characters apart from that position.
    """
    if len(vin) != 17:
        raise ValueError(f"a VIN has 17 characters, got {len(vin)}")
    total = 0
    for i, (ch, weight) in enumerate(zip(vin, VIN_WEIGHTS, strict=True)):
        if i == 8:
            continue
        value = _VIN_VALUE.get(ch)
        if value is None:
            raise ValueError(
                f"{ch!r} at position {i + 1} is not a VIN character "
                "(digits and upper-case letters except I, O, Q)"
            )
        total += value * weight
    remainder = total % 11
    return "X" if remainder == 10 else str(remainder)


def is_valid_vin(vin: str) -> bool:
    """True when ``vin`` is 17 VIN characters and position 9 holds the right check
    character. Vehicles built in China must carry one (GB 16735); some imports may not."""
    if len(vin) != 17 or any(ch not in _VIN_VALUE for ch in vin):
        return False
    return vin_check_char(vin) == vin[8]
