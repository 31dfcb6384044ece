"""The differential-privacy budget of an ``aggregate-dp`` grant (docs/privacy.md), kept in
exact integer units so records and their hashes hold no floats."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from gateway.catalog.checks import expect_keys
from gateway.errors import ValidationError
from gateway.governance.models.fields import positive_int

__all__ = [
    "DELTA_UNIT",
    "EPSILON_UNIT",
    "MAX_CALLS_PER_PERIOD",
    "MAX_DELTA",
    "MAX_EPSILON",
    "MAX_GROUPS_PER_SUBJECT",
    "PRIVACY_PERIODS",
    "PrivacyBudget",
    "units_text",
]

PRIVACY_PERIODS = ("day", "month", "agreement")
MAX_EPSILON = 20.0
MAX_DELTA = 1e-4
MAX_CALLS_PER_PERIOD = 10_000
MAX_GROUPS_PER_SUBJECT = 100
EPSILON_UNIT = Decimal("0.000001")  # stored as integer millionths (privacy_spend)
DELTA_UNIT = Decimal("1e-12")  # stored as integer 10^-12 units


def units_text(count: int, unit: Decimal) -> str:
    """``count`` units as a plain decimal string without trailing zeros, e.g. "0.5"."""
    text = format(Decimal(count) * unit, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _fixed(what: str, value: object, unit: Decimal) -> int:
    """A positive finite number as an integer count of ``unit`` (refused if not exact)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValidationError(f"{what} must be a positive number")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValidationError(f"{what}: {value!r} is not a number") from None
    if not number.is_finite() or number <= 0:
        raise ValidationError(f"{what} must be a positive finite number, got {value!r}")
    units = number / unit
    if units != units.to_integral_value():
        raise ValidationError(f"{what} must be a multiple of {unit}, got {value!r}")
    return int(units)


@dataclass(frozen=True, slots=True)
class PrivacyBudget:
    """The differential-privacy budget of an ``aggregate-dp`` grant (docs/privacy.md).

    ``epsilon``/``delta`` bound what one agreement may spend on the dataset per ``period``
    ("day" or "month" in the deployment zone, or "agreement": its whole life); every call
    spends ``call_epsilon`` and :attr:`call_delta`, the total δ spread evenly over the
    calls the ε budget allows, so both run out together. ``max_groups_per_subject`` (L)
    is how many groups of one answer a subject may count in; the data plane truncates a
    subject's rows beyond L groups. ε is kept in millionths and δ in 10^-12 units, exactly
    as the budget store counts them."""

    epsilon_micros: int
    delta_picos: int
    period: str
    call_epsilon_micros: int
    max_groups_per_subject: int

    @property
    def epsilon(self) -> float:
        return self.epsilon_micros / 1e6

    @property
    def delta(self) -> float:
        return self.delta_picos / 1e12

    @property
    def call_epsilon(self) -> float:
        return self.call_epsilon_micros / 1e6

    @property
    def calls_per_period(self) -> int:
        return self.epsilon_micros // self.call_epsilon_micros

    @property
    def call_delta_picos(self) -> int:
        return self.delta_picos // self.calls_per_period

    @property
    def call_delta(self) -> float:
        return self.call_delta_picos / 1e12

    @classmethod
    def from_dict(cls, dataset_id: str, data: object) -> PrivacyBudget:
        what = f"grant {dataset_id}: privacy"
        if not isinstance(data, Mapping):
            raise ValidationError(
                f'{what} must be an object like {{"epsilon": 4.0, "delta": 1e-6, "period": '
                '"month", "call_epsilon": 0.5, "max_groups_per_subject": 1}'
            )
        expect_keys(
            what,
            data,
            {"epsilon", "delta", "period", "call_epsilon"},
            {"max_groups_per_subject"},
        )
        epsilon = _fixed(f"{what}.epsilon", data["epsilon"], EPSILON_UNIT)
        call_epsilon = _fixed(f"{what}.call_epsilon", data["call_epsilon"], EPSILON_UNIT)
        delta = _fixed(f"{what}.delta", data["delta"], DELTA_UNIT)
        if epsilon > MAX_EPSILON * 1_000_000:
            raise ValidationError(f"{what}.epsilon may not exceed {MAX_EPSILON:g} per period")
        if call_epsilon > epsilon:
            raise ValidationError(f"{what}.call_epsilon may not exceed epsilon")
        if epsilon // call_epsilon > MAX_CALLS_PER_PERIOD:
            raise ValidationError(
                f"{what}: epsilon / call_epsilon allows more than {MAX_CALLS_PER_PERIOD} "
                "calls per period; raise call_epsilon"
            )
        if delta > int(Decimal(str(MAX_DELTA)) / DELTA_UNIT):
            raise ValidationError(f"{what}.delta may not exceed {MAX_DELTA:g}")
        if delta // (epsilon // call_epsilon) < 1:
            raise ValidationError(
                f"{what}.delta must leave each of the {epsilon // call_epsilon} calls at "
                "least 1e-12"
            )
        period = data["period"]
        if period not in PRIVACY_PERIODS:
            raise ValidationError(f"{what}.period must be one of {', '.join(PRIVACY_PERIODS)}")
        groups = positive_int(
            f"{what}.max_groups_per_subject", data.get("max_groups_per_subject", 1)
        )
        assert groups is not None
        if groups > MAX_GROUPS_PER_SUBJECT:
            raise ValidationError(
                f"{what}.max_groups_per_subject may not exceed {MAX_GROUPS_PER_SUBJECT}"
            )
        return cls(epsilon, delta, period, call_epsilon, groups)

    def to_dict(self) -> dict[str, Any]:
        """ε and δ as exact decimal strings: records and their hashes hold no floats."""
        return {
            "epsilon": units_text(self.epsilon_micros, EPSILON_UNIT),
            "delta": units_text(self.delta_picos, DELTA_UNIT),
            "period": self.period,
            "call_epsilon": units_text(self.call_epsilon_micros, EPSILON_UNIT),
            "max_groups_per_subject": self.max_groups_per_subject,
        }
