"""The verification budget a grant declares: its bounds and its windows.

Pure, so that the policy models can hold one without loading the store
(:mod:`gateway.privacy.verify_budget` counts the negatives against it).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.catalog.checks import expect_keys
from gateway.clock import utc
from gateway.errors import ValidationError

__all__ = [
    "DEFAULT_NEGATIVES_PER_SUBJECT",
    "DEFAULT_WINDOW_HOURS",
    "MAX_NEGATIVES_PER_SUBJECT",
    "MAX_WINDOW_HOURS",
    "VerifyBudget",
]

DEFAULT_NEGATIVES_PER_SUBJECT = 5
DEFAULT_WINDOW_HOURS = 24
MAX_NEGATIVES_PER_SUBJECT = 1_000
MAX_WINDOW_HOURS = 24 * 31
_EPOCH = dt.datetime(1970, 1, 1)


def _check_window_hours(what: str, hours: object) -> int:
    if (
        not isinstance(hours, int)
        or isinstance(hours, bool)
        or not 1 <= hours <= MAX_WINDOW_HOURS
        or (24 % hours != 0 and hours % 24 != 0)
    ):
        raise ValidationError(
            f"{what}: window_hours must be a divisor of 24 (1, 2, 3, 4, 6, 8, 12, 24) or a "
            f"whole number of days in hours (48, 72, ... up to {MAX_WINDOW_HOURS}), so that "
            "windows align with the deployment zone's days"
        )
    return hours


@dataclass(frozen=True, slots=True)
class VerifyBudget:
    """At most ``negatives_per_subject`` negative verify answers about one subject per
    window of ``window_hours``, per agreement and dataset."""

    negatives_per_subject: int = DEFAULT_NEGATIVES_PER_SUBJECT
    window_hours: int = DEFAULT_WINDOW_HOURS

    def __post_init__(self) -> None:
        n = self.negatives_per_subject
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_NEGATIVES_PER_SUBJECT:
            raise ValidationError(
                f"verify_budget: negatives_per_subject must be an integer from 1 to "
                f"{MAX_NEGATIVES_PER_SUBJECT}"
            )
        _check_window_hours("verify_budget", self.window_hours)

    @classmethod
    def from_dict(cls, what: str, data: object) -> VerifyBudget:
        if not isinstance(data, Mapping):
            raise ValidationError(
                f'{what}: verify_budget must be an object like {{"negatives_per_subject": 5, '
                '"window_hours": 24}'
            )
        expect_keys(f"{what} verify_budget", data, set(), {"negatives_per_subject", "window_hours"})
        try:
            return cls(
                negatives_per_subject=data.get(
                    "negatives_per_subject", DEFAULT_NEGATIVES_PER_SUBJECT
                ),
                window_hours=data.get("window_hours", DEFAULT_WINDOW_HOURS),
            )
        except ValidationError as exc:
            raise ValidationError(f"{what}: {exc.detail}") from None

    def to_dict(self) -> dict[str, int]:
        return {
            "negatives_per_subject": self.negatives_per_subject,
            "window_hours": self.window_hours,
        }

    def window(self, now: dt.datetime, zone: dt.tzinfo) -> tuple[dt.datetime, dt.datetime]:
        """The fixed window ``[start, end)`` holding ``now``, as aware UTC datetimes."""
        local = utc(now).astimezone(zone).replace(tzinfo=None)
        hours = int((local - _EPOCH).total_seconds() // 3600)
        start_local = _EPOCH + dt.timedelta(hours=hours - hours % self.window_hours)
        end_local = start_local + dt.timedelta(hours=self.window_hours)
        return (
            start_local.replace(tzinfo=zone).astimezone(dt.UTC),
            end_local.replace(tzinfo=zone).astimezone(dt.UTC),
        )
