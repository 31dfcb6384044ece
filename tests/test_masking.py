"""Masking rules: documented formats, fail-closed handling, and properties over many inputs."""

from __future__ import annotations

import decimal
import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from gateway.errors import ValidationError
from gateway.privacy.masking import COMPOUND_SURNAMES, MaskRule, mask, parse_mask_rule

DIGITS = "0123456789"
USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
# Rules whose output has the input's length, character for character.
POSITIONAL = (
    MaskRule.RESIDENT_ID,
    MaskRule.MOBILE,
    MaskRule.NAME,
    MaskRule.BANK_CARD,
    MaskRule.USCC,
)


def _m(rule: MaskRule, value: object) -> str:
    out = mask(rule, value)
    assert out is not None
    return out


# -- documented examples --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "value", "expected"),
    [
        (MaskRule.RESIDENT_ID, "43010219900307123X", "430**************X"),
        (MaskRule.RESIDENT_ID, "430102199003071234", "430**************4"),
        (MaskRule.RESIDENT_ID, "43010219900307123x", "430**************x"),
        (MaskRule.RESIDENT_ID, "430102900307123", "430************"),
        (MaskRule.MOBILE, "13812345678", "138****5678"),
        (MaskRule.MOBILE, "+8613812345678", "+86138****5678"),
        (MaskRule.MOBILE, "+86 13812345678", "+86 138****5678"),
        (MaskRule.MOBILE, "0086-13812345678", "0086-138****5678"),
        (MaskRule.NAME, "张三", "张*"),
        (MaskRule.NAME, "张三丰", "张**"),
        (MaskRule.NAME, "欧阳修", "欧阳*"),
        (MaskRule.NAME, "司马相如", "司马**"),
        (MaskRule.NAME, "欧阳", "欧*"),
        (MaskRule.NAME, "王", "*"),
        (MaskRule.NAME, "阿卜杜拉·买买提", "阿*******"),
        (MaskRule.ADDRESS, "湖南省长沙市岳麓区麓山南路932号", "湖南省长沙市岳麓区****"),
        (MaskRule.ADDRESS, "北京市海淀区中关村大街1号", "北京市海淀区****"),
        (MaskRule.ADDRESS, "上海市浦东新区世纪大道100号", "上海市浦东新区****"),
        (MaskRule.ADDRESS, "长沙市芙蓉区五一大道", "长沙市芙蓉区****"),
        (MaskRule.ADDRESS, "湖南省长沙县星沙街道", "湖南省长沙县****"),
        (MaskRule.ADDRESS, "湖南省长沙市浏阳市集里街道", "湖南省长沙市浏阳市****"),
        (MaskRule.ADDRESS, "浙江省杭州市西湖区文三路", "浙江省杭州市西湖区****"),
        (MaskRule.ADDRESS, "江苏省镇江市京口区正东路", "江苏省镇江市京口区****"),
        (MaskRule.ADDRESS, "湖南省永州市道县濂溪街道", "湖南省永州市道县****"),
        (
            MaskRule.ADDRESS,
            "新疆维吾尔自治区乌鲁木齐市天山区解放南路",
            "新疆维吾尔自治区乌鲁木齐市天山区****",
        ),
        (
            MaskRule.ADDRESS,
            "云南省西双版纳傣族自治州景洪市勐泐大道",
            "云南省西双版纳傣族自治州景洪市****",
        ),
        (
            MaskRule.ADDRESS,
            "内蒙古自治区锡林郭勒盟锡林浩特市",
            "内蒙古自治区锡林郭勒盟锡林浩特市****",
        ),
        # No county-level unit: the recognised province/prefecture part only.
        (MaskRule.ADDRESS, "广东省东莞市南城街道xx小区3栋", "广东省东莞市****"),
        (MaskRule.ADDRESS, "湖南省长沙市农贸市场", "湖南省长沙市****"),
        (MaskRule.ADDRESS, "湖南省长沙市金星社区", "湖南省长沙市****"),
        # Nothing recognised: at most 6 characters, none from a house number, at most half.
        (MaskRule.ADDRESS, "中关村大街1号", "中关村****"),
        (MaskRule.ADDRESS, "麓山南路十二号院内东侧", "麓山南路十****"),
        (MaskRule.ADDRESS, "１２号", "****"),
        (MaskRule.BANK_CARD, "6222021234567890123", "622202*********0123"),
        (MaskRule.BANK_CARD, "6222 0212 3456 7890 123", "6222 02** **** ***0 123"),
        (MaskRule.BANK_CARD, "622202123456789", "622202*****6789"),
        (MaskRule.USCC, "91430100MA4L16JK5X", "91430100*********X"),
        (MaskRule.USCC, "91430100ma4l16jk5x", "91430100*********x"),
        (MaskRule.EMAIL, "zhang.san@example.com.cn", "z***@example.com.cn"),
        (MaskRule.EMAIL, "z@example.com", "***@example.com"),
    ],
)
def test_documented_formats(rule: MaskRule, value: str, expected: str) -> None:
    assert mask(rule, value) == expected


