"""The groups of what protects the data: leak tracing, aggregates, verify budgets, monitoring.

Flat names are ``<group>_<field>`` throughout (``trace_max_rows``, ``alert_webhook_url``).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from gateway.errors import ConfigError
from gateway.settings.group import Group, at_least

__all__ = [
    "AggregateSettings",
    "AlertSettings",
    "MonitorSettings",
    "TraceSettings",
    "VerifySettings",
]


class TraceSettings(Group):
    """Leak tracing (docs/tracing.md)."""

    flat_prefix: ClassVar[str] = "trace_"

    # Leaked files handed to `POST /admin/trace` may be larger than any other request body;
    # only that route accepts them. Rows beyond trace_max_rows are refused, not truncated.
    upload_max_bytes: int = 32 * 1024 * 1024
    max_rows: int = 1_000_000
    # One canary row per this many rows of a dataset that allows canaries (0: none); the
    # probability a leaked row was obtained elsewhere than from its recipients (guilt model);
    # the false-attribution probability at or below which a trace names a recipient.
    canary_rate: int = 64
    p_guess: float = 0.5
    named_threshold: float = 1e-6

    @model_validator(mode="after")
    def _check(self) -> TraceSettings:
        if self.upload_max_bytes < 1024 or self.max_rows < 1:
            raise ConfigError(
                "settings: trace_upload_max_bytes must be at least 1024 and trace_max_rows "
                "at least 1"
            )
        if self.canary_rate < 0:
            raise ConfigError("settings: trace_canary_rate must be 0 (no canaries) or more")
        if not 0.0 <= self.p_guess < 1.0:
            raise ConfigError("settings: trace_p_guess must be at least 0 and below 1")
        if not 0.0 < self.named_threshold < 0.01:
            raise ConfigError("settings: trace_named_threshold must be above 0 and below 0.01")
        return self


class AggregateSettings(Group):
    """Aggregates over subjects (docs/privacy.md)."""

    flat_prefix: ClassVar[str] = "aggregate_"

    min_subjects: int = 10
    # Overlap audit of exact aggregates: a cell whose subjects (with their contributions)
    # differ from a cell answered before to the same merchant on the same dataset by 1 to
    # k-1 is withheld; k is this (2-30). 0 switches the audit off, which leaves exact
    # aggregates open to differencing again (tests, comparisons).
    overlap_min: int = 10
    # The most subject-level rows (one per subject and cell) one audited aggregate may
    # fetch; beyond, the call is refused with 422 aggregate-too-large ("narrow the filters").
    audit_max_rows: int = 100_000

    @model_validator(mode="after")
    def _check(self) -> AggregateSettings:
        at_least(self, 2, "min_subjects")
        if self.overlap_min != 0 and not 2 <= self.overlap_min <= 30:
            raise ConfigError(
                "settings: aggregate_overlap_min must be 0 (audit off) or from 2 to 30"
            )
        at_least(self, 1, "audit_max_rows")
        return self


class VerifySettings(Group):
    """Verification budget of a grant that declares none (docs/privacy.md): negative verify
    answers about one subject per agreement and fixed window, for claims of sensitive
    fields. window hours: a divisor of 24 or whole days."""

    flat_prefix: ClassVar[str] = "verify_"

    negatives_per_subject: int = 5
    window_hours: int = 24

    @model_validator(mode="after")
    def _check(self) -> VerifySettings:
        from gateway.errors import ValidationError
        from gateway.privacy.verify_limits import VerifyBudget  # here: it needs the errors

        try:
            VerifyBudget(self.negatives_per_subject, self.window_hours)
        except ValidationError as exc:
            raise ConfigError(
                f"settings: verify_negatives_per_subject / verify_window_hours: {exc.detail}"
            ) from None
        return self


class _AllAtLeastOne(Group):
    """A group whose every whole-number knob counts something and must be at least 1."""

    @model_validator(mode="after")
    def _counts_at_least_one(self) -> _AllAtLeastOne:
        at_least(
            self,
            1,
            *(
                name
                for name, value in self
                if isinstance(value, int) and not isinstance(value, bool)
            ),
        )
        return self


class MonitorSettings(_AllAtLeastOne):
    """Misuse monitoring over the calls stream (docs/alerts.md): `dsgw serve` runs it every
    interval; `dsgw monitor run --once` runs it by hand."""

    flat_prefix: ClassVar[str] = "monitor_"

    enabled: bool = True
    interval_seconds: int = 5
    batch_size: int = 5000
    # The most call records one rule window reads (newest first); bounds the monitor's work
    # per batch however busy a merchant is (docs/alerts.md).
    window_max_calls: int = 20000


class AlertSettings(_AllAtLeastOne):
    """The misuse rules' thresholds and where their alerts go (docs/alerts.md)."""

    flat_prefix: ClassVar[str] = "alert_"

    # volume-spike: allowed data calls in a window against the same window on previous days.
    volume_window_minutes: int = 60
    volume_baseline_days: int = 7
    volume_min_history_days: int = 3
    volume_min_calls: int = 100
    volume_factor: int = 3
    volume_sigmas: int = 5
    # enumeration and scraping: one window for identifier runs, distinct subjects, paging.
    pattern_window_minutes: int = 60
    enumeration_run: int = 20
    # enumeration: negative verify answers about one subject (sensitive claims) in one
    # budget window that raise the alert even while the budget still allows more.
    verify_negatives: int = 10
    scraping_distinct_subjects: int = 500
    scraping_pages: int = 20
    # refusal-burst: refused (403) data calls per merchant or client in a short window.
    refusal_window_minutes: int = 10
    refusal_threshold: int = 20
    # invalid-tokens: 401s per remote address or client id in a window.
    invalid_token_window_minutes: int = 10
    invalid_token_threshold: int = 20
    # out-of-hours: calls outside a scenario's hours before an alert is raised.
    out_of_hours_min_calls: int = 1
    # Where new alerts and their handling are pushed (https unless loopback), signed with
    # HMAC-SHA256 under alert_webhook_secret (DSGW_ALERT_WEBHOOK_SECRET; never logged).
    webhook_url: str = ""
    webhook_secret: str = Field(default="", repr=False)
    webhook_timeout_seconds: int = 5
    webhook_max_attempts: int = 8

    @model_validator(mode="after")
    def _webhook_is_signed(self) -> AlertSettings:
        if self.webhook_url and not self.webhook_secret:
            raise ConfigError(
                "settings: alert_webhook_url needs alert_webhook_secret "
                "(DSGW_ALERT_WEBHOOK_SECRET) so the receiver can check each alert's signature"
            )
        return self
