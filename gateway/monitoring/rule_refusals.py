"""The ``refusal-burst``, ``invalid-tokens`` and ``out-of-hours`` rules."""

from __future__ import annotations

from collections import defaultdict

from gateway.governance.policy import UNKNOWN_NAME
from gateway.monitoring.calls import CallEvent
from gateway.monitoring.models import Detection, Severity
from gateway.monitoring.pattern_state import peak_in, refusal_subject
from gateway.monitoring.rule_context import (
    RuleContext,
    burst_figures,
    group_points,
    last_seqs,
    minutes,
    peak_count,
    severity,
)
from gateway.monitoring.window_state import StateWindows

# -- refusal-burst and invalid-tokens -------------------------------------------------------


class RefusalBurst:
    """Many refused (403) data or delivery calls from one merchant (or, for buyers, one
    client) within ``refusal_window``: someone probing for data outside its scenario or
    purchase. Fires at ``refusal_threshold`` refusals; a few refusals are ordinary mistakes.
    """

    name = "refusal-burst"

    _subject = staticmethod(refusal_subject)

    async def evaluate(self, ctx: RuleContext) -> list[Detection]:
        t = ctx.thresholds
        news = [e for e in ctx.batch if self._subject(e) is not None]
        if not news:
            return []
        points = group_points(news, self._subject)
        since = min(e.at for e in news) - t.refusal_window
        denied: list[CallEvent] | None = None
        detections = []
        for subject, subject_points in sorted(points.items()):
            kept = None
            if isinstance(ctx.windows, StateWindows):
                kept = ctx.windows.refusals(subject, since)
            if kept is not None:
                peak = peak_in(kept, subject_points, t.refusal_window)
            else:
                if denied is None:
                    denied = await ctx.windows.denied_calls(since)
                mine = [e for e in denied if self._subject(e) == subject]
                peak = peak_count(mine, subject_points, t.refusal_window)
            if peak is None or peak.count < t.refusal_threshold:
                continue
            # Datasets and scenarios come from the refused calls' paths: names the policy
            # does not hold are one "unknown" (figures) or none (the alert's scenario).
            datasets: dict[str, int] = defaultdict(int)
            for event in peak.members:
                if event.dataset_id:
                    known = event.dataset_id in ctx.snapshot.datasets
                    datasets[event.dataset_id if known else UNKNOWN_NAME] += 1
            scenario_id = peak.members[-1].scenario_id
            if scenario_id not in ctx.snapshot.scenarios:
                scenario_id = None
            window = minutes(t.refusal_window)
            merchant_id = (
                subject.removeprefix("merchant:") if subject.startswith("merchant:") else None
            )
            detections.append(
                Detection(
                    rule=self.name,
                    key=subject,
                    severity=severity(Severity.WARNING, peak.count, t.refusal_threshold),
                    title=f"Refusal burst: {peak.count} refused calls by {subject} in {window}",
                    detail=(
                        f"{peak.count} data calls by {subject} were refused (403) within "
                        f"{window} up to {peak.at.isoformat()} (threshold "
                        f"{t.refusal_threshold}): probing for data outside its authorization."
                    ),
                    at=peak.at,
                    figures={
                        **burst_figures(peak, t.refusal_threshold, t.refusal_window, "forbidden"),
                        "datasets": dict(sorted(datasets.items())),
                    },
                    records=last_seqs((e.seq for e in peak.members), t.evidence_records),
                    merchant_id=merchant_id,
                    scenario_id=scenario_id if merchant_id else None,
                )
            )
        return detections


