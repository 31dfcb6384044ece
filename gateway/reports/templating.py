"""The Jinja2 environments the reports are written with, and the names templates may use.

The layout templates (``security.j2``, ``operations.j2`` and the parts they include) hold
the reports' prose and call a :class:`~gateway.reports.blocks.Document` to lay it out. This
environment does not escape (the writers escape every text for the format they write), and
a line break in a template's own text reads as one space, so prose can be wrapped in the
template without touching what a value from the store holds. (The HTML page has its own,
autoescaped environment: :mod:`gateway.reports.html_page`.)

It uses ``StrictUndefined``: a misspelt or missing value fails the report loudly instead
of printing an empty string into a document submitted to the bureau.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NoReturn, TypeVar

import jinja2
from jinja2.ext import Extension
from jinja2.lexer import Token, TokenStream

from gateway.reports import charts, formats
from gateway.reports.blocks import Document, Mono
from gateway.reports.change_section import CHANGE_GROUPS, change_group
from gateway.reports.evaluation import MIN_MERCHANT_RATINGS
from gateway.reports.periods import SHANGHAI

__all__ = ["FINDINGS_SHOWN", "JoinLines", "layout"]

FINDINGS_SHOWN = 200
"""Most audit findings listed one by one (every finding is counted)."""

_LINE_BREAK = re.compile(r"[ \t]*\n[ \t\n]*")
_T = TypeVar("_T")


class JoinLines(Extension):
    """A line break (with the indentation around it) in a template's own text is one space.

    Only the template's literal text is touched, never an inserted value.
    """

    def filter_stream(self, stream: TokenStream) -> Iterator[Token]:
        for token in stream:
            if token.type == "data":
                yield Token(token.lineno, "data", _LINE_BREAK.sub(" ", token.value))
            else:
                yield token


def _unknown(value: object) -> NoReturn:
    """What a template calls on a value none of its branches knows."""
    raise ValueError(f"report template: no text for {value!r}")


def _flatten(groups: Iterable[Iterable[_T]]) -> list[_T]:
    return [item for group in groups for item in group]


def _index_by(items: Iterable[_T], attribute: str) -> dict[Any, _T]:
    return {getattr(item, attribute): item for item in items}


def _count_of(pairs: Sequence[tuple[str, int]], key: str) -> int:
    return dict(pairs).get(key, 0)


_GLOBALS: Mapping[str, Any] = {
    "CHANGE_GROUPS": CHANGE_GROUPS,
    "FINDINGS_SHOWN": FINDINGS_SHOWN,
    "MIN_MERCHANT_RATINGS": MIN_MERCHANT_RATINGS,
    "SHANGHAI": SHANGHAI,
    "change_group": change_group,
    "charts": charts,
    "mono": Mono,
    "named": formats.named,
    "share": formats.share,
    "unknown": _unknown,
}
_FILTERS: Mapping[str, Any] = {
    "count_of": _count_of,
    "deadline": formats.deadline,
    "duration": formats.duration,
    "flatten": _flatten,
    "index_by": _index_by,
    "median": formats.median,
    "num": "{:,}".format,
    "time": formats.local_time,
    "utc": formats.utc_time,
}


@functools.cache
def _layout_environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("gateway.reports", "templates"),
        autoescape=False,  # noqa: S701 - blocks, not markup: the writers escape per format
        undefined=jinja2.StrictUndefined,
        extensions=["jinja2.ext.do", JoinLines],
    )
    env.globals.update(_GLOBALS)
    env.filters.update(_FILTERS)
    return env


def layout(template: str, **context: Any) -> Document:
    """Run a layout template over ``context`` and return the document it built."""
    doc = Document()
    _layout_environment().get_template(template).render(doc=doc, **context)
    return doc
