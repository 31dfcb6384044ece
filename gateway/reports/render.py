"""The reports as Markdown and as self-contained HTML, from the dataclasses of
:mod:`gateway.reports.security` and :mod:`gateway.reports.operations`.

Each report is laid out once, as a list of blocks (headings, paragraphs, tables, charts),
and the blocks are written either way: Markdown for review and diffing, HTML (inline CSS and
SVG, no script, ``lang="zh-CN"``, printable) for submission. Every text that comes from
the store is escaped for the format it goes into, so a merchant named ``<script>`` is a
name, nothing more. Times are shown in Beijing time, the time the bureau reckons in.
"""

from __future__ import annotations

import datetime as dt
import functools
import html
import re
from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from gateway.reports import charts
from gateway.reports.circular import DepartmentsSection
from gateway.reports.evaluation import MIN_MERCHANT_RATINGS, EvaluationSection
from gateway.reports.header import Names, ReportHeader
from gateway.reports.operations import CallCount, OperationsReport, TimelinessSection
from gateway.reports.periods import SHANGHAI
from gateway.reports.security import (
    CHANGE_GROUPS,
    AlertItem,
    GovernanceChange,
    MeasureItem,
    SecurityReport,
    change_group,
)

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

FINDINGS_SHOWN = 200
"""Most audit findings listed one by one (every finding is counted)."""

_GROUP_TITLES = {
    "grants": "授权 Grants",
    "revocations": "撤销 Revocations",
    "suspensions": "暂停与关闭 Suspensions",
    "lifts": "恢复与解除 Reinstatements and lifts",
    "reviews": "审核 Reviews and applications",
    "catalog": "目录与场景 Catalog and scenarios",
    "alerts": "告警处置 Alert handling",
    "other": "其他 Other",
}
_STEP_TITLES = {
    "onboarding": "入驻申请答复 Merchant onboarding answer",
    "compliance": "合规审查 Compliance check of use applications",
    "review": "部门审核 Source department review",
}
_RATER_TITLES = {
    "source": "数源部门 Source departments",
    "district": "县区数据局 District bureaus",
    "merchant": "数据商 Merchants",
}
_SEVERITY_COLOURS = {
    "critical": "#b04a4a",
    "high": "#d9822b",
    "warning": "#c2a83e",
    "info": "#2f6f9f",
}
_TARGET_TITLES = {
    "dataset-supply": "数据供给暂停 dataset supply suspended",
    "merchant-channel": "数据通道关闭 merchant channel closed",
    "scenario": "场景暂停 scenario suspended",
    "product": "产品下架 product delisted",
}


# -- the block model ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mono:
    """A cell or value shown in a monospace font (hashes, ids, commands)."""

    text: str


Cell = str | Mono


@dataclass(frozen=True, slots=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True, slots=True)
class Para:
    text: str
    note: bool = False