class InvalidTokens:
    """Repeated 401s (invalid, expired, forged or revoked tokens; failed client
    authentication) from one remote address or one client id within
    ``invalid_token_window``: token guessing or a stolen, revoked credential still in use.
    Fires at ``invalid_token_threshold``; one bad or expired token is routine.
    """

    name = "invalid-tokens"

    async def evaluate(self, ctx: RuleContext) -> list[Detection]:
        t = ctx.thresholds
        news = [e for e in ctx.batch if e.status == 401]
        if not news:
            return []
        since = min(e.at for e in news) - t.invalid_token_window
        denied: list[CallEvent] | None = None
        detections = []
        clients = ctx.snapshot.clients
        for prefix, attribute in (("remote", "remote"), ("client", "client_id")):

            def subject(
                event: CallEvent, attribute: str = attribute, prefix: str = prefix
            ) -> str | None:
                value = getattr(event, attribute)
                if not value:
                    return None
                # A client id arrives with the token request, before authentication: only
                # ids the policy holds name an alert (and so a line of the security
                # report); every other id is one "client:unknown".
                if attribute == "client_id" and value not in clients:
                    value = UNKNOWN_NAME
                return f"{prefix}:{value}"

            points = group_points(news, subject)
            for key, key_points in sorted(points.items()):
                kept = None
                # Unknown client ids are one subject: their refusals are not kept together.
                if isinstance(ctx.windows, StateWindows) and key != f"client:{UNKNOWN_NAME}":
                    kept = ctx.windows.refusals(f"401 {key}", since)
                if kept is not None:
                    peak = peak_in(kept, key_points, t.invalid_token_window)
                else:
                    if denied is None:
                        denied = [
                            e for e in await ctx.windows.denied_calls(since) if e.status == 401
                        ]
                    mine = [e for e in denied if subject(e) == key]
                    peak = peak_count(mine, key_points, t.invalid_token_window)
                if peak is None or peak.count < t.invalid_token_threshold:
                    continue
                window = minutes(t.invalid_token_window)
                detections.append(
                    Detection(
                        rule=self.name,
                        key=key,
                        severity=severity(Severity.WARNING, peak.count, t.invalid_token_threshold),
                        title=f"Invalid tokens: {peak.count} refused as unauthenticated from {key}",
                        detail=(
                            f"{peak.count} calls from {key} were refused as unauthenticated "
                            f"(401) within {window} up to {peak.at.isoformat()} (threshold "
                            f"{t.invalid_token_threshold})."
                        ),
                        at=peak.at,
                        figures=burst_figures(
                            peak,
                            t.invalid_token_threshold,
                            t.invalid_token_window,
                            "unauthenticated",
                        ),
                        records=last_seqs((e.seq for e in peak.members), t.evidence_records),
                    )
                )
        return detections


# -- out-of-hours ------------------------------------------------------------------------


class OutOfHours:
    """Allowed data calls outside the hours the scenario allows (its optional ``hours``:
    time of day, every day or working days only, in its time zone). Such calls are not
    refused; the supervisor is told. Fires at ``out_of_hours_min_calls`` calls of one
    merchant in one scenario within a batch; further ones add occurrences to the alert.
    """

    name = "out-of-hours"

    async def evaluate(self, ctx: RuleContext) -> list[Detection]:
        t = ctx.thresholds
        found: dict[tuple[str, str], list[CallEvent]] = defaultdict(list)
        for event in ctx.batch:
            if event.kind != "data" or event.decision != "allow":
                continue
            if event.merchant_id is None or event.scenario_id is None:
                continue
            scenario = ctx.snapshot.scenarios.get(event.scenario_id)
            if scenario is None or scenario.hours is None:
                continue
            if not scenario.hours.allows(event.at, ctx.is_working_day):
                found[(event.merchant_id, event.scenario_id)].append(event)
        detections = []
        for (merchant_id, scenario_id), events in sorted(found.items()):
            if len(events) < t.out_of_hours_min_calls:
                continue
            hours = ctx.snapshot.scenarios[scenario_id].hours
            assert hours is not None
            allowed = hours.to_dict()
            last = max(events, key=lambda e: (e.at, e.seq))
            days = "working days" if hours.days == "workdays" else "every day"
            detections.append(
                Detection(
                    rule=self.name,
                    key=f"merchant:{merchant_id}|scenario:{scenario_id}",
                    severity=severity(Severity.WARNING, len(events), t.out_of_hours_min_calls),
                    title=(
                        f"Out of hours: {merchant_id} made {len(events)} data calls outside "
                        f"the hours of {scenario_id}"
                    ),
                    detail=(
                        f"Scenario {scenario_id} allows data use {allowed['from']}-"
                        f"{allowed['to']} ({allowed['timezone']}) on {days}; {merchant_id} "
                        f"made {len(events)} allowed data calls outside them, the last at "
                        f"{last.at.isoformat()}."
                    ),
                    at=last.at,
                    figures={
                        "count": len(events),
                        "threshold": t.out_of_hours_min_calls,
                        "hours": allowed,
                        "first_call": min(e.at for e in events).isoformat(),
                        "last_call": last.at.isoformat(),
                    },
                    records=last_seqs((e.seq for e in events), t.evidence_records),
                    merchant_id=merchant_id,
                    scenario_id=scenario_id,
                )
            )
        return detections
