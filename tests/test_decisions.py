"""The standing and scope decisions on their own: pure functions over a policy snapshot, so
each rule is tested without a database, a token or an HTTP call (the HTTP tests pin the same
refusals end to end)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal

import pytest

from gateway.authorization.decisions import (
    decide_scope,
    decide_standing,
    merchant_active,
    parse_mode,
    product_deliverable,
    token_standing,
)
from gateway.catalog.models import Dataset
from gateway.cli.demo import DEMO_MERCHANT, DEMO_SCENARIO, demo_datasets, demo_scenario
from gateway.errors import (
    AgreementError,
    InvalidTokenError,
    MeasureInForceError,
    OutOfScopeError,
    SuspendedError,
    ValidationError,
)
from gateway.governance.models import (
    Agreement,
    AgreementStatus,
    Merchant,
    MerchantStatus,
    Mode,
    Scenario,
    ScenarioStatus,
)
from gateway.governance.policy import PolicySnapshot
from gateway.supervision.measures import Measure, MeasureKind, MeasureStatus

NOW = dt.datetime(2026, 12, 7, 12, tzinfo=dt.UTC)


def _measure(kind: MeasureKind, target: str) -> Measure:
    return Measure(
        id="m-1",
        kind=kind,
        target_id=target,
        status=MeasureStatus.ACTIVE,
        reason="test",
        basis=None,
        imposed_by="supervisor",
        imposed_at=NOW,
    )


def _snapshot(**changes: object) -> PolicySnapshot:
    scenario = dataclasses.replace(
        Scenario.from_dict(demo_scenario(NOW)), status=ScenarioStatus.PUBLISHED
    )
    agreement = Agreement(
        id="agr-1",
        merchant_id=DEMO_MERCHANT,
        scenario_id=DEMO_SCENARIO,
        starts_at=NOW - dt.timedelta(days=1),
        ends_at=NOW + dt.timedelta(days=365),
        share_owner=Decimal(40),
        share_operator=Decimal(30),
        share_processor=Decimal(30),
    )
    datasets = {d["id"]: Dataset.from_dict(d) for d in demo_datasets()}
    snapshot = PolicySnapshot(
        datasets=datasets,
        scenarios={scenario.id: scenario},
        merchants={DEMO_MERCHANT: Merchant(DEMO_MERCHANT, "星辰征信", "91430100MA4L000000")},
        agreements={agreement.id: agreement},
    )
    return dataclasses.replace(snapshot, **changes)  # type: ignore[arg-type]


def test_standing_of_a_merchant_in_good_standing() -> None:
    standing = decide_standing(_snapshot(), DEMO_MERCHANT, DEMO_SCENARIO, NOW)
    assert standing.agreement.id == "agr-1"
    assert standing.scenario.id == DEMO_SCENARIO
    again = token_standing(_snapshot(), DEMO_MERCHANT, DEMO_SCENARIO, "agr-1", NOW)
    assert again == standing


def test_the_chain_stops_at_its_first_broken_link() -> None:
    suspended = {DEMO_MERCHANT: Merchant(DEMO_MERCHANT, "x", "y", MerchantStatus.SUSPENDED)}
    with pytest.raises(SuspendedError, match=f"merchant {DEMO_MERCHANT} is suspended"):
        decide_standing(_snapshot(merchants=suspended), DEMO_MERCHANT, DEMO_SCENARIO, NOW)
    with pytest.raises(SuspendedError):
        merchant_active(_snapshot(merchants={}), DEMO_MERCHANT)
    closed = {
        (MeasureKind.MERCHANT_CHANNEL, DEMO_MERCHANT): _measure(
            MeasureKind.MERCHANT_CHANNEL, DEMO_MERCHANT
        )
    }
    with pytest.raises(MeasureInForceError):
        token_standing(_snapshot(measures=closed), DEMO_MERCHANT, DEMO_SCENARIO, "agr-1", NOW)
    # A closed channel leaves the merchant its own surface.
    assert merchant_active(_snapshot(measures=closed), DEMO_MERCHANT).id == DEMO_MERCHANT
    late = NOW + dt.timedelta(days=800)
    with pytest.raises(SuspendedError, match="is not published and valid now"):
        decide_standing(_snapshot(), DEMO_MERCHANT, DEMO_SCENARIO, late)
    with pytest.raises(SuspendedError, match="is suspended or no longer valid"):
        token_standing(_snapshot(), DEMO_MERCHANT, DEMO_SCENARIO, "agr-1", late)
    with pytest.raises(AgreementError, match="has no active agreement"):
        decide_standing(_snapshot(agreements={}), DEMO_MERCHANT, DEMO_SCENARIO, NOW)


def test_a_token_names_its_own_agreement() -> None:
    snapshot = _snapshot()
    ended = dataclasses.replace(snapshot.agreements["agr-1"], status=AgreementStatus.TERMINATED)
    with pytest.raises(AgreementError, match="agreement agr-1 is not active"):
        token_standing(
            _snapshot(agreements={"agr-1": ended}), DEMO_MERCHANT, DEMO_SCENARIO, "agr-1", NOW
        )
    other = dataclasses.replace(snapshot.agreements["agr-1"], merchant_id="someone-else")
    with pytest.raises(InvalidTokenError, match="not its merchant's"):
        token_standing(
            _snapshot(agreements={"agr-1": other}), DEMO_MERCHANT, DEMO_SCENARIO, "agr-1", NOW
        )


def _scope(snapshot: PolicySnapshot, **changes: str) -> object:
    arguments = {
        "token_scenario_id": DEMO_SCENARIO,
        "agreement_id": "agr-1",
        "scenario_id": DEMO_SCENARIO,
        "dataset_id": "enterprises",
        "mode_name": "query",
    } | changes
    return decide_scope(snapshot, **arguments)


def test_scope_of_a_call() -> None:
    scope = decide_scope(
        _snapshot(),
        token_scenario_id=DEMO_SCENARIO,
        agreement_id="agr-1",
        scenario_id=DEMO_SCENARIO,
        dataset_id="enterprises",
        mode_name="query",
    )
    assert scope.mode is Mode.QUERY
    assert scope.dataset.id == "enterprises"
    assert scope.grant.dataset_id == "enterprises"
    with pytest.raises(OutOfScopeError, match="one scenario, one authorization"):
        _scope(_snapshot(), scenario_id="another")
    with pytest.raises(OutOfScopeError, match="does not include dataset"):
        _scope(_snapshot(), dataset_id="nowhere")
    with pytest.raises(OutOfScopeError, match="does not cover dataset"):
        _scope(_snapshot(), agreement_id="agr-unknown")
    with pytest.raises(OutOfScopeError, match="does not allow aggregate-dp"):
        _scope(_snapshot(), mode_name="aggregate-dp")
    with pytest.raises(ValidationError, match="unknown access mode 'export'"):
        _scope(_snapshot(), mode_name="export")
    snapshot = _snapshot()
    hidden = dataclasses.replace(snapshot.datasets["enterprises"], negative_list=True)
    with pytest.raises(OutOfScopeError, match="not available for operation"):
        _scope(_snapshot(datasets={**snapshot.datasets, "enterprises": hidden}))
    stopped = {
        (MeasureKind.DATASET_SUPPLY, "enterprises"): _measure(
            MeasureKind.DATASET_SUPPLY, "enterprises"
        )
    }
    with pytest.raises(MeasureInForceError):
        _scope(_snapshot(measures=stopped))


def test_modes_and_products() -> None:
    assert [parse_mode(m.value) for m in Mode] == list(Mode)
    product_deliverable(_snapshot(), "p-1")
    delisted = {(MeasureKind.PRODUCT, "p-1"): _measure(MeasureKind.PRODUCT, "p-1")}
    with pytest.raises(MeasureInForceError):
        product_deliverable(_snapshot(measures=delisted), "p-1")
