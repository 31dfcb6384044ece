"""Misuse rules over the calls stream (LZ24 §1.2: monitoring and early warning of misuse).

Each rule looks at one batch of new call records and at the window of earlier records it
needs (asked of :class:`~gateway.monitoring.calls.Windows`: the monitor's in-memory
windows, or the log itself; never past the batch),
and returns a :class:`~gateway.monitoring.models.Detection` per subject it fires on. A
subject fires at most once per batch, with the figures of its worst window; the store turns
repeated detections of one subject into one alert with more occurrences.

Windows end at the batch's own records, so only new activity can fire a rule. Count rules
(volume, refusals, invalid tokens) look at a window ending at every new record; pattern rules
(enumeration, scraping), which cost more per window, at the newest record of each subject and
at earlier ones at least a quarter window apart.

What a rule cannot see: values of sensitive fields are logged as keyed digests, so their
enumeration forms no run; it shows as many distinct subjects (``scraping``) or, for claims
verified about one subject, through the verification budget's figures the record carries
(``enumeration``); a rule sees only what the call record holds (no response bodies).

Thresholds come from settings (``alert_*``, docs/alerts.md). A detection whose figure reaches
three times its threshold is raised one severity level higher.
"""

from __future__ import annotations

from gateway.monitoring.rule_context import (
    Rule,
    RuleContext,
    Thresholds,
    longest_counter_run,
)
from gateway.monitoring.rule_patterns import Enumeration, Scraping
from gateway.monitoring.rule_refusals import InvalidTokens, OutOfHours, RefusalBurst
from gateway.monitoring.rule_volume import VolumeSpike

__all__ = [
    "DEFAULT_RULES",
    "Enumeration",
    "InvalidTokens",
    "OutOfHours",
    "RefusalBurst",
    "Rule",
    "RuleContext",
    "Scraping",
    "Thresholds",
    "VolumeSpike",
    "longest_counter_run",
]

DEFAULT_RULES: tuple[Rule, ...] = (
    VolumeSpike(),
    Enumeration(),
    Scraping(),
    RefusalBurst(),
    OutOfHours(),
    InvalidTokens(),
)
