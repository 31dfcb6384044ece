"""Standing and scope: the one place that decides whether a merchant may use a scenario's data.

Pure functions over a :class:`PolicySnapshot` and the moment of the call: no I/O, no HTTP.
Token issue and token verification decide *standing* (merchant active → data channel open →
scenario usable → agreement active) with :func:`decide_standing` / :func:`token_standing`;
the data plane decides *scope* (one scenario, dataset granted, mode allowed, dataset still
grantable, supply not suspended) with :func:`decide_scope`; product delivery and trade
decide whether a product may be delivered with :func:`product_deliverable`. So "where is rule
X enforced?" has one answer, listed in ``docs/rules.md``.

Every refusal raises the typed error the HTTP layer maps to its problem type
(:class:`SuspendedError`, :class:`MeasureInForceError`, :class:`AgreementError`,
:class:`OutOfScopeError`, :class:`InvalidTokenError`, :class:`ValidationError`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from gateway.catalog.models import Dataset
from gateway.errors import (
    AgreementError,
    InvalidTokenError,
    OutOfScopeError,
    SuspendedError,
    ValidationError,
)
from gateway.governance.models import (
    Agreement,
    DatasetGrant,
    Merchant,
    MerchantStatus,
    Mode,
    Scenario,
)
from gateway.governance.policy import PolicySnapshot
from gateway.supervision.measures import Measure, MeasureKind

__all__ = [
    "CallScope",
    "Standing",
    "decide_scope",
    "decide_standing",
    "merchant_active",
    "parse_mode",
    "product_deliverable",
    "token_standing",
]


@dataclass(frozen=True, slots=True)
class Standing:
    """A merchant in good standing for one scenario under one agreement, at one moment."""

    merchant: Merchant
    scenario: Scenario
    agreement: Agreement


@dataclass(frozen=True, slots=True)
class CallScope:
    """What one data call may do: the agreement's grant (narrowing the scenario's) for a
    dataset still available for operation, in a mode both allow."""

    scenario: Scenario
    scenario_grant: DatasetGrant
    agreement: Agreement
    grant: DatasetGrant
    dataset: Dataset
    mode: Mode


def merchant_active(snapshot: PolicySnapshot, merchant_id: str | None) -> Merchant:
    """The merchant, if active (a suspended merchant gets no token and no call).

    Raises :class:`SuspendedError`."""
    merchant = snapshot.merchants.get(merchant_id or "")
    if merchant is None or merchant.status is not MerchantStatus.ACTIVE:
        raise SuspendedError(f"merchant {merchant_id} is suspended", merchant=merchant_id)
    return merchant


def _channel_open(snapshot: PolicySnapshot, merchant_id: str | None) -> None:
    """The merchant's data channel is not closed by a supervision measure (CS23 art. 26).

    Raises :class:`MeasureInForceError`."""
    snapshot.check_measure(MeasureKind.MERCHANT_CHANNEL, merchant_id)


def _scenario_usable(
    snapshot: PolicySnapshot, scenario_id: str | None, now: dt.datetime, refusal: str
) -> Scenario:
    """The scenario, published, within its validity and not suspended by a measure.

    ``refusal`` completes the message "scenario <id> ...": a token request and a call with a
    token say it differently. Raises :class:`SuspendedError` or :class:`MeasureInForceError`."""
    scenario = snapshot.scenarios.get(scenario_id or "")
    if scenario is None or not scenario.usable_at(now):
        raise SuspendedError(f"scenario {scenario_id} {refusal}", scenario=scenario_id)
    snapshot.check_measure(MeasureKind.SCENARIO, scenario_id)
    return scenario


def decide_standing(
    snapshot: PolicySnapshot, merchant_id: str, scenario_id: str, now: dt.datetime
) -> Standing:
    """Standing for a new token: merchant active → channel open → scenario usable → the
    merchant has an agreement for the scenario that is active now (LZ24 §二.2: no scenario,
    no authorization).

    Raises :class:`SuspendedError`, :class:`MeasureInForceError` or :class:`AgreementError`."""
    merchant = merchant_active(snapshot, merchant_id)
    _channel_open(snapshot, merchant_id)
    scenario = _scenario_usable(snapshot, scenario_id, now, "is not published and valid now")
    agreement = snapshot.agreement_for(merchant_id, scenario_id, now)
    if agreement is None:
        raise AgreementError(
            f"merchant {merchant_id} has no active agreement for scenario {scenario_id}",
            scenario=scenario_id,
        )
    return Standing(merchant, scenario, agreement)


def token_standing(
    snapshot: PolicySnapshot,
    merchant_id: str | None,
    scenario_id: str | None,
    agreement_id: str | None,
    now: dt.datetime,
) -> Standing:
    """Standing of a data token on a call: the same chain as :func:`decide_standing`, with
    the agreement the token names, which must still be its merchant's for its scenario and
    active now. A suspension, a measure or an ended agreement stops the next call.

    Raises :class:`SuspendedError`, :class:`MeasureInForceError`, :class:`InvalidTokenError`
    or :class:`AgreementError`."""
    merchant = merchant_active(snapshot, merchant_id)
    _channel_open(snapshot, merchant_id)
    scenario = _scenario_usable(snapshot, scenario_id, now, "is suspended or no longer valid")
    agreement = snapshot.agreements.get(agreement_id or "")
    if agreement is not None and (
        agreement.merchant_id != merchant_id or agreement.scenario_id != scenario_id
    ):
        raise InvalidTokenError("token: its agreement is not its merchant's for its scenario")
    if agreement is None or not agreement.usable_at(now):
        raise AgreementError(f"agreement {agreement_id} is not active", agreement=agreement_id)
    return Standing(merchant, scenario, agreement)


def parse_mode(name: str) -> Mode:
    """The access mode named in a call; the :class:`Mode` enum is the one list of modes.

    Raises :class:`ValidationError`."""
    try:
        return Mode(name)
    except ValueError:
        raise ValidationError(f"unknown access mode {name!r}") from None


def decide_scope(
    snapshot: PolicySnapshot,
    *,
    token_scenario_id: str | None,
    agreement_id: str | None,
    scenario_id: str,
    dataset_id: str,
    mode_name: str,
) -> CallScope:
    """Scope of one data call by a token in good standing: the scenario is the token's (one
    scenario, one authorization), the scenario grants the dataset, the agreement's approved
    requirement list covers it and allows the mode (minimum necessary, CS21 art. 21), the
    catalog still lets the dataset be operated, and no measure suspends its supply (ZW art.
    27). Fields, filters and measures within the grant are checked by the request parsers
    (``gateway.dataplane.requests``) against :attr:`CallScope.grant`.

    Raises :class:`OutOfScopeError`, :class:`ValidationError` or
    :class:`MeasureInForceError`."""
    if token_scenario_id != scenario_id:
        raise OutOfScopeError(
            f"the token is for scenario {token_scenario_id}; this call names scenario "
            f"{scenario_id} (one scenario, one authorization)",
            refused={"scenario": scenario_id},
        )
    scenario = snapshot.scenarios[scenario_id]
    scenario_grant = scenario.grant(dataset_id)
    if scenario_grant is None:
        raise OutOfScopeError(
            f"scenario {scenario_id} does not include dataset {dataset_id}",
            refused={"dataset": dataset_id},
        )
    # The agreement's scope (its approved requirement list) narrows the scenario's grant.
    agreement = snapshot.agreements.get(agreement_id or "")
    grant = agreement.grant(scenario, dataset_id) if agreement is not None else None
    if agreement is None or grant is None:
        raise OutOfScopeError(
            f"agreement {agreement_id} does not cover dataset {dataset_id}: it was "
            "not in the approved requirement list",
            refused={"dataset": dataset_id},
        )
    mode = parse_mode(mode_name)
    if mode not in grant.modes:
        whose = (
            f"scenario {scenario_id}"
            if mode not in scenario_grant.modes
            else f"the approved requirement list of agreement {agreement_id}"
        )
        raise OutOfScopeError(
            f"{whose} does not allow {mode.value} on dataset {dataset_id}",
            refused={"mode": mode.value},
        )
    dataset = snapshot.datasets.get(dataset_id)
    if dataset is None or not dataset.grantable:
        # Catalog changed under a published scenario: fail closed.
        raise OutOfScopeError(
            f"dataset {dataset_id} is not available for operation",
            refused={"dataset": dataset_id},
        )
    # Supply suspended by a supervision measure (ZW art. 27): every scenario, every mode.
    snapshot.check_measure(MeasureKind.DATASET_SUPPLY, dataset_id)
    return CallScope(scenario, scenario_grant, agreement, grant, dataset, mode)


def product_deliverable(snapshot: PolicySnapshot, product_id: str) -> None:
    """A product delisted by a supervision measure (CS23 art. 26) gets no delivery token, no
    delivery and no trade until the measure is lifted.

    Raises :class:`MeasureInForceError`."""
    product_available(snapshot.measure_on(MeasureKind.PRODUCT, product_id))


def product_available(delisting: Measure | None) -> None:
    """:func:`product_deliverable` on the product's delisting measure as the caller read it:
    a trade reads it in its own transaction, so a measure being imposed cannot race it.

    Raises :class:`MeasureInForceError`."""
    if delisting is not None:
        raise delisting.refusal()