@pytest.mark.parametrize(
    ("rule", "value"),
    [
        (MaskRule.RESIDENT_ID, "4301021990030712"),  # 16 digits
        (MaskRule.RESIDENT_ID, "43010219900307123Y"),
        (MaskRule.RESIDENT_ID, "４３０１０２１９９００３０７１２３Ｘ"),  # full-width
        (MaskRule.MOBILE, "1381234567"),
        (MaskRule.MOBILE, "138-1234-5678"),
        (MaskRule.MOBILE, "23812345678"),
        (MaskRule.NAME, "张3"),
        (MaskRule.NAME, " 张三"),
        (MaskRule.NAME, ""),
        (MaskRule.BANK_CARD, "62220212345678"),  # 14 digits: too little left hidden
        (MaskRule.BANK_CARD, "62220212345678901234"),  # 20 digits
        (MaskRule.BANK_CARD, "6222-0212 3456x7890"),
        (MaskRule.USCC, "91430100MA4L16JK5I"),  # I is not in the alphabet
        (MaskRule.USCC, "91430100MA4L16JK5"),
        (MaskRule.EMAIL, "no-at-sign"),
        (MaskRule.EMAIL, "a@b"),
        (MaskRule.EMAIL, "a@b@example.com"),
        (MaskRule.ADDRESS, "   "),
    ],
)
def test_misshapen_values_are_fully_masked(rule: MaskRule, value: str) -> None:
    assert mask(rule, value) == "*" * len(value)


def test_none_and_redact() -> None:
    for rule in MaskRule:
        assert mask(rule, None) is None
    assert mask(MaskRule.REDACT, "张三") is None
    assert mask(MaskRule.REDACT, 0) is None


def test_non_string_values_are_masked_as_text() -> None:
    assert mask(MaskRule.MOBILE, 13812345678) == "138****5678"
    assert mask(MaskRule.RESIDENT_ID, 430102199003071234) == "430**************4"
    assert mask(MaskRule.BANK_CARD, 6222021234567890123) == "622202*********0123"
    assert mask(MaskRule.MOBILE, 13812345678.0) == "*************"
    assert mask(MaskRule.NAME, True) == "T***"
    assert mask(MaskRule.USCC, decimal.Decimal("1.5")) == "***"
    assert mask(MaskRule.ADDRESS, b"\xe6\xb9\x96") is not None  # bytes: str() form, masked


def test_rules_accept_their_string_names() -> None:
    assert mask("mobile", "13812345678") == "138****5678"  # type: ignore[arg-type]


def test_parse_mask_rule() -> None:
    for rule in MaskRule:
        assert parse_mask_rule(rule.value) is rule
    with pytest.raises(ValidationError, match="unknown mask rule 'phone'") as info:
        parse_mask_rule("phone")
    for rule in MaskRule:
        assert rule.value in str(info.value)
    with pytest.raises(ValidationError, match="'hash' is deliberately not offered"):
        parse_mask_rule("hash")
    with pytest.raises(ValidationError):
        parse_mask_rule("MOBILE")


# -- properties -----------------------------------------------------------------------------

resident_ids = st.builds(
    lambda body, check: body + check,
    st.text(DIGITS, min_size=17, max_size=17),
    st.sampled_from(DIGITS + "X"),
)
mobiles = st.builds(lambda rest: "1" + rest, st.text(DIGITS, min_size=10, max_size=10))
cards = st.text(DIGITS, min_size=15, max_size=19)
usccs = st.builds(
    lambda head, div, org, check: head + div + org + check,
    st.text(USCC_ALPHABET, min_size=2, max_size=2),
    st.text(DIGITS, min_size=6, max_size=6),
    st.text(USCC_ALPHABET, min_size=9, max_size=9),
    st.sampled_from(USCC_ALPHABET),
)
han = st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF)
names = st.text(han, min_size=1, max_size=8)
anything = st.one_of(
    st.text(),
    st.integers(),
    st.floats(allow_nan=True),
    st.booleans(),
    st.binary(max_size=20),
    st.decimals(allow_nan=False, allow_infinity=False),
)


def _visible(out: str) -> str:
    return out.replace("*", "")


