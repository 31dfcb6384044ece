"""The block model a report is laid out in: headings, paragraphs, tables and charts.

A report template (``templates/security.j2``, ``templates/operations.j2``) says what the
report holds, once, by calling a :class:`Document`'s methods; the writers
(:mod:`gateway.reports.markdown`, :mod:`gateway.reports.html`) then write the same blocks
as Markdown or as HTML. Keeping the layout apart from the format is why one template serves
both, and why each writer escapes every text for the one format it writes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

__all__ = ["Block", "Cell", "Chart", "Document", "Heading", "Mono", "Para", "Table"]

EMPTY = "none · 无"
"""What a table with no rows shows instead."""


@dataclass(frozen=True, slots=True)
class Mono:
    """A cell or value shown in a monospace font (hashes, ids, commands)."""

    text: str


Cell = str | Mono


@dataclass(frozen=True, slots=True)
class Heading:
    kind: ClassVar[str] = "heading"
    level: int
    text: str


@dataclass(frozen=True, slots=True)
class Para:
    kind: ClassVar[str] = "para"
    text: str
    note: bool = False


@dataclass(frozen=True, slots=True)
class Table:
    kind: ClassVar[str] = "table"
    header: tuple[str, ...]
    rows: list[tuple[Cell, ...]]
    """Filled by :meth:`row` while the template runs; read by the writers afterwards."""
    numeric: tuple[int, ...] = ()
    """Columns aligned right."""
    empty: str = EMPTY

    def row(self, *cells: Cell) -> str:
        """Add one row. Returns an empty string, so a template may call it in an
        expression without writing anything."""
        self.rows.append(cells)
        return ""


@dataclass(frozen=True, slots=True)
class Chart:
    kind: ClassVar[str] = "chart"
    svg: str
    caption: str


Block = Heading | Para | Table | Chart


@dataclass(slots=True)
class Document:
    """A report as a list of blocks, built by a template.

    Each method appends one block and returns an empty string (or the table, to fill), so
    the template's own output is nothing but whitespace; it is discarded.
    """

    title: str = ""
    blocks: list[Block] = field(default_factory=list)

    def start(self, title: str) -> str:
        """Name the document and open it with its title as the first heading."""
        self.title = title
        return self.h(1, title)

    def h(self, level: int, text: str) -> str:
        self.blocks.append(Heading(level, text))
        return ""

    def p(
        self, text: str = "", *, note: bool = False, caller: Callable[[], str] | None = None
    ) -> str:
        """A paragraph: ``text``, or the body of a ``{% call doc.p() %}`` block."""
        self.blocks.append(Para(caller() if caller is not None else text, note))
        return ""

    def table(self, header: Sequence[str], *, numeric: Sequence[int] = ()) -> Table:
        table = Table(tuple(header), [], tuple(numeric))
        self.blocks.append(table)
        return table

    def chart(self, svg: str, caption: str) -> str:
        self.blocks.append(Chart(svg, caption))
        return ""