@dataclass(frozen=True, slots=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    numeric: tuple[int, ...] = ()
    """Columns aligned right."""
    empty: str = "none · 无"


@dataclass(frozen=True, slots=True)
class Chart:
    svg: str
    caption: str


Block = Heading | Para | Table | Chart


@dataclass(slots=True)
class _Doc:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(Heading(level, text))

    def p(self, text: str, *, note: bool = False) -> None:
        self.blocks.append(Para(text, note))

    def table(
        self,
        header: Sequence[str],
        rows: Iterable[Sequence[Cell]],
        *,
        numeric: Sequence[int] = (),
        empty: str = "none · 无",
    ) -> None:
        self.blocks.append(
            Table(tuple(header), tuple(tuple(r) for r in rows), tuple(numeric), empty)
        )

    def chart(self, svg: str, caption: str) -> None:
        self.blocks.append(Chart(svg, caption))


# -- small formatters ------------------------------------------------------------------------


_ZONE: ContextVar[dt.tzinfo] = ContextVar("report_zone", default=SHANGHAI)
"""The zone times are shown in: the report period's (the deployment's ``timezone``)."""

_D = TypeVar("_D", SecurityReport, OperationsReport)


def _in_zone(build: Callable[[_D], _Doc]) -> Callable[[_D], _Doc]:
    """Build the document with its times shown in the zone of the report's period."""

    @functools.wraps(build)
    def wrapper(report: _D) -> _Doc:
        token = _ZONE.set(report.header.period.zone)
        try:
            return build(report)
        finally:
            _ZONE.reset(token)

    return wrapper


def _time(value: dt.datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(_ZONE.get()).strftime("%Y-%m-%d %H:%M")


def _deadline(value: dt.datetime) -> str:
    """A deadline: the workflows store the first instant past it, so local midnight
    reads as the end of the day before."""
    local = value.astimezone(_ZONE.get())
    if local.time() == dt.time(0):
        return f"end of {(local.date() - dt.timedelta(days=1)).isoformat()}"
    return _time(value)


def _utc(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _duration(value: dt.timedelta | None) -> str:
    if value is None:
        return "-"
    seconds = int(value.total_seconds())
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {seconds} s"
    return f"{seconds} s"


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "-"


def _named(ident: str | None, name: str) -> str:
    if ident is None:
        return "(none)"
    return f"{name} ({ident})" if name else ident


# -- shared parts ---------------------------------------------------------------------------


def _header(doc: _Doc, header: ReportHeader) -> None:
    period = header.period
    doc.table(
        ("项目 Item", "内容 Value"),
        [
            ("部署 Deployment", Mono(header.deployment)),
            (
                "报告期 Period",
                f"{period.label}: {period.first_day.isoformat()} – "
                f"{period.last_day.isoformat()} "
                + (
                    "(北京时间 Beijing time, UTC+8)"
                    if period.zone == SHANGHAI
                    else f"({period.zone})"
                ),
            ),
            ("查询边界 Query bounds (UTC)", Mono(f"[{_utc(period.start)}, {_utc(period.end)})")),
            (
                "生成时间 Generated",
                f"{_time(header.generated_at)} (Beijing) · {_utc(header.generated_at)}",
            ),
            ("生成人 Generated by", header.generated_by),
        ],
    )
    if not header.complete:
        doc.p(
            "本报告期尚未结束 The period is not over yet: figures run up to the generation "
            "time, and “at the end of the period” means at generation.",
            note=True,
        )


def _heads(doc: _Doc, header: ReportHeader, number: str) -> None:
    doc.h(2, f"{number} 报告依据 Log heads this report was made against")
    doc.p(
        "Each stream's newest signed checkpoint when the report was made (signed just "
        "before, if the stream had grown). A later log must be consistent with it: "
        "`dsgw proof consistency STREAM SIZE NEWER_SIZE` proves that no record the report "
        "counted was changed or removed afterwards."
    )
    doc.table(
        ("流 Stream", "记录数 Records", "检查点大小 Checkpoint size", "根 Root", "签名时间 Signed"),
        [
            (
                h.stream,
                str(h.records),
                str(h.checkpoint_size) if h.checkpoint_size is not None else "-",
                Mono(h.checkpoint_root or "-"),
                _time(h.checkpoint_at),
            )
            for h in header.heads
        ],
        numeric=(1, 2),
    )


# -- the security report ---------------------------------------------------------------------


def _change_rows(changes: Iterable[GovernanceChange]) -> list[tuple[Cell, ...]]:
    return [
        (_time(c.at), Mono(c.record_id), Mono(c.kind), c.actor, c.subject, c.reason)
        for c in changes
    ]


_CHANGE_HEADER = (
    "时间 Time",
    "记录 Record",
    "类型 Kind",
    "操作人 Actor",
    "对象 Subject",
    "理由 Reason",
)


def _alert_rows(items: Iterable[AlertItem], names: Names) -> list[tuple[Cell, ...]]:
    return [
        (
            str(a.id),
            Mono(a.rule),
            a.severity,
            _named(a.merchant_id, names.merchant(a.merchant_id)),
            a.title,
            str(a.occurrences),
            _time(a.first_seen),
            a.status,
            f"{a.handled_by or '-'} · {_time(a.handled_at)}" if a.handled_at else "-",
            a.resolution or "",
            Mono(a.measure_id) if a.measure_id else "",
        )
        for a in items
    ]


_ALERT_HEADER = (
    "编号 Id",
    "规则 Rule",
    "级别 Severity",
    "商户 Merchant",
    "标题 Title",
    "次数 Count",
    "首次 First seen",
    "状态 Status now",
    "处置 Handled",
    "处置结果 Resolution",
    "措施 Measure",
)


def _measure_rows(items: Iterable[MeasureItem]) -> list[tuple[Cell, ...]]:
    return [
        (
            Mono(m.id),
            _TARGET_TITLES.get(m.target_kind, m.target_kind),
            Mono(m.target_id),
            m.reason,
            m.basis or "",
            f"{m.imposed_by} · {_time(m.imposed_at)}",
            f"{m.lifted_by or '-'} · {_time(m.lifted_at)}: {m.lift_reason or ''}"
            if m.lifted_at
            else "-",
        )
        for m in items
    ]


_MEASURE_HEADER = (
    "编号 Id",
    "措施 Measure",
    "对象 Target",
    "理由 Reason",
    "依据 Basis",
    "实施 Imposed",
    "解除 Lifted",
)


@_in_zone
def _security(report: SecurityReport) -> _Doc:
    header, audit, perms = report.header, report.audit, report.permissions
    alerts, measures, anchoring = report.alerts, report.measures, report.anchoring
    doc = _Doc(f"数据安全季度报告 Quarterly security report {header.period.label}")
    doc.h(1, doc.title)
    doc.p(
        "公共数据授权运营安全情况季度报告 (CS23 art. 24): log audit results, permission "
        "changes, alerts and their handling, supervision measures, and anchoring health."
    )
    _header(doc, header)

    doc.h(2, "摘要 Summary")
    unhandled = len(alerts.open_at_end)
    severities = ", ".join(f"{s} {n}" for s, n in alerts.by_severity) or "none"
    chain = {
        "checked": "checked against the chain",
        "unreachable": "chain NOT checked: unreachable",
        "not-run": "chain not checked",
    }[audit.chain_status]
    doc.table(
        ("指标 Figure", "数值 Value"),
        [
            (
                "日志审计 Log audit",
                (
                    f"clean: {sum(s.records for s in audit.streams):,} records of "
                    f"{len(audit.streams)} streams re-verified"
                    if audit.clean
                    else f"{audit.findings} FINDING(S): see section 1"
                )
                + f"; {chain}",
            ),
            (
                "数据调用 Data calls",
                f"{report.calls.total:,} ({report.calls.allowed:,} allowed, "
                f"{report.calls.refused:,} refused, {report.calls.errors:,} errors)",
            ),
            (
                "权限变更 Permission changes",
                f"{perms.total:,}: grants {perms.count('grants')}, revocations "
                f"{perms.count('revocations')}, suspensions {perms.count('suspensions')}, "
                f"lifts {perms.count('lifts')}",
            ),
            (
                "告警 Alerts raised",
                f"{alerts.raised:,} ({severities}); handled {alerts.handled}; "
                f"unhandled at the end of the quarter {unhandled}",
            ),
            (
                "监管措施 Supervision measures",
                f"imposed {len(measures.imposed)}, lifted {len(measures.lifted)}, active "
                f"at the end of the quarter {len(measures.active_at_end)}",
            ),
            (
                "上链存证 Anchoring",
                (
                    f"{anchoring.final_anchors} anchors became final; largest record-to-"
                    f"final-anchor lag {_duration(anchoring.max_lag)}; backlog now "
                    f"{anchoring.backlog} checkpoint(s)"
                )
                if anchoring.enabled or anchoring.final_anchors
                else "anchoring is off (chain = none): nothing was anchored",
            ),
        ],
    )

    doc.h(2, "1. 日志审计 Audit results")
    heads = {h.stream: h for h in header.heads}
    doc.p(
        f"The audit ran from {_time(audit.ran_at)} to {_time(audit.finished_at)} (Beijing "
        "time) over every record of every log stream, not only the quarter's: it recomputed "
        "each leaf hash from the stored record, re-linked the hash chain, rebuilt the Merkle "
        "root at every signed checkpoint and verified the checkpoint signatures"
        + (
            ", and compared every root the chain anchored."
            if audit.chain_status == "checked"
            else "."
        )
        + " The newest signed root of each stream, covered by this audit, is the report's "
        "log head (last section)."
    )
    doc.table(
        (
            "流 Stream",
            "记录 Records",
            "检查点 Checkpoints",
            "链上根 Anchored roots",
            "最新签名根 Newest signed root (size)",
            "发现 Findings",
        ),
        [
            (
                s.stream,
                str(s.records),
                str(s.checkpoints),
                str(s.anchors) if s.anchors is not None else "not checked",
                Mono(f"{heads[s.stream].checkpoint_root} ({heads[s.stream].checkpoint_size})")
                if s.stream in heads and heads[s.stream].checkpoint_root
                else "-",
                str(len(s.findings)),
            )
            for s in audit.streams
        ],
        numeric=(1, 2, 5),
    )
    doc.p(
        {
            "checked": f"Chain audit: checked against {audit.chain_detail}.",
            "unreachable": (
                f"Chain audit: NOT done, the chain could not be read: {audit.chain_detail}"
            ),
            "not-run": f"Chain audit: not run: {audit.chain_detail}.",
        }[audit.chain_status],
        note=audit.chain_status != "checked",
    )
    findings = [f for s in audit.streams for f in s.findings]
    if findings:
        doc.h(3, "审计发现 Findings")
        doc.table(
            ("记录 Record", "发现 Finding", "说明 Detail"),
            [(Mono(f"{f.stream}/{f.seq}"), f.kind, f.detail) for f in findings[:FINDINGS_SHOWN]],
        )
        if len(findings) > FINDINGS_SHOWN:
            doc.p(f"{len(findings) - FINDINGS_SHOWN} more findings: run `dsgw audit --json`.")
    doc.h(3, "日志与存证不一致告警 Audit-divergence alerts of the quarter")
    doc.table(_ALERT_HEADER, _alert_rows(audit.divergence_alerts, report.names))

    doc.h(2, "2. 权限变更 Permission changes")
    doc.p(
        f"{perms.total:,} records of the `governance` log stream in the quarter: every change "
        "of datasets, scenarios, merchants, agreements, clients, tokens, applications and "
        "supervision measures is one such record."
    )
    doc.table(
        ("类别 Group", "记录 Records"),
        [(_GROUP_TITLES[g], str(n)) for g, n in perms.by_group],
        numeric=(1,),
    )
    doc.chart(
        charts.bar_chart(
            "Permission changes by group", [(_GROUP_TITLES[g], n) for g, n in perms.by_group]
        ),
        "权限变更分类 Permission changes by group",
    )
    doc.h(3, "按类型 By kind")
    doc.table(
        ("类型 Kind", "类别 Group", "记录 Records"),
        [(Mono(kind), _GROUP_TITLES[change_group(kind)], str(n)) for kind, n in perms.by_kind],
        numeric=(2,),
    )
    for group in CHANGE_GROUPS:
        listed = [c for c in perms.changes if c.group == group]
        if not listed:
            continue
        doc.h(3, _GROUP_TITLES[group])
        doc.table(_CHANGE_HEADER, _change_rows(listed))
    if perms.unlisted:
        doc.p(
            f"{perms.unlisted:,} later records are counted above but not listed: "
            "`dsgw calls --stream governance --json` lists them.",
            note=True,
        )

    doc.h(2, "3. 告警与处置 Alerts and their handling")
    doc.p(
        f"{alerts.raised:,} alerts were raised in the quarter; {alerts.handled} were "
        f"acknowledged or resolved by its end ({alerts.resolved} resolved). Time from first "
        f"sighting to handling: median {_duration(alerts.median_time_to_handle)}, longest "
        f"{_duration(alerts.max_time_to_handle)}; to resolution: median "
        f"{_duration(alerts.median_time_to_resolve)}."
    )
    doc.table(
        ("级别 Severity", "告警 Alerts"),
        [(s, str(n)) for s, n in alerts.by_severity],
        numeric=(1,),
    )
    severities_seen = [s for s, _ in alerts.by_severity]
    doc.chart(
        charts.stacked_bar_chart(
            "Alerts by rule and severity",
            [rule for rule, _ in alerts.by_rule_severity],
            [
                (s, [dict(cells).get(s, 0) for _, cells in alerts.by_rule_severity])
                for s in severities_seen
            ],
            colours=[_SEVERITY_COLOURS.get(s, "#7f7f7f") for s in severities_seen],
        ),
        "按规则和级别的告警 Alerts by rule and severity",
    )
    doc.table(
        ("规则 Rule", "告警 Alerts"),
        [(Mono(rule), str(n)) for rule, n in alerts.by_rule],
        numeric=(1,),
    )
    doc.h(3, "季度末未处置 Unhandled at the end of the quarter (also from earlier quarters)")
    doc.table(_ALERT_HEADER, _alert_rows(alerts.open_at_end, report.names))
    doc.h(3, "本季度告警 Alerts raised in the quarter")
    doc.table(_ALERT_HEADER, _alert_rows(alerts.items, report.names))

    doc.h(2, "4. 监管措施 Supervision measures and suspensions")
    doc.p(
        f"Imposed in the quarter: {len(measures.imposed)} ("
        + (
            ", ".join(f"{_TARGET_TITLES.get(k, k)} {n}" for k, n in measures.imposed_by_kind)
            or "none"
        )
        + f"); lifted: {len(measures.lifted)}; active at the end of the quarter: "
        f"{len(measures.active_at_end)}."
    )
    doc.h(3, "季度末仍有效 Active at the end of the quarter")
    doc.table(_MEASURE_HEADER, _measure_rows(measures.active_at_end))
    doc.h(3, "本季度实施 Imposed in the quarter")
    doc.table(_MEASURE_HEADER, _measure_rows(measures.imposed))
    doc.h(3, "本季度解除 Lifted in the quarter")
    doc.table(_MEASURE_HEADER, _measure_rows(measures.lifted))
    doc.h(3, "状态变更 Suspensions, reinstatements, terminations and delistings in the log")
    doc.p(
        "Status changes of merchants, scenarios, agreements (governance stream) and product "
        "delistings (products stream), including those made outside supervision measures."
    )
    doc.table(_CHANGE_HEADER, _change_rows(measures.status_changes))

    doc.h(2, "5. 上链存证 Anchoring health")
    if not anchoring.enabled:
        doc.p(
            "Anchoring is off in this deployment (chain = none): checkpoints are signed, but "
            "no root is anchored on a chain, so the log's integrity rests on the database and "
            "the checkpoint key alone.",
            note=True,
        )
    else:
        doc.p(
            f"Anchoring backend: {anchoring.backend}; registry "
            + (
                f"{anchoring.contract} on chain {anchoring.chain_id}."
                if anchoring.contract
                else "none recorded yet: nothing has been anchored."
            ),
            note=anchoring.contract is None,
        )
    doc.table(
        (
            "流 Stream",
            "检查点 Checkpoints",
            "锚定 Anchors (status)",
            "确认 Final",
            "最终锚定大小 Final size at end",
            "最大延迟 Largest lag",
            "重排 Requeues",
            "积压 Backlog now",
        ),
        [
            (
                s.stream,
                str(s.checkpoints),
                ", ".join(f"{status} {n}" for status, n in s.anchors) or "0",
                str(s.final_in_quarter),
                str(s.final_size_at_end),
                f"{_duration(s.max_lag)} ({s.max_lag_record})" if s.max_lag_record else "-",
                str(s.requeues),
                f"{s.unanchored_checkpoints} checkpoints, {s.unanchored_records} records, "
                f"oldest {_time(s.oldest_unanchored_at)}",
            )
            for s in anchoring.streams
        ],
        numeric=(1, 3, 4, 6),
    )
    doc.p(
        "Largest lag: over the anchors that became final in the quarter, the longest time "
        "from the oldest record an anchor newly covered to the moment it became final. "
        "Backlog: checkpoints not yet covered by a final anchor when the report was made."
    )
    doc.h(3, "锚定交易 Anchor transactions signed in the quarter")
    doc.table(
        ("交易状态 Transaction status", "交易 Transactions"),
        [(s, str(n)) for s, n in anchoring.transactions],
        numeric=(1,),
    )
    doc.p(
        f"Anchors of the quarter that needed more than one transaction (re-sent or fee "
        f"bumped): {anchoring.resent_anchors}."
    )
    _heads(doc, header, "6.")
    return doc


# -- the operations report -------------------------------------------------------------------


def _call_rows(counts: Sequence[CallCount]) -> list[tuple[Cell, ...]]:
    return [
        (
            _named(c.id, c.name),
            str(c.total),
            str(c.allowed),
            str(c.refused),
            str(c.errors),
            _share(c.refused, c.total),
        )
        for c in counts
    ]


_CALL_HEADER = (
    "名称 Name",
    "调用 Calls",
    "允许 Allowed",
    "拒绝 Refused",
    "错误 Errors",
    "拒绝率 Refused share",
)


@_in_zone
def _operations(report: OperationsReport) -> _Doc:
    header, calls, timeliness, products = (
        report.header,
        report.calls,
        report.timeliness,
        report.products,
    )
    doc = _Doc(f"授权运营情况报告 Operations report {header.period.label}")
    doc.h(1, doc.title)
    doc.p(
        "公共数据授权运营情况定期报告 (CS23 art. 23; ZW art. 31-33): calls per scenario and "
        "merchant, review timeliness, products, trades and revenue, the circular on source "
        "departments and, for a calendar year, the ratings of the yearly evaluation."
    )
    _header(doc, header)

    doc.h(2, "摘要 Summary")
    decided = sum(s.decided for s in timeliness.steps)
    on_time = sum(s.on_time for s in timeliness.steps)
    answered = sum(d.objections.answered for d in report.departments.departments)
    answered_in_time = sum(d.objections.in_time for d in report.departments.departments)
    doc.table(
        ("指标 Figure", "数值 Value"),
        [
            (
                "数据调用 Data calls",
                f"{calls.totals.total:,} ({calls.totals.allowed:,} allowed, "
                f"{calls.totals.refused:,} refused, {calls.totals.errors:,} errors) in "
                f"{len(calls.by_scenario)} scenario(s) by {len(calls.by_merchant)} merchant(s)",
            ),
            (
                "审核时效 Review timeliness",
                f"{decided} decisions, {_share(on_time, decided)} within the deadline; "
                f"{sum(s.deemed for s in timeliness.steps)} deemed approvals; "
                f"{len(timeliness.overdue)} overdue at the end of the period",
            ),
            (
                "数据异议 Data-quality objections",
                f"{sum(d.objections.received for d in report.departments.departments)} "
                f"received, {answered} answered, {_share(answered_in_time, answered)} in time; "
                f"{sum(d.objections.overdue_at_end for d in report.departments.departments)} "
                "overdue at the end of the period",
            ),
            (
                "产品 Products",
                ", ".join(f"{s} {n}" for s, n in products.by_status) or "none",
            ),
            (
                "交易 Trades",
                f"{products.trades:,} trades, {products.amount:,} yuan; "
                f"{len(products.settlements)} settlement(s)",
            ),
        ],
    )

    doc.h(2, "1. 调用情况 Calls")
    doc.p(
        "Data-plane calls (verify, query, aggregate) recorded in the `calls` log stream, "
        "allowed and refused, counted from the log's indexed columns."
    )
    doc.chart(
        charts.line_chart(
            f"Data calls per {calls.granularity}",
            [b.label[5:] if calls.granularity == "day" else b.label for b in calls.series],
            [
                ("allowed 允许", [b.allowed for b in calls.series]),
                ("refused 拒绝", [b.refused for b in calls.series]),
            ],
        ),
        ("每日" if calls.granularity == "day" else "每月")
        + f"调用量 Data calls per {calls.granularity}",
    )
    doc.h(3, "按场景 By scenario")
    doc.table(_CALL_HEADER, _call_rows(calls.by_scenario), numeric=(1, 2, 3, 4, 5))
    doc.chart(
        charts.stacked_bar_chart(
            "Data calls by scenario",
            [_named(c.id, c.name) for c in calls.by_scenario[:20]],
            [
                ("allowed 允许", [c.allowed for c in calls.by_scenario[:20]]),
                ("refused 拒绝", [c.refused for c in calls.by_scenario[:20]]),
                ("error 错误", [c.errors for c in calls.by_scenario[:20]]),
            ],
        ),
        "按场景调用量 Data calls by scenario",
    )
    doc.h(3, "按商户 By merchant")
    doc.table(_CALL_HEADER, _call_rows(calls.by_merchant), numeric=(1, 2, 3, 4, 5))
    doc.chart(
        charts.stacked_bar_chart(
            "Data calls by merchant",
            [_named(c.id, c.name) for c in calls.by_merchant[:20]],
            [
                ("allowed 允许", [c.allowed for c in calls.by_merchant[:20]]),
                ("refused 拒绝", [c.refused for c in calls.by_merchant[:20]]),
                ("error 错误", [c.errors for c in calls.by_merchant[:20]]),
            ],
        ),
        "按商户调用量 Data calls by merchant",
    )
    doc.h(3, "主要拒绝原因 Top refusal reasons")
    doc.table(
        ("问题类型 Problem type", "拒绝 Refusals"),
        [
            (Mono(f"/problems/{r}" if r != "(none)" else r), str(n))
            for r, n in calls.refusal_reasons[:15]
        ],
        numeric=(1,),
    )
    if calls.reasons_read < calls.totals.refused:
        doc.p(
            f"Reasons read from the newest {calls.reasons_read:,} of "
            f"{calls.totals.refused:,} refusals.",
            note=True,
        )
    doc.h(3, "其他调用 Other calls")
    doc.table(
        ("类型 Kind", "调用 Calls"),
        [(Mono(kind), str(n)) for kind, n in calls.other_calls],
        numeric=(1,),
    )

    doc.h(2, "2. 审核时效 Review timeliness")
    doc.p(
        "Decisions made in the period against their deadlines in working days on the "
        "official holiday schedule (ZW art. 18, 21): an onboarding answer within 5, the "
        "compliance check within 5, each source department's review within 10 (or its one "
        "extension). A department silent past its deadline is deemed to approve; a deemed "
        "approval is not counted as within the deadline. Working days: from the submission "
        "(or the review's opening) to the decision."
    )
    doc.table(
        (
            "环节 Step",
            "时限 Deadline",
            "决定 Decisions",
            "按时 On time",
            "按时率 Share",
            "视为同意 Deemed",
            "延期 Extended",
            "中位工作日 Median working days",
            "期末未结 Open at end",
            "期末超期 Overdue at end",
        ),
        [
            (
                _STEP_TITLES[s.step],
                f"{s.deadline_days} working days",
                str(s.decided),
                str(s.on_time),
                _share(s.on_time, s.decided),
                str(s.deemed),
                str(s.extended),
                f"{s.median_working_days:g}" if s.median_working_days is not None else "-",
                str(s.open_at_end),
                str(s.overdue_at_end),
            )
            for s in timeliness.steps
        ],
        numeric=(2, 3, 4, 5, 6, 7, 8, 9),
    )
    doc.chart(
        charts.stacked_bar_chart(
            "Decisions by step",
            [_STEP_TITLES[s.step] for s in timeliness.steps],
            [
                ("on time 按时", [s.on_time for s in timeliness.steps]),
                ("late 超时", [s.decided - s.on_time - s.deemed for s in timeliness.steps]),
                ("deemed 视为同意", [s.deemed for s in timeliness.steps]),
            ],
        ),
        "各环节决定 Decisions by step",
    )
    if timeliness.uncovered_years:
        doc.p(
            "No holiday schedule is loaded for "
            + ", ".join(str(y) for y in timeliness.uncovered_years)
            + ": working days touching those years were not counted.",
            note=True,
        )
    doc.h(3, "期末超期未结 Overdue at the end of the period")
    doc.table(
        (
            "环节 Step",
            "申请 Application",
            "责任方 Party",
            "期限 Due",
            "超期工作日 Working days overdue",
        ),
        [
            (
                _STEP_TITLES[o.step],
                Mono(o.subject),
                o.party,
                _deadline(o.due_at) + (" (暂定 provisional)" if o.provisional else ""),
                str(o.working_days_overdue) if o.working_days_overdue is not None else "-",
            )
            for o in timeliness.overdue
        ],
        numeric=(4,),
    )

    doc.h(2, "3. 产品、交易与收益 Products, trades and revenue")
    doc.p(
        f"Products by current status; {products.registered} registered in the period. "
        f"Trades the exchange reported as made in the period: {products.trades:,} "
        f"({products.quantity:,} units, {products.amount:,} yuan)."
    )
    doc.table(
        ("状态 Status", "产品 Products"),
        [(s, str(n)) for s, n in products.by_status],
        numeric=(1,),
    )
    doc.h(3, "按产品交易 Trades by product")
    doc.table(
        ("产品 Product", "交易 Trades", "数量 Units", "金额 Amount (yuan)"),
        [
            (_named(p.id, p.name), str(p.trades), f"{p.quantity:,}", f"{p.amount:,}")
            for p in products.by_product
        ],
        numeric=(1, 2, 3),
    )
    doc.chart(
        charts.bar_chart(
            "Trade amount by product (yuan)",
            [(_named(p.id, p.name), float(p.amount)) for p in products.by_product[:20]],
        ),
        "按产品交易金额 Trade amount by product (yuan)",
    )
    doc.h(3, "结算 Settlements")
    doc.table(
        (
            "结算 Settlement",
            "结算期 Period",
            "交易 Trades",
            "金额 Amount (yuan)",
            "结算时间 Settled",
        ),
        [
            (Mono(s.id), s.period, str(s.trades), f"{s.amount:,}", _time(s.settled_at))
            for s in products.settlements
        ],
        numeric=(2, 3),
    )
    doc.h(3, "收益分配 Revenue statement")
    if products.revenue_months:
        doc.p(
            "Settled trades of "
            + ", ".join(products.revenue_months)
            + " split by each product's agreement between the data owner's budget, the "
            "operator and the processor (each trade exact to the cent; see `dsgw revenue`)."
        )
    doc.table(
        ("角色 Role", "主体 Party", "交易 Trades", "金额 Total (yuan)"),
        [(r.role, r.party, str(r.trades), f"{r.total:,}") for r in products.revenue],
        numeric=(2, 3),
    )
    if products.months_without_settlement:
        doc.p(
            "No trade was settled for " + ", ".join(products.months_without_settlement) + ".",
            note=True,
        )
    partial = not header.period.whole_months()
    if partial:
        doc.p(
            "Settlement periods are calendar months and this period covers none whole: "
            "no revenue statement applies.",
            note=True,
        )
    _departments(doc, report.departments, "4.")
    if report.evaluation is not None:
        _evaluation(doc, report.evaluation, report.timeliness, report.departments, "5.")
        _heads(doc, header, "6.")
    else:
        _heads(doc, header, "5.")
    return doc


def _median(value: float | None) -> str:
    return f"{value:g}" if value is not None else "-"


def _departments(doc: _Doc, section: DepartmentsSection, number: str) -> None:
    doc.h(2, f"{number} 数源部门通报 Circular on source departments")
    doc.p(
        "Per source department (ZW art. 31): its catalogue entries and their upkeep, the "
        "timeliness of its reviews of use applications (ZW art. 21), and the data-quality "
        "objections routed to it (ZW art. 11; the objection mechanism of GY). An objection is "
        "answered in time before its deadline in working days; one unanswered past it is "
        "overdue and stays open (never deemed answered). Accepted: first answers agreeing "
        "with the objection (accepted, or corrected at once). Working days: from filing to "
        "the first answer."
    )
    doc.h(3, "审核与异议 Reviews and objections")
    doc.table(
        (
            "部门 Department",
            "审核决定 Reviews decided",
            "按时 On time",
            "视为同意 Deemed",
            "审核超期 Reviews overdue",
            "收到异议 Objections received",
            "答复 Answered",
            "按时答复 In time",
            "期末超期 Overdue at end",
            "采纳 Accepted",
            "驳回 Rejected",
            "已更正 Corrected",
            "中位工作日 Median working days",
        ),
        [
            (
                d.department,
                str(d.reviews.decided),
                str(d.reviews.on_time),
                str(d.reviews.deemed),
                str(d.reviews.overdue_at_end),
                str(d.objections.received),
                str(d.objections.answered),
                str(d.objections.in_time),
                str(d.objections.overdue_at_end),
                str(d.objections.accepted),
                str(d.objections.rejected),
                str(d.objections.corrected),
                _median(d.objections.median_working_days),
            )
            for d in section.departments
        ],
        numeric=tuple(range(1, 13)),
    )
    if section.uncovered_years:
        doc.p(
            "No holiday schedule is loaded for "
            + ", ".join(str(y) for y in section.uncovered_years)
            + ": working days touching those years were not counted.",
            note=True,
        )
    doc.h(3, "目录编制与更新 Catalogue entries and their freshness")
    doc.p(
        "Entries each department provides at the end of the period, with their declared "
        "update frequency and their last registration or update in the catalogue (from the "
        "governance log). The gateway does not see when a source refreshes its rows: "
        "staleness shows as the objections that reported a stale value."
    )
    doc.table(
        (
            "部门 Department",
            "目录 Entries",
            "期内更新 Updated in period",
            "距上次更新中位天数 Median days since update",
        ),
        [
            (
                d.department,
                str(len(d.entries)),
                str(d.entries_updated),
                _median(d.median_days_since_update),
            )
            for d in section.departments
            if d.entries
        ],
        numeric=(1, 2, 3),
    )
    doc.table(
        (
            "目录 Entry",
            "部门 Department",
            "更新频率 Update frequency",
            "上次更新 Last updated",
            "天数 Days",
            "过时异议 Stale-value objections",
        ),
        [
            (
                _named(e.dataset_id, e.name) + ("" if e.grantable else " (not operated)"),
                d.department,
                e.update_frequency,
                _time(e.last_updated),
                str(e.days_since_update),
                str(e.stale_objections),
            )
            for d in section.departments
            for e in d.entries
        ],
        numeric=(4, 5),
    )


def _evaluation(
    doc: _Doc,
    section: EvaluationSection,
    timeliness: TimelinessSection,
    departments: DepartmentsSection,
    number: str,
) -> None:
    doc.h(2, f"{number} 年度评价 Yearly evaluation {section.year}")
    doc.p(
        "The ratings of the operator by source departments, district bureaus and merchants "
        "that the data bureau takes into its yearly evaluation (ZW art. 33), on the forms it "
        "set, beside the figures this report measures. Merchants are counted, not named; "
        f"their scores are shown from {MIN_MERCHANT_RATINGS} ratings on."
    )
    decided = sum(s.decided for s in timeliness.steps)
    on_time = sum(s.on_time for s in timeliness.steps)
    answered = sum(d.objections.answered for d in departments.departments)
    in_time = sum(d.objections.in_time for d in departments.departments)
    rows: list[tuple[Cell, ...]] = [
        ("测量 Measured", "审核时效 Review decisions in time", _share(on_time, decided)),
        ("测量 Measured", "异议按时答复 Objections answered in time", _share(in_time, answered)),
    ]
    for kind in section.kinds:
        overall = kind.overall
        rows.append(
            (
                "评价 Rated",
                f"{_RATER_TITLES.get(kind.rater_kind, kind.rater_kind)}: {kind.ratings} rating(s)",
                f"{100 * overall:.1f} % of the maximum" if overall is not None else "-",
            )
        )
    doc.table(("来源 Source", "指标 Figure", "数值 Value"), rows)
    for kind in section.kinds:
        doc.h(3, _RATER_TITLES.get(kind.rater_kind, kind.rater_kind))
        raters = ", ".join(kind.raters)
        doc.p(
            f"{kind.ratings} rating(s), form open until {kind.closes_on.isoformat()}"
            + (f": {raters}." if raters else ".")
        )
        if kind.withheld:
            doc.p(
                f"Fewer than {MIN_MERCHANT_RATINGS} merchants rated: their scores are not shown.",
                note=True,
            )
        doc.table(
            ("评价项 Criterion", "满分 Maximum", "平均 Mean", "最低 Lowest", "最高 Highest"),
            [
                (
                    _named(c.id, c.title),
                    str(c.max),
                    f"{c.mean:.2f}" if c.mean is not None else "-",
                    str(c.lowest) if c.lowest is not None else "-",
                    str(c.highest) if c.highest is not None else "-",
                )
                for c in kind.criteria
            ],
            numeric=(1, 2, 3, 4),
        )


# -- writers -------------------------------------------------------------------------------


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


def _markdown(doc: _Doc) -> str:
    out: list[str] = []
    for block in doc.blocks:
        if isinstance(block, Heading):
            out.append(f"{'#' * block.level} {_md_inline(block.text)}")
        elif isinstance(block, Para):
            out.append(("> " if block.note else "") + _md_inline(block.text))
        elif isinstance(block, Table):
            if not block.rows:
                out.append(f"*{_md(block.empty)}*")
                continue
            lines = ["| " + " | ".join(_md(h) for h in block.header) + " |"]
            lines.append(
                "|"
                + "|".join(
                    "---:" if i in block.numeric else "---" for i in range(len(block.header))
                )
                + "|"
            )
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            out.append("\n".join(lines))
        elif isinstance(block, Chart):
            continue  # charts are drawn in the HTML version; the tables hold the figures
    return "\n\n".join(out) + "\n"


def _h(text: str) -> str:
    return html.escape(text, quote=True)


def _h_inline(text: str) -> str:
    parts = text.split("`")
    if len(parts) % 2 == 0:
        return _h(text)
    return "".join(_h(p) if i % 2 == 0 else f"<code>{_h(p)}</code>" for i, p in enumerate(parts))


def _h_cell(cell: Cell) -> str:
    if isinstance(cell, Mono):
        return f"<code>{_h(cell.text)}</code>"
    return _h(cell)


_CSS = """
:root { color-scheme: light; }
body { font-family: "Noto Sans CJK SC", "PingFang SC", "Microsoft YaHei", sans-serif;
  margin: 2em auto; max-width: 72em; padding: 0 1.5em; color: #1d1d1d; line-height: 1.5; }
h1 { font-size: 1.6em; border-bottom: 2px solid #2f6f9f; padding-bottom: .3em; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.05em; margin-top: 1.3em; }
table { border-collapse: collapse; margin: .6em 0 1em; font-size: .88em; width: 100%; }
th, td { border: 1px solid #c8c8c8; padding: .25em .5em; text-align: left;
  vertical-align: top; overflow-wrap: anywhere; }
th { background: #eef3f7; }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
code { font-family: "Noto Sans Mono", Consolas, monospace; font-size: .92em; }
p.note { background: #fff6e5; border-left: 4px solid #d9822b; padding: .4em .7em; }
p.empty { color: #666; font-style: italic; }
figure { margin: .6em 0 1.2em; }
figcaption { font-size: .85em; color: #555; }
nav ol { columns: 2; font-size: .9em; }
footer { margin-top: 2em; font-size: .8em; color: #666; }
@page { size: A4; margin: 15mm; }
@media print {
  body { margin: 0; max-width: none; font-size: 10pt; }
  h2, h3 { break-after: avoid; }
  table, figure { break-inside: avoid; }
  nav { display: none; }
}
"""


def _html(doc: _Doc) -> str:
    body: list[str] = []
    toc: list[str] = []
    number = 0
    for block in doc.blocks:
        if isinstance(block, Heading):
            if block.level == 2:
                number += 1
                toc.append(f'<li><a href="#s{number}">{_h(block.text)}</a></li>')
                body.append(f'<h2 id="s{number}">{_h_inline(block.text)}</h2>')
            else:
                level = min(max(block.level, 1), 6)
                body.append(f"<h{level}>{_h_inline(block.text)}</h{level}>")
        elif isinstance(block, Para):
            cls = ' class="note"' if block.note else ""
            body.append(f"<p{cls}>{_h_inline(block.text)}</p>")
        elif isinstance(block, Table):
            if not block.rows:
                body.append(f'<p class="empty">{_h(block.empty)}</p>')
                continue
            head = "".join(f"<th>{_h(h)}</th>" for h in block.header)
            rows = "".join(
                "<tr>"
                + "".join(
                    f'<td class="n">{_h_cell(c)}</td>'
                    if i in block.numeric
                    else f"<td>{_h_cell(c)}</td>"
                    for i, c in enumerate(row)
                )
                + "</tr>"
                for row in block.rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(block, Chart):
            body.append(f"<figure>{block.svg}<figcaption>{_h(block.caption)}</figcaption></figure>")
    title = _h(doc.title)
    first = body[0] if body else ""
    nav = f"<nav><ol>{''.join(toc)}</ol></nav>" if toc else ""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="zh-CN">\n<head>\n<meta charset="utf-8">\n'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + first
        + "\n"
        + nav
        + "\n"
        + "\n".join(body[1:])
        + "\n<footer>dsgw · generated from the gateway's store and log; see the log heads "
        "section to check it.</footer>\n</body>\n</html>\n"
    )


def security_markdown(report: SecurityReport) -> str:
    return _markdown(_security(report))


def security_html(report: SecurityReport) -> str:
    return _html(_security(report))


def operations_markdown(report: OperationsReport) -> str:
    return _markdown(_operations(report))


def operations_html(report: OperationsReport) -> str:
    return _html(_operations(report))


def render_security(report: SecurityReport, fmt: Format) -> str:
    return security_html(report) if fmt == "html" else security_markdown(report)


def render_operations(report: OperationsReport, fmt: Format) -> str:
    return operations_html(report) if fmt == "html" else operations_markdown(report)