@given(resident_ids)
def test_resident_id_hides_birth_date_and_sequence(value: str) -> None:
    out = _m(MaskRule.RESIDENT_ID, value)
    assert len(out) == len(value)
    assert out == value[:3] + "*" * 14 + value[-1]
    assert value[6:14] not in _visible(out)  # birth date
    assert len(_visible(out)) == 4


@given(mobiles)
def test_mobile_hides_middle_four(value: str) -> None:
    out = _m(MaskRule.MOBILE, value)
    assert out == value[:3] + "****" + value[7:]


@given(cards)
def test_bank_card_shows_only_issuer_and_last_four(value: str) -> None:
    out = _m(MaskRule.BANK_CARD, value)
    assert len(out) == len(value)
    assert out[:6] == value[:6]
    assert out[-4:] == value[-4:]
    assert set(out[6:-4]) == {"*"}


@given(usccs)
def test_uscc_hides_organisation_code(value: str) -> None:
    out = _m(MaskRule.USCC, value)
    assert out == value[:8] + "*" * 9 + value[-1]


@given(names)
def test_name_keeps_only_the_surname(value: str) -> None:
    out = _m(MaskRule.NAME, value)
    assert len(out) == len(value)
    kept = 2 if len(value) > 2 and value[:2] in COMPOUND_SURNAMES else 1
    if len(value) == 1:
        assert out == "*"
    else:
        assert out[:kept] == value[:kept]
        assert out[kept:] == "*" * (len(value) - kept)


@given(st.sampled_from(sorted(COMPOUND_SURNAMES)), st.text(han, min_size=1, max_size=3))
def test_compound_surnames_are_kept_whole(surname: str, given_name: str) -> None:
    assert mask(MaskRule.NAME, surname + given_name) == surname + "*" * len(given_name)


@given(
    st.sampled_from(["湖南省长沙市岳麓区", "北京市海淀区", "广东省深圳市南山区", ""]),
    st.text(st.characters(codec="utf-8"), min_size=0, max_size=30),
    st.integers(min_value=0, max_value=99999),
)
def test_address_never_shows_house_numbers(prefix: str, street: str, number: int) -> None:
    value = f"{prefix}{street}{number}号"
    out = _m(MaskRule.ADDRESS, value)
    assert out.endswith("****")
    kept = out[:-4]
    assert value.strip().startswith(kept)
    assert not re.search(r"\d", kept)
    assert str(number) not in kept
    if prefix:
        assert kept.startswith(prefix)


@given(st.emails())
def test_email_hides_the_local_part(value: str) -> None:
    local, _, domain = value.rpartition("@")
    out = _m(MaskRule.EMAIL, value)
    if out == "*" * len(value):
        return  # an address outside the accepted shape is fully masked
    assert out.endswith("@" + domain)
    assert out.split("@")[0] in {"***", local[0] + "***"}


@given(st.sampled_from(POSITIONAL), anything)
def test_positional_rules_only_ever_star_characters(rule: MaskRule, value: object) -> None:
    text = str(value)
    out = _m(rule, value)
    assert len(out) == len(text)
    assert all(o == "*" or o == t for o, t in zip(out, text, strict=True))


@given(anything)
def test_visible_part_is_bounded_for_any_input(value: object) -> None:
    text = str(value)
    assert len(_visible(_m(MaskRule.RESIDENT_ID, value))) <= 4
    assert len(_visible(_m(MaskRule.NAME, value))) <= 2
    assert len(_visible(_m(MaskRule.USCC, value))) <= 9
    assert sum(c.isdigit() for c in _m(MaskRule.BANK_CARD, value)) <= 10
    assert sum(c.isdigit() for c in _m(MaskRule.MOBILE, value)) <= 7 + 4  # prefix 0086
    if text and not text.isspace():
        assert _m(MaskRule.ADDRESS, value) != text or text.endswith("****")


@given(st.sampled_from(list(MaskRule)), anything)
def test_masking_never_raises(rule: MaskRule, value: object) -> None:
    out = mask(rule, value)
    assert (out is None) == (rule is MaskRule.REDACT)


SHAPES = {
    MaskRule.RESIDENT_ID: r"[0-9]{17}[0-9Xx]|[0-9]{15}",
    MaskRule.MOBILE: r"(?:(?:\+|00)?86[ -]?)?1[0-9]{10}",
    MaskRule.BANK_CARD: r"[0-9][0-9 -]{13,}[0-9]",
    MaskRule.USCC: r"[0-9A-Za-z]{18}",
}


@given(st.sampled_from(sorted(SHAPES)), st.text(min_size=1))
def test_fail_closed_on_random_text(rule: MaskRule, value: str) -> None:
    # Whatever does not have the rule's shape shows nothing at all.
    assume(not re.fullmatch(SHAPES[rule], value))
    assert mask(rule, value) == "*" * len(value)
