"""Supervision reports: the quarterly security report to the data bureau (CS23 art. 24) and
the periodic operations report (CS23 art. 23; ZW art. 31-33).

Facts are gathered into dataclasses (:mod:`.security`, :mod:`.operations`, one module per
section) over periods in Beijing time (:mod:`.periods`), then laid out by the Jinja2
templates under ``templates/`` and written as Markdown or self-contained HTML with SVG
charts (:mod:`.render`, :mod:`.charts`). :mod:`.service` makes a report from a running
gateway; the CLI (``dsgw report``) and the HTTP API (``/admin/reports/...``) both call it.
"""

from __future__ import annotations

from gateway.reports.audit_section import ChainAccess
from gateway.reports.operations import OperationsReport
from gateway.reports.periods import Period, parse_period, parse_quarter
from gateway.reports.render import Format, render_operations, render_security
from gateway.reports.security import SecurityReport
from gateway.reports.service import (
    chain_for_command_line,
    chain_for_server,
    operations_report,
    security_report,
)

__all__ = [
    "ChainAccess",
    "Format",
    "OperationsReport",
    "Period",
    "SecurityReport",
    "chain_for_command_line",
    "chain_for_server",
    "operations_report",
    "parse_period",
    "parse_quarter",
    "render_operations",
    "render_security",
    "security_report",
]
