"""A report document written as Markdown, for review and diffing.

Every text is escaped for Markdown, so a merchant named ``<script>`` or ``*bold*`` is shown
as written; only backticks in our own prose open a code span. Charts are left out: the
tables beside them hold the same figures.
"""

from __future__ import annotations

import re

from gateway.reports.blocks import Cell, Chart, Document, Heading, Mono, Para, Table

__all__ = ["markdown"]

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")
_SPACES = re.compile(r"\s+")


def _md(text: str) -> str:
    """Plain text safe in a Markdown paragraph or table cell: Markdown punctuation and raw
    HTML are escaped, line breaks become spaces."""
    return _MD_SPECIAL.sub(r"\\\1", _SPACES.sub(" ", text))


def _md_inline(text: str) -> str:
    """Text of ours that may hold `code` spans: escaped outside them."""
    parts = text.split("`")
    if len(parts) % 2 == 0:
        return _md(text)
    return "".join(_md(p) if i % 2 == 0 else f"`{p}`" for i, p in enumerate(parts))


def _md_cell(cell: Cell) -> str:
    if isinstance(cell, Mono):
        if "`" in cell.text or "|" in cell.text or "\n" in cell.text:
            return _md(cell.text)
        return f"`{cell.text}`"
    return _md(cell) or " "


def _table(block: Table) -> str:
    if not block.rows:
        return f"*{_md(block.empty)}*"
    align = ("---:" if i in block.numeric else "---" for i in range(len(block.header)))
    lines = ["| " + " | ".join(_md(h) for h in block.header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
    return "\n".join(lines)


def markdown(doc: Document) -> str:
    """The document as Markdown: blocks apart by a blank line, ending in a newline."""
    out: list[str] = []
    for block in doc.blocks:
        if isinstance(block, Heading):
            out.append(f"{'#' * block.level} {_md_inline(block.text)}")
        elif isinstance(block, Para):
            out.append(("> " if block.note else "") + _md_inline(block.text))
        elif isinstance(block, Table):
            out.append(_table(block))
        elif isinstance(block, Chart):
            continue  # charts are drawn in the HTML version; the tables hold the figures
    return "\n\n".join(out) + "\n"
