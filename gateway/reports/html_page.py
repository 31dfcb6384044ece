"""A report document written as one self-contained HTML page (``templates/page.html.j2``).

The page template is autoescaped. Texts are escaped with :func:`html.escape` (``&quot;``,
``&#x27;``) and marked safe, so a page is byte-identical to what the reports have always
been; anything a template prints without these filters is still escaped by Jinja2.
"""

from __future__ import annotations

import functools
import html

import jinja2
from markupsafe import Markup

from gateway.reports.blocks import Cell, Document, Mono

__all__ = ["html_page"]


def _h(text: str) -> Markup:
    return Markup(html.escape(text, quote=True))  # noqa: S704 - escaped just now


def _inline(text: str) -> Markup:
    """Text of ours that may hold `code` spans: escaped, with the spans as ``<code>``."""
    parts = text.split("`")
    if len(parts) % 2 == 0:
        return _h(text)
    return Markup(  # noqa: S704 - every part is escaped
        "".join(_h(p) if i % 2 == 0 else f"<code>{_h(p)}</code>" for i, p in enumerate(parts))
    )


def _cell(cell: Cell) -> Markup:
    if isinstance(cell, Mono):
        return Markup(f"<code>{_h(cell.text)}</code>")  # noqa: S704 - escaped by _h
    return _h(cell)


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("gateway.reports", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        extensions=["jinja2.ext.do"],
    )
    env.filters.update(h=_h, inline=_inline, cell=_cell)
    return env


def html_page(doc: Document) -> str:
    """The document as a printable HTML page."""
    return _environment().get_template("page.html.j2").render(doc=doc)
