"""Masking rules for sensitive fields of Chinese public data.

A dataset field marked ``sensitive`` names one rule; the data plane applies it to every value
of that field before a row leaves the gateway. Each rule keeps only the part a merchant needs
to recognise a record (a region, a surname, a card's issuer) and hides the part that
identifies or locates a person.

Rules, with ``*`` replacing one hidden character unless said otherwise:

``resident_id``
    18-character resident identity number (6-digit region, 8-digit birth date, 3-digit
    sequence, check character): keep the first 3 and the last 1, e.g.
    ``430**************X``. The birth date and the whole sequence (whose last digit encodes
    sex) are hidden. A 15-digit first-generation number keeps only the first 3, since its
    last digit is a sequence digit. Length preserved.
``mobile``
    Mainland mobile number ``1xxxxxxxxxx``, optionally prefixed ``+86``/``0086``/``86`` and a
    space or hyphen: keep the prefix, the first 3 and the last 4 digits, e.g.
    ``138****5678``. Length preserved.
``name``
    Keep the surname (the first character, or the first two for the compound surnames
    欧阳 司马 诸葛 上官 东方 皇甫 尉迟 公孙 慕容 令狐 when the name is longer than two
    characters), e.g. ``张**``, ``欧阳**``; a one-character name becomes ``*``. Length
    preserved.
``address``
    Keep the administrative prefix: an optional province-level unit (省, 自治区, 特别行政区,
    or one of the municipalities 北京市 天津市 上海市 重庆市), an optional prefecture-level
    unit (市, 自治州, 地区, 盟) and the county-level unit after them (区, 县, 旗, 市), then
    ``****``, e.g. ``湖南省长沙市岳麓区****``. Without a county-level unit the recognised
    province/prefecture part is kept; with nothing recognised, the first 6 characters,
    cut before the first digit and to at most half the address. Length *not* preserved: the
    length of the street part would itself leak.
``bank_card``
    15 to 19 digits, optionally grouped by spaces or hyphens: keep the first 6 (issuer) and
    last 4 digits, e.g. ``622202*********1234``; separators stay where they are. Length
    preserved.
``uscc``
    18-character unified social credit code: keep the first 8 (registration authority,
    organisation type, administrative division) and the check character, mask the
    9-character organisation code, e.g. ``91430100*********X``. Length preserved.
``email``
    Keep the first character of the local part and the domain: ``a***@example.com``; a
    one-character local part is not kept (``***@example.com``). Length not preserved.
``redact``
    The value is withheld entirely (``None``).

There is deliberately no ``hash`` rule: identifiers such as resident IDs and mobile numbers
come from small, structured spaces, so an unkeyed hash is reversed by enumerating them, and
a keyed one still lets merchants link records across calls and scenarios.

Masking fails closed: a value that does not have the shape its rule expects is replaced by
one ``*`` per character instead of being passed through, since a mis-shaped value is most
likely one the rule's visible part was never meant for.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Final

from gateway.errors import ValidationError

__all__ = ["COMPOUND_SURNAMES", "MaskRule", "mask", "parse_mask_rule"]

STAR: Final = "*"
ADDRESS_TAIL: Final = "****"
COMPOUND_SURNAMES: Final = frozenset(
    {"欧阳", "司马", "诸葛", "上官", "东方", "皇甫", "尉迟", "公孙", "慕容", "令狐"}
)


class MaskRule(StrEnum):
    RESIDENT_ID = "resident_id"
    MOBILE = "mobile"
    NAME = "name"
    ADDRESS = "address"
    BANK_CARD = "bank_card"
    USCC = "uscc"
    EMAIL = "email"
    REDACT = "redact"


def _full(value: str) -> str:
    return STAR * len(value)


def _keep(value: str, head: int, tail: int) -> str:
    """Keep ``head`` leading and ``tail`` trailing characters, star the rest."""
    hidden = len(value) - head - tail
    return value[:head] + STAR * hidden + value[len(value) - tail :]


# -- resident identity number ---------------------------------------------------------------

_RESIDENT_ID_18: Final = re.compile(r"[0-9]{17}[0-9Xx]")
_RESIDENT_ID_15: Final = re.compile(r"[0-9]{15}")


def _resident_id(value: str) -> str:
    if _RESIDENT_ID_18.fullmatch(value):
        return _keep(value, 3, 1)
    if _RESIDENT_ID_15.fullmatch(value):
        return _keep(value, 3, 0)
    return _full(value)


# -- mobile number --------------------------------------------------------------------------

_MOBILE: Final = re.compile(r"(?P<prefix>(?:\+|00)?86[ -]?)?(?P<number>1[0-9]{10})")


def _mobile(value: str) -> str:
    match = _MOBILE.fullmatch(value)
    if match is None:
        return _full(value)
    prefix = match.group("prefix") or ""
    return prefix + _keep(match.group("number"), 3, 4)


# -- personal name --------------------------------------------------------------------------

_NAME_PUNCTUATION: Final = frozenset("·・•.'- ")


def _name(value: str) -> str:
    if (
        not value
        or not value[0].isalpha()
        or not all(ch.isalpha() or ch in _NAME_PUNCTUATION for ch in value)
    ):
        return _full(value)
    if len(value) == 1:
        return STAR
    surname = 2 if len(value) > 2 and value[:2] in COMPOUND_SURNAMES else 1
    return _keep(value, surname, 0)


# -- address --------------------------------------------------------------------------------

# Characters that end an administrative unit or start street-level detail; ``\d`` is any
# Unicode digit, so full-width house numbers count too. Unit names never contain them (道, 镇
# and 乡 do occur in county names: 道县, 镇江市, 乡宁县, so they are not listed), which stops a
# pattern from running on from the admin prefix into a street, house number or compound.
_NOT_IN_UNIT: Final = r"\d\s省市区县旗路街巷弄号村楼栋室"
_PROVINCE: Final = (
    rf"(?:北京市|天津市|上海市|重庆市|[^{_NOT_IN_UNIT}]{{2,6}}?(?:省|自治区|特别行政区))"
)
_PREFECTURE: Final = rf"(?:[^{_NOT_IN_UNIT}]{{1,10}}?(?:自治州|地区|盟|市))"
# 社区/小区/园区/校区/景区 are not districts; 市场 is a market, not a city.
_COUNTY: Final = (
    rf"(?:[^{_NOT_IN_UNIT}]{{0,13}}?[^{_NOT_IN_UNIT}社小园校景]区"
    rf"|[^{_NOT_IN_UNIT}]{{1,14}}?(?:县|旗|市(?!场)))"
)
_ADDRESS_FULL: Final = re.compile(rf"{_PROVINCE}?{_PREFECTURE}?{_COUNTY}")
_ADDRESS_UPPER: Final = re.compile(rf"{_PROVINCE}?{_PREFECTURE}?")
_ADDRESS_FALLBACK_CHARS: Final = 6


def _address(value: str) -> str:
    text = value.strip()
    if not text:
        return _full(value)
    match = _ADDRESS_FULL.match(text) or _ADDRESS_UPPER.match(text)
    if match is not None and match.end() > 0:
        return text[: match.end()] + ADDRESS_TAIL
    head = text[:_ADDRESS_FALLBACK_CHARS]
    digit = re.search(r"\d", head)
    if digit is not None:
        head = head[: digit.start()]
    return head[: len(text) // 2] + ADDRESS_TAIL


# -- bank card ------------------------------------------------------------------------------

_BANK_CARD: Final = re.compile(r"[0-9]+(?:[ -][0-9]+)*")


def _bank_card(value: str) -> str:
    if not _BANK_CARD.fullmatch(value):
        return _full(value)
    positions = [i for i, ch in enumerate(value) if ch.isdigit()]
    if not 15 <= len(positions) <= 19:
        return _full(value)
    hidden = set(positions[6:-4])
    return "".join(STAR if i in hidden else ch for i, ch in enumerate(value))


# -- unified social credit code -------------------------------------------------------------

# GB 32100-2015 alphabet: digits and capitals without I, O, Z, S, V.
_USCC_CHAR: Final = "[0-9A-HJ-NPQRTUWXY]"
_USCC: Final = re.compile(rf"{_USCC_CHAR}{{2}}[0-9]{{6}}{_USCC_CHAR}{{10}}", re.IGNORECASE)


def _uscc(value: str) -> str:
    if not _USCC.fullmatch(value):
        return _full(value)
    return _keep(value, 8, 1)


# -- email ----------------------------------------------------------------------------------

_LABEL: Final = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_EMAIL: Final = re.compile(
    rf"(?P<local>[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~.-]+)@(?P<domain>{_LABEL}(?:\.{_LABEL})+)"
)


def _email(value: str) -> str:
    match = _EMAIL.fullmatch(value)
    if match is None:
        return _full(value)
    local = match.group("local")
    head = local[0] if len(local) > 1 else ""
    return f"{head}***@{match.group('domain')}"


# -- dispatch -------------------------------------------------------------------------------

_MASKERS: Final[Mapping[MaskRule, Callable[[str], str]]] = {
    MaskRule.RESIDENT_ID: _resident_id,
    MaskRule.MOBILE: _mobile,
    MaskRule.NAME: _name,
    MaskRule.ADDRESS: _address,
    MaskRule.BANK_CARD: _bank_card,
    MaskRule.USCC: _uscc,
    MaskRule.EMAIL: _email,
}


def mask(rule: MaskRule, value: object) -> str | None:
    """``value`` masked by ``rule``; ``None`` stays ``None`` and :attr:`MaskRule.REDACT`
    always gives ``None``. Non-string values are masked as ``str(value)``."""
    rule = MaskRule(rule)
    if value is None or rule is MaskRule.REDACT:
        return None
    text = value if isinstance(value, str) else str(value)
    return _MASKERS[rule](text)


def parse_mask_rule(name: str) -> MaskRule:
    """The rule called ``name``, for dataset definitions; unknown names are refused."""
    try:
        return MaskRule(name)
    except ValueError:
        pass
    valid = ", ".join(rule.value for rule in MaskRule)
    if name == "hash":
        raise ValidationError(
            "mask rule 'hash' is deliberately not offered: hashed identifiers are reversed by "
            f"enumeration and link records across calls; use one of {valid}"
        )
    raise ValidationError(f"unknown mask rule {name!r}; valid rules are {valid}")
