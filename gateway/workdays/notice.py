"""The State Council's yearly holiday notice, read from its published text.

Every November the General Office of the State Council publishes 国务院办公厅关于 *YYYY* 年部分
节假日安排的通知. Its body is one numbered item per holiday, always in the same wording::

    一、元旦：1月1日（周三）放假1天，不调休。
    二、春节：1月28日（农历除夕、周二）至2月4日（农历正月初七、周二）放假调休，共8天。
    1月26日（周日）、2月8日（周六）上班。

Operators used to turn it into a JSON schedule by hand; :func:`parse_notice` does it from the
text as published (copied from gov.cn or the Xinhua release), so that a typo cannot shift a
holiday. The text is checked against itself while parsing: the weekday written next to each
date must be that date's weekday and "共N天" must be the number of days listed, so a date
mistyped when copying is refused rather than loaded.

``source`` is built from what the notice says about itself: its title, then in parentheses
the document number (国办发明电〔…〕…号) if the text carries one, the date it was signed, and
"新华社全文发布" when the text is the Xinhua release (it opens with "新华社北京…电").
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata

from gateway.workdays.calendar import CalendarError, Holiday, YearSchedule

__all__ = ["NoticeError", "parse_notice"]

_WEEKDAY_CHARS = "一二三四五六日"  # 周一 .. 周日, Monday is 0 as in date.weekday()
_NUMERALS = "一二三四五六七八九十"

_TITLE = re.compile(r"国务院办公厅关于(\d{4})年部分节假日安排的通知")
_DOC_NUMBER = re.compile(r"国办发(?:明电)?〔\d{4}〕\d+号")
_SIGNED = re.compile(r"(\d{4})年(\d{1,2})月(\d{1,2})日")
_XINHUA = re.compile(r"新华社[^\s，,。]{0,6}\d{1,2}月\d{1,2}日电")
_ITEM = re.compile(r"(?m)^\s*([" + _NUMERALS + r"]+)、([^：:\n]+)[：:]")
# A date as the notice writes it: "1月28日（农历除夕、周二）" or, after 至 within one month,
# "6日（周日）". The parenthesis holds the weekday last, after any lunar-calendar name.
_DAY = r"(?:(\d{1,2})月)?(\d{1,2})日（([^）]*)）"
_RANGE = re.compile(_DAY + r"(?:至" + _DAY + r")?放假")
_COUNT = re.compile(r"共(\d+)天")
_MAKEUP = re.compile(r"((?:" + _DAY + r"[、，,]?)+)上班")
_MAKEUP_DAY = re.compile(_DAY)


class NoticeError(CalendarError):
    """The text is not a holiday notice in the published wording, or contradicts itself.

    A :class:`CalendarError`; the message names the item and the date at fault."""


def parse_notice(text: str, origin: str = "<notice>") -> YearSchedule:
    """The schedule a notice's text announces, validated as any schedule file.

    Raises :class:`NoticeError` naming ``origin`` when the title, an item or a date cannot
    be read, a weekday or a day count disagrees with the dates, or no item is found.
    """
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").lstrip("\ufeff")
    # Full-width punctuation is the notice's own; half-width parentheses appear when the
    # text was retyped. Both read the same.
    text = text.replace("(", "（").replace(")", "）")
    where = f"workdays: {origin}"
    title = _TITLE.search(text)
    if title is None:
        raise NoticeError(
            f"{where}: no title 国务院办公厅关于YYYY年部分节假日安排的通知 found; paste the "
            "notice with its title"
        )
    year = int(title.group(1))
    items = list(_ITEM.finditer(text))
    if not items:
        raise NoticeError(f"{where}: no numbered holiday item (一、元旦：…) found")
    holidays: list[Holiday] = []
    makeup: list[dt.date] = []
    for index, item in enumerate(items):
        end = items[index + 1].start() if index + 1 < len(items) else len(text)
        body = _item_body(text[item.end() : end])
        name = item.group(2).strip()
        at = f"{where}: {item.group(1)}、{name}"
        days = _holiday_days(at, year, body)
        holidays.append(Holiday(name=name, days=days))
        makeup.extend(_makeup_days(at, year, body))
    source = f"{title.group(0)} ({', '.join(_about(text, title.end()))})"
    data = {
        "year": year,
        "source": source,
        "holidays": [{"name": h.name, "days": [d.isoformat() for d in h.days]} for h in holidays],
        "workdays": [d.isoformat() for d in sorted(makeup)],
    }
    return YearSchedule.from_dict(data, origin)


def _item_body(rest: str) -> str:
    """An item's own text: its line, and following lines only if they go on with a date
    ("9月28日（周日）…上班" on a line of its own); the closing paragraph
    ("节假日期间，各地区…") and the signature are not part of the last item."""
    lines = rest.split("\n")
    kept = [lines[0]]
    for line in lines[1:]:
        if not re.match(r"\s*\d{1,2}月\d{1,2}日", line):
            break
        kept.append(line)
    return "".join(kept)


def _about(text: str, after_title: int) -> list[str]:
    """Document number, date signed and Xinhua release, as far as the text names them."""
    parts: list[str] = []
    number = _DOC_NUMBER.search(text)
    if number is not None:
        parts.append(number.group(0))
    dates = list(_SIGNED.finditer(text, after_title))
    if dates:
        # The date under the signature 国务院办公厅, after the last item.
        signed = dates[-1]
        parts.append(f"{int(signed.group(1))}年{int(signed.group(2))}月{int(signed.group(3))}日")
    if _XINHUA.search(text) is not None:
        parts.append("新华社全文发布")
    if not parts:
        raise NoticeError(
            "workdays: the notice names neither its document number nor the date it was "
            "signed; paste it whole, with the signature and date at the end"
        )
    return parts


def _holiday_days(at: str, year: int, body: str) -> tuple[dt.date, ...]:
    found = _RANGE.search(body)
    if found is None:
        raise NoticeError(f"{at}: no days off (M月D日（周X）[至M月D日（周X）]放假) found")
    first = _date(at, year, found.group(1), found.group(2), found.group(3), None)
    if found.group(5) is None:
        last = first
    else:
        last = _date(at, year, found.group(4), found.group(5), found.group(6), first.month)
    if last < first:
        raise NoticeError(f"{at}: the days off end ({last}) before they start ({first})")
    days = tuple(first + dt.timedelta(days=i) for i in range((last - first).days + 1))
    count = _COUNT.search(body)
    single = re.search(r"放假(\d+)天", body)
    stated = count or single
    if stated is not None and int(stated.group(1)) != len(days):
        raise NoticeError(
            f"{at}: {first} to {last} is {len(days)} days, the notice says {stated.group(0)}"
        )
    return days


def _makeup_days(at: str, year: int, body: str) -> list[dt.date]:
    days: list[dt.date] = []
    for sentence in _MAKEUP.finditer(body):
        month: int | None = None
        for day in _MAKEUP_DAY.finditer(sentence.group(1)):
            date = _date(at, year, day.group(1), day.group(2), day.group(3), month)
            month = date.month
            days.append(date)
    return days


def _date(
    at: str, year: int, month: str | None, day: str, note: str, month_before: int | None
) -> dt.date:
    """One written date, its weekday checked against the note in parentheses."""
    if month is None and month_before is None:
        raise NoticeError(f"{at}: {day}日 has no month")
    number = int(month) if month is not None else month_before
    assert number is not None
    try:
        date = dt.date(year, number, int(day))
    except ValueError as exc:
        raise NoticeError(f"{at}: {number}月{day}日 is not a date in {year}") from exc
    weekday = re.search(r"周([" + _WEEKDAY_CHARS + r"天])", note)
    if weekday is None:
        raise NoticeError(f"{at}: {number}月{day}日 has no weekday （周X） next to it")
    written = _WEEKDAY_CHARS.index(weekday.group(1).replace("天", "日"))
    if written != date.weekday():
        raise NoticeError(
            f"{at}: {number}月{day}日 is written as 周{weekday.group(1)}, but {date.isoformat()} "
            f"is a 周{_WEEKDAY_CHARS[date.weekday()]}; check the date against the notice"
        )
    return date
