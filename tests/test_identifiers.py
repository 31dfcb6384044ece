"""Check-character algorithms: published examples, edge cases, and properties (a generated
check character validates; any single-character substitution is caught)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.identifiers import (
    USCC_ALPHABET,
    VIN_ALPHABET,
    VIN_VALUES,
    is_valid_bank_card,
    is_valid_mobile,
    is_valid_resident_id,
    is_valid_uscc,
    is_valid_vin,
    luhn_check_digit,
    resident_id_check_char,
    uscc_check_char,
    vin_check_char,
)

DIGITS = "0123456789"


def _substitute(text: str, index: int, alphabet: str, pick: int) -> str:
    """``text`` with the character at ``index`` replaced by a different one of ``alphabet``."""
    others = [c for c in alphabet if c != text[index]]
    return text[:index] + others[pick % len(others)] + text[index + 1 :]


# --- unified social credit code -----------------------------------------------------


def test_uscc_published_example() -> None:
    assert is_valid_uscc("91350100M000100Y43")
    assert uscc_check_char("91350100M000100Y4") == "3"


@pytest.mark.parametrize(
    "code",
    [
        "91350100M000100Y44",  # wrong check character
        "91350100M000100Y4",  # too short
        "91350100M000100Y433",  # too long
        "91350100m000100Y43",  # lower case
        "91350100M000100I43",  # I is not in the alphabet
        "９1350100M000100Y43",  # full-width digit
        "",
    ],
)
def test_uscc_rejects(code: str) -> None:
    assert not is_valid_uscc(code)


def test_uscc_check_char_refuses_bad_body() -> None:
    with pytest.raises(ValueError, match="17 characters"):
        uscc_check_char("9135")
    with pytest.raises(ValueError, match="not a credit-code character"):
        uscc_check_char("91350100O000100Y4")


@given(st.text(alphabet=USCC_ALPHABET, min_size=17, max_size=17))
def test_uscc_generated_check_validates(body: str) -> None:
    assert is_valid_uscc(body + uscc_check_char(body))


@given(
    st.text(alphabet=USCC_ALPHABET, min_size=17, max_size=17),
    st.integers(0, 17),
    st.integers(0, 100),
)
def test_uscc_any_substitution_is_caught(body: str, index: int, pick: int) -> None:
    code = body + uscc_check_char(body)
    assert not is_valid_uscc(_substitute(code, index, USCC_ALPHABET, pick))


# --- resident identity number -------------------------------------------------------


def test_resident_id_published_example() -> None:
    assert is_valid_resident_id("11010519491231002X")
    assert resident_id_check_char("11010519491231002") == "X"


def _rid(region: str, birth: str, seq: str) -> str:
    body = region + birth + seq
    return body + resident_id_check_char(body)


def test_resident_id_birth_date_must_exist() -> None:
    assert is_valid_resident_id(_rid("430104", "20000229", "123"))  # leap year
    assert not is_valid_resident_id(_rid("430104", "19490229", "123"))
    assert not is_valid_resident_id(_rid("430104", "19491301", "123"))
    assert not is_valid_resident_id(_rid("430104", "19490100", "123"))


@pytest.mark.parametrize(
    "number",
    [
        "11010519491231002x",  # lower-case check character
        "110105194912310021",  # wrong check character
        "11010519491231002",  # too short
        "1101051949123100２X",  # full-width digit
        "11010519491231002XX",
    ],
)
def test_resident_id_rejects(number: str) -> None:
    assert not is_valid_resident_id(number)


def test_resident_id_check_char_refuses_bad_body() -> None:
    with pytest.raises(ValueError, match="17 ASCII digits"):
        resident_id_check_char("1101051949123100X")


@given(
    st.text(alphabet=DIGITS, min_size=6, max_size=6),
    st.dates(dt.date(1900, 1, 1), dt.date(2099, 12, 31)),
    st.text(alphabet=DIGITS, min_size=3, max_size=3),
)
def test_resident_id_generated_check_validates(region: str, birth: dt.date, seq: str) -> None:
    assert is_valid_resident_id(_rid(region, birth.strftime("%Y%m%d"), seq))


@given(
    st.text(alphabet=DIGITS, min_size=6, max_size=6),
    st.dates(dt.date(1900, 1, 1), dt.date(2099, 12, 31)),
    st.text(alphabet=DIGITS, min_size=3, max_size=3),
    st.integers(0, 17),
    st.integers(0, 100),
)
def test_resident_id_any_substitution_is_caught(
    region: str, birth: dt.date, seq: str, index: int, pick: int
) -> None:
    number = _rid(region, birth.strftime("%Y%m%d"), seq)
    alphabet = DIGITS + "X" if index == 17 else DIGITS
    assert not is_valid_resident_id(_substitute(number, index, alphabet, pick))


# --- mobile number ------------------------------------------------------------------


@pytest.mark.parametrize("number", ["13800138000", "19912345678", "16612345678"])
def test_mobile_valid(number: str) -> None:
    assert is_valid_mobile(number)


@pytest.mark.parametrize(
    "number",
    ["12800138000", "1380013800", "138001380000", "+8613800138000", "1380013800a", "１3800138000"],
)
def test_mobile_invalid(number: str) -> None:
    assert not is_valid_mobile(number)


@given(st.sampled_from("3456789"), st.text(alphabet=DIGITS, min_size=9, max_size=9))
def test_mobile_property(second: str, rest: str) -> None:
    assert is_valid_mobile("1" + second + rest)


# --- bank card (Luhn) ---------------------------------------------------------------


def test_luhn_published_examples() -> None:
    assert luhn_check_digit("7992739871") == "3"
    assert is_valid_bank_card("4111111111111111")
    assert not is_valid_bank_card("4111111111111112")
    assert not is_valid_bank_card("79927398713")  # Luhn-valid but too short for a card
    assert not is_valid_bank_card("41111111111111111111")  # 20 digits


def test_luhn_check_digit_refuses_non_digits() -> None:
    with pytest.raises(ValueError, match="ASCII digits"):
        luhn_check_digit("62220a")
    with pytest.raises(ValueError, match="ASCII digits"):
        luhn_check_digit("")


@given(st.text(alphabet=DIGITS, min_size=11, max_size=18))
def test_luhn_generated_check_validates(body: str) -> None:
    assert is_valid_bank_card(body + luhn_check_digit(body))


@given(st.text(alphabet=DIGITS, min_size=11, max_size=18), st.integers(0, 18), st.integers(0, 9))
def test_luhn_any_substitution_is_caught(body: str, index: int, pick: int) -> None:
    number = body + luhn_check_digit(body)
    assert not is_valid_bank_card(_substitute(number, index % len(number), DIGITS, pick))


# --- VIN ----------------------------------------------------------------------------


def test_vin_published_examples() -> None:
    assert is_valid_vin("1M8GDM9AXKP042788")
    assert vin_check_char("1M8GDM9A0KP042788") == "X"
    assert is_valid_vin("11111111111111111")


@pytest.mark.parametrize(
    "vin",
    [
        "1M8GDM9A1KP042788",  # wrong check character
        "1M8GDM9AXKP04278",  # too short
        "1M8GDM9AXKP0427O8",  # O is not a VIN character
        "1m8GDM9AXKP042788",  # lower case
    ],
)
def test_vin_rejects(vin: str) -> None:
    assert not is_valid_vin(vin)


def test_vin_check_char_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="17 characters"):
        vin_check_char("1M8GDM9A")
    with pytest.raises(ValueError, match="position 2"):
        vin_check_char("1I8GDM9A0KP042788")


@st.composite
def _vin(draw: st.DrawFn) -> str:
    body = draw(st.text(alphabet=VIN_ALPHABET, min_size=17, max_size=17))
    body = body[:8] + "0" + body[9:]
    return body[:8] + vin_check_char(body) + body[9:]


@given(_vin())
def test_vin_generated_check_validates(vin: str) -> None:
    assert is_valid_vin(vin)


@given(_vin(), st.integers(0, 16), st.integers(0, 100))
def test_vin_substitution_is_caught(vin: str, index: int, pick: int) -> None:
    # Transliteration maps several letters to one number (A, J and 1 are all 1), so only
    # a substitution that changes the number can be caught; every such one is.
    if index == 8:
        alphabet = [c for c in "0123456789X" if c != vin[8]]
    else:
        alphabet = [c for c in VIN_ALPHABET if VIN_VALUES[c] != VIN_VALUES[vin[index]]]
    changed = vin[:index] + alphabet[pick % len(alphabet)] + vin[index + 1 :]
    assert not is_valid_vin(changed)
