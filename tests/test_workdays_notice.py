"""The State Council's holiday notice parsed from its text (``dsgw workdays import``).

The fixtures in ``tests/data/notices/`` are the 2025 and 2026 notices in their published
wording; the parser must give exactly the schedules shipped in ``gateway/workdays/data``.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest

from gateway.workdays import CalendarError
from gateway.workdays.notice import NoticeError, parse_notice

NOTICES = Path(__file__).parent / "data" / "notices"


def _shipped(year: int) -> object:
    text = resources.files("gateway.workdays").joinpath(f"data/cn-{year}.json").read_text("utf-8")
    return json.loads(text)


@pytest.mark.parametrize("year", [2025, 2026])
def test_notice_reproduces_the_shipped_schedule(year: int) -> None:
    text = (NOTICES / f"notice-{year}.txt").read_text("utf-8")
    assert parse_notice(text).to_dict() == _shipped(year)


def test_notice_with_bom_crlf_and_half_width_parentheses() -> None:
    text = (NOTICES / "notice-2025.txt").read_text("utf-8")
    retyped = "\ufeff" + text.replace("（", "(").replace("）", ")").replace("\n", "\r\n")
    assert parse_notice(retyped).to_dict() == _shipped(2025)


def test_make_up_days_on_a_line_of_their_own() -> None:
    text = (NOTICES / "notice-2026.txt").read_text("utf-8")
    split = text.replace("共7天。9月20日", "共7天。\n9月20日")
    assert parse_notice(split).to_dict() == _shipped(2026)


def test_a_mistyped_weekday_is_refused() -> None:
    text = (NOTICES / "notice-2025.txt").read_text("utf-8")
    wrong = text.replace("4月27日（周日）", "4月28日（周日）")
    with pytest.raises(NoticeError, match=r"4月28日 is written as 周日, but 2025-04-28 is a 周一"):
        parse_notice(wrong, "notice.txt")


def test_a_day_count_that_disagrees_is_refused() -> None:
    text = (NOTICES / "notice-2026.txt").read_text("utf-8")
    wrong = text.replace("共9天", "共8天")
    with pytest.raises(NoticeError, match="is 9 days, the notice says 共8天"):
        parse_notice(wrong)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("随便一段文字", "no title"),
        ("国务院办公厅关于2027年部分节假日安排的通知\n没有条目。", "no numbered holiday item"),
        ("国务院办公厅关于2027年部分节假日安排的通知\n一、元旦：放假。\n", "no days off"),
        (
            "国务院办公厅关于2027年部分节假日安排的通知\n一、元旦：2月30日（周二）放假1天。\n",
            "is not a date in 2027",
        ),
    ],
)
def test_not_a_notice_is_refused(text: str, match: str) -> None:
    with pytest.raises(CalendarError, match=match):
        parse_notice(text)
