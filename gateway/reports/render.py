"""The reports as Markdown and as self-contained HTML, from the dataclasses of
:mod:`gateway.reports.security` and :mod:`gateway.reports.operations`.

Each report is laid out once, by a Jinja2 template that holds its prose
(``templates/security.j2``, ``templates/operations.j2``), as a list of blocks (headings,
paragraphs, tables, charts: :mod:`gateway.reports.blocks`); the blocks are then written
either way: Markdown for review and diffing (:mod:`gateway.reports.markdown`), HTML (inline
CSS and SVG, no script, ``lang="zh-CN"``, printable) for submission
(:mod:`gateway.reports.html_page`). Every text that comes from the store is escaped for the
format it goes into, so a merchant named ``<script>`` is a name, nothing more. Times are
shown in the zone of the report's period, Beijing time unless the deployment says otherwise.
"""

from __future__ import annotations

from typing import Literal

from gateway.reports.blocks import Document
from gateway.reports.formats import in_zone
from gateway.reports.html_page import html_page
from gateway.reports.markdown import markdown
from gateway.reports.operations import OperationsReport
from gateway.reports.security import SecurityReport
from gateway.reports.templating import layout

__all__ = [
    "Format",
    "operations_html",
    "operations_markdown",
    "render_operations",
    "render_security",
    "security_html",
    "security_markdown",
]

Format = Literal["md", "html"]


def _security(report: SecurityReport) -> Document:
    with in_zone(report.header.period.zone):
        return layout("security.j2", report=report)


def _operations(report: OperationsReport) -> Document:
    with in_zone(report.header.period.zone):
        return layout("operations.j2", report=report)


def security_markdown(report: SecurityReport) -> str:
    return markdown(_security(report))


def security_html(report: SecurityReport) -> str:
    return html_page(_security(report))


def operations_markdown(report: OperationsReport) -> str:
    return markdown(_operations(report))


def operations_html(report: OperationsReport) -> str:
    return html_page(_operations(report))


def render_security(report: SecurityReport, fmt: Format) -> str:
    return security_html(report) if fmt == "html" else security_markdown(report)


def render_operations(report: OperationsReport, fmt: Format) -> str:
    return operations_html(report) if fmt == "html" else operations_markdown(report)
