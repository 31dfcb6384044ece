"""The ``volume-spike`` rule: a merchant's calls far above its own usual hour."""

from __future__ import annotations

import datetime as dt
import math
import statistics

from gateway.monitoring.calls import CallEvent
from gateway.monitoring.models import Detection, Severity
from gateway.monitoring.pattern_state import peak_in
from gateway.monitoring.rule_context import (
    Peak,
    RuleContext,
    group_points,
    last_seqs,
    minutes,
    number,
    peak_count,
    severity,
)
from gateway.monitoring.window_state import StateWindows

# -- volume-spike -------------------------------------------------------------------------


class VolumeSpike:
    """A merchant's allowed data calls in one window far above its own baseline.

    Baseline: the same window (same time of day) on each of the previous
    ``volume_baseline_days`` days since the merchant's first call, summarised robustly by
    median and MAD (one busy day does not move it). The window fires when its count reaches
    ``volume_min_calls`` (small merchants' noise never fires), ``volume_factor`` times the
    median, and the median plus ``volume_sigmas`` robust deviations (at least the Poisson
    spread, sqrt(median)). A merchant with less than ``volume_min_history_days`` of history
    has no baseline yet and never fires: a new merchant's first day is not a spike.
    """

    name = "volume-spike"

    async def evaluate(self, ctx: RuleContext) -> list[Detection]:
        t = ctx.thresholds
        news = [
            e
            for e in ctx.batch
            if e.kind == "data" and e.decision == "allow" and e.merchant_id is not None
        ]
        if not news:
            return []
        points = group_points(news, lambda e: e.merchant_id)
        since = min(e.at for e in news) - t.volume_window
        window_calls: list[CallEvent] | None = None
        detections = []
        for merchant_id, merchant_points in sorted(points.items()):
            kept = None
            if isinstance(ctx.windows, StateWindows):
                kept = ctx.windows.allowed_data(merchant_id, since)
            if kept is not None:
                # The monitor's windows: a bisection per point, not a pass over the window.
                peak = peak_in(kept, merchant_points, t.volume_window)
                total = len(kept) - kept.since(since)
            else:
                if window_calls is None:
                    window_calls = await ctx.windows.data_calls(points.keys(), since)
                allowed = [
                    e
                    for e in window_calls
                    if e.merchant_id == merchant_id and e.decision == "allow"
                ]
                peak = peak_count(allowed, merchant_points, t.volume_window)
                total = len(allowed)
            if peak is not None and total >= ctx.windows.max_calls:
                # The window read was cut at its bound: count the peak window in SQL.
                exact = await ctx.windows.count_allowed_data(
                    merchant_id, peak.at - t.volume_window, peak.at
                )
                peak = Peak(max(exact, peak.count), peak.at, peak.members)
            if peak is None or peak.count < t.volume_min_calls:
                continue
            detection = await self._against_baseline(ctx, merchant_id, peak)
            if detection is not None:
                detections.append(detection)
        return detections

    async def _against_baseline(
        self, ctx: RuleContext, merchant_id: str, peak: Peak
    ) -> Detection | None:
        t = ctx.thresholds
        first = await ctx.windows.first_allowed_data(merchant_id)
        window_start = peak.at - t.volume_window
        day = dt.timedelta(days=1)
        if first is None or window_start - first < t.volume_min_history_days * day:
            return None
        counts = []
        for back in range(1, t.volume_baseline_days + 1):
            end = peak.at - back * day
            if end < first:
                break
            counts.append(
                await ctx.windows.count_allowed_data(merchant_id, end - t.volume_window, end)
            )
        if len(counts) < t.volume_min_history_days:
            return None
        median = statistics.median(counts)
        mad = statistics.median(abs(c - median) for c in counts)
        spread = max(1.4826 * mad, math.sqrt(max(median, 1)))
        threshold = max(
            t.volume_min_calls,
            math.ceil(t.volume_factor * median),
            math.ceil(median + t.volume_sigmas * spread),
        )
        if peak.count < threshold:
            return None
        window = minutes(t.volume_window)
        return Detection(
            rule=self.name,
            key=f"merchant:{merchant_id}",
            severity=severity(Severity.WARNING, peak.count, threshold),
            title=f"Volume spike: {merchant_id} made {peak.count} data calls in {window}",
            detail=(
                f"{peak.count} allowed data calls in the {window} up to "
                f"{peak.at.isoformat()}, against a median of {number(median)} in the same "
                f"window on the previous {len(counts)} days (threshold {threshold})."
            ),
            at=peak.at,
            figures={
                "count": peak.count,
                "threshold": threshold,
                "window_seconds": int(t.volume_window.total_seconds()),
                "window_end": peak.at.isoformat(),
                "baseline": {
                    "days": len(counts),
                    "counts": counts,
                    "median": number(median),
                    "mad": number(mad),
                },
            },
            records=last_seqs((e.seq for e in peak.members), t.evidence_records),
            merchant_id=merchant_id,
        )
