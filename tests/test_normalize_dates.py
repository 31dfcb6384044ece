"""The date rule's separator shortcut: the same dates read, the same texts left alone."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.tracing.normalize import _MDY, _YMD, _YMD_CJK, _date


def _ref_date(text: str) -> str | None:
    """``_date`` as it was before the shortcut (commit 99ed18b)."""
    if len(text) > 32 or not text[:1].isdigit():
        return None
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


@settings(max_examples=1000, deadline=None)
@given(st.text("0123456789-/.年月日T: 0", max_size=24))
def test_dates_read_as_before(text: str) -> None:
    assert _date(text) == _ref_date(text)


def test_each_form_still_read() -> None:
    for text in (
        "2020-01-05",
        "2020/1/5",
        "2020.1.5",
        "2020年1月5日",
        "1/5/2020",
        "2020-1-5T00:00",
    ):
        assert _date(text) == _ref_date(text) is not None
