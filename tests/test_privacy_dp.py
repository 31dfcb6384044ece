"""aggregate-dp: the noise checked statistically on the pure mechanism, the budget over HTTP.

The statistics run on :mod:`gateway.privacy.dp` directly (thousands of releases in memory);
one world per store checks the mode end to end: N answered calls, call N+1 refused with
its own problem type and recorded, the spend in every answered call's record.
"""

from __future__ import annotations

import json
import math
import sqlite3
import statistics
from collections import defaultdict
from decimal import Decimal
from typing import Any

import opendp.prelude as dp
import pytest

from gateway.authorization.roles import Role
from gateway.catalog.models import Dataset
from gateway.cli.demo import REGISTRY, demo_datasets, demo_scenario
from gateway.errors import ValidationError
from gateway.governance.models import DatasetGrant, PrivacyBudget
from gateway.ledger.log import read_entry
from gateway.privacy.dp import CI95_FACTOR, SubjectCell, plan_release, truncate
from gateway.workflows.applications import Requirement
from tests.support.enrolment import publish_scenario
from tests.support.world import World

RELEASES = 2000


def _cells() -> tuple[list[SubjectCell], dict[str, Decimal], dict[str, int]]:
    """Three groups of 100-200 subjects; some totals above the bound (clamped)."""
    cells: list[SubjectCell] = []
    clamped: dict[str, Decimal] = defaultdict(Decimal)
    counts: dict[str, int] = defaultdict(int)
    subject = 0
    for group, size in (("a", 100), ("b", 150), ("c", 200)):
        for i in range(size):
            subject += 1
            total = Decimal((i * 37) % 1300)  # 0..1299 against bounds [0, 1000]
            cells.append(SubjectCell((group,), subject, 1, {"v": total}))
            clamped[group] += min(total, Decimal(1000))
            counts[group] += 1
    return cells, clamped, counts


def test_noise_mean_and_variance_match_the_declared_scale() -> None:
    cells, clamped, counts = _cells()
    plan = plan_release(1.0, 1e-6, 1, (("v", 0.0, 1000.0),))
    # ε split in two: counts scale L/0.5, sums scale L * 1000 / 0.5 (OpenDP's float slack).
    assert plan.count_scale == pytest.approx(2.0)
    assert plan.sum_scales["v"] == pytest.approx(2000.0, rel=1e-6)
    assert plan.threshold < 60  # every group here is released
    sums: dict[str, list[float]] = defaultdict(list)
    noisy_counts: dict[str, list[int]] = defaultdict(list)
    for _ in range(RELEASES):
        release = plan.run(cells)
        assert [g.key for g in release.groups] == [("a",), ("b",), ("c",)]
        for group in release.groups:
            sums[group.key[0]].append(group.sums["v"])
            noisy_counts[group.key[0]].append(group.count)
    b = plan.sum_scales["v"]
    bc = plan.count_scale
    q = math.exp(-1 / bc)
    count_variance = 2 * q / (1 - q) ** 2  # discrete Laplace of scale bc
    for group, exact in clamped.items():
        values = sums[group]
        assert all(v != float(exact) for v in values), "an exact sum was released"
        # Mean within 5 standard errors of the true clamped sum.
        assert abs(statistics.fmean(values) - float(exact)) < 5 * math.sqrt(2 * b * b / RELEASES)
        # Variance of Laplace(b) is 2b^2; its estimator's relative error is ~sqrt(5/n).
        assert statistics.variance(values) == pytest.approx(2 * b * b, rel=0.2)
        # About 95% of the releases fall within the stated ci95.
        inside = sum(abs(v - float(exact)) <= b * CI95_FACTOR for v in values) / RELEASES
        assert 0.93 < inside < 0.97
        counted = noisy_counts[group]
        assert abs(statistics.fmean(counted) - counts[group]) < 5 * math.sqrt(
            count_variance / RELEASES
        )
        assert statistics.variance(counted) == pytest.approx(count_variance, rel=0.2)
        assert len(set(counted)) > 5


def test_sized_domain_trap_does_not_zero_the_noise() -> None:
    """OpenDP 0.16 computes the sensitivity of a sum over a domain of known size under
    insertion/deletion as (almost) zero: no neighbour has the same size. The plan takes the
    sensitivity from an unsized domain, so one subject moves a sum by its full bound."""
    sized = dp.t.make_sum(
        dp.vector_domain(dp.atom_domain(bounds=(0.0, 1000.0)), size=5), dp.symmetric_distance()
    )
    assert sized.map(1) < 1e-6  # the trap itself, as OpenDP 0.16 has it
    plan = plan_release(0.5, 1e-6, 3, (("v", -10.0, 1000.0),))
    assert plan.sum_d_in["v"] >= 3 * 1000.0
    cells = [SubjectCell(("a",), i, 1, {"v": Decimal(5)}) for i in range(400)]
    first, second = plan.run(cells), plan.run(cells)
    assert first.groups[0].sums["v"] != 2000.0 and second.groups[0].sums["v"] != 2000.0
    assert first.groups[0].sums["v"] != second.groups[0].sums["v"]
    # A group of one subject is not released: the threshold protects rare keys.
    assert plan.run([SubjectCell(("rare",), 1, 1, {"v": Decimal(5)})]).groups == []


def test_truncation_keeps_at_most_l_groups_per_subject() -> None:
    cells = [SubjectCell((g,), s, 1, {"v": Decimal(1)}) for s in range(200) for g in "abcdefgh"]
    kept = truncate(cells, 3, b"key one")
    per_subject: dict[Any, int] = defaultdict(int)
    for cell in kept:
        per_subject[cell.subject] += 1
    assert set(per_subject.values()) == {3}
    again = truncate(list(reversed(cells)), 3, b"key one")  # input order does not matter
    assert {(c.subject, c.group) for c in again} == {(c.subject, c.group) for c in kept}
    other = truncate(cells, 3, b"key two")
    assert {(c.subject, c.group) for c in other} != {(c.subject, c.group) for c in kept}


def test_privacy_budget_declarations() -> None:
    good = {
        "epsilon": 4.0,
        "delta": 1e-6,
        "period": "month",
        "call_epsilon": 0.5,
        "max_groups_per_subject": 5,
    }
    budget = PrivacyBudget.from_dict("d", good)
    assert PrivacyBudget.from_dict("d", budget.to_dict()) == budget
    assert budget.calls_per_period == 8 and budget.call_delta == pytest.approx(1.25e-7)
    bad: list[dict[str, Any]] = [
        good | {"epsilon": 0},
        good | {"epsilon": -1},
        good | {"epsilon": "inf"},
        good | {"epsilon": float("nan")},
        good | {"epsilon": 50},
        good | {"epsilon": True},
        good | {"call_epsilon": 5.0},
        good | {"call_epsilon": 0.0000001},
        good | {"call_epsilon": 0.0001},  # 40,000 calls a period
        good | {"delta": 0.01},
        good | {"delta": 0},
        good | {"delta": 1e-13},
        good | {"period": "week"},
        good | {"max_groups_per_subject": 0},
        good | {"max_groups_per_subject": 1000},
        good | {"extra": 1},
        {k: v for k, v in good.items() if k != "delta"},
    ]
    for case in bad:
        with pytest.raises(ValidationError):
            PrivacyBudget.from_dict("d", case)
    # A use application's requirement list narrows the grant and keeps its budget; one
    # without aggregate-dp drops it.
    dataset = next(Dataset.from_dict(d) for d in demo_datasets() if d["id"] == "social-insurance")
    grant = DatasetGrant.from_dict(
        {
            "dataset": "social-insurance",
            "modes": ["aggregate", "aggregate-dp"],
            "filter_fields": ["month"],
            "group_by": ["district", "insurance_type"],
            "measure_fields": ["amount"],
            "privacy": good,
        }
    )
    grant.check_against(dataset)
    assert DatasetGrant.from_dict(grant.to_dict()) == grant
    wanted = {"dataset": "social-insurance", "fields": ["district", "amount"]}
    narrowed = Requirement.from_dict(wanted | {"modes": ["aggregate-dp"]}).narrow(grant, dataset)
    assert narrowed.privacy == grant.privacy and narrowed.group_by == ("district",)
    exact = Requirement.from_dict(wanted | {"modes": ["aggregate"]}).narrow(grant, dataset)
    assert exact.privacy is None


def _dp_scenario(world: World, **privacy: Any) -> dict[str, Any]:
    base = demo_scenario(world.clock.now())
    return base | {
        "id": "insurance-dp",
        "grants": [
            {
                "dataset": "social-insurance",
                "modes": ["aggregate-dp"],
                "filter_fields": ["month", "insurance_type"],
                "group_by": ["insurance_type", "district"],
                "measure_fields": ["amount"],
                "privacy": {
                    "epsilon": 6,
                    "delta": 3e-5,
                    "period": "month",
                    "call_epsilon": 2,
                    "max_groups_per_subject": 5,
                }
                | privacy,
            }
        ],
    }


def _exact_amounts(world: World) -> dict[str, Decimal]:
    source = world.gateway.settings.data_dir / REGISTRY
    with sqlite3.connect(source) as conn:
        rows = conn.execute("SELECT insurance_type, amount FROM social_insurance").fetchall()
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for kind, amount in rows:
        totals[kind] += Decimal(str(amount))
    return totals


async def test_dp_calls_spend_the_budget_until_refused(world: World) -> None:
    gov = world.gateway.governance
    authority = await world.staff_token(Role.AUTHORITY)
    # Bad declarations are refused at scenario creation, each with a 4xx problem.
    grant = _dp_scenario(world)["grants"][0]
    bad_grants = [
        grant | {"privacy": None},
        grant | {"privacy": grant["privacy"] | {"call_epsilon": 7}},
        grant | {"privacy": grant["privacy"] | {"period": "year"}},
        grant | {"modes": ["aggregate"]},  # a budget without the mode
        grant | {"measure_fields": ["record_id"]},  # no bounds in the catalog
        grant | {"group_by": ["person_id"]},  # the privacy unit itself
        grant | {"group_by": []},
    ]
    for bad in bad_grants:
        resp = await world.client.post(
            "/admin/scenarios",
            json=_dp_scenario(world) | {"grants": [bad]},
            headers={"Authorization": f"Bearer {authority}"},
        )
        problem = await resp.json(content_type=None)
        assert resp.status == 400 and problem["type"] == "/problems/validation", (bad, problem)
    now = world.clock.now()
    await publish_scenario(gov, _dp_scenario(world), now, days=365, agreement_id="agr-dp")
    token = await world.token("scenario:insurance-dp")
    body = {
        "group_by": ["insurance_type"],
        "measures": [
            {"fn": "count"},
            {"fn": "sum", "field": "amount"},
            {"fn": "avg", "field": "amount"},
        ],
    }
    exact = _exact_amounts(world)
    # The catalog shows the bounds a merchant needs to read the answers.
    catalog = await (
        await world.client.get("/v1/catalog", headers={"Authorization": f"Bearer {token}"})
    ).json()
    fields = {f["name"]: f for d in catalog["datasets"] for f in d["fields"]}
    assert fields["amount"]["bounds"] == ["0", "30000"]
    for call in range(3):  # ε 6 at 2 per call
        status, answer, headers = await world.data(
            token, "social-insurance", "aggregate-dp", body, scenario="insurance-dp"
        )
        assert status == 200, answer
        assert answer["epsilon"] == 2 and answer["budget"]["calls_left"] == 2 - call
        assert answer["budget"]["epsilon_spent"] == 2 * (call + 1)
        assert answer["noise"]["sum_amount"]["scale"] > 0 and answer["groups"]
        for group in answer["groups"]:
            assert group["sum_amount"] != float(exact[group["insurance_type"]])
            assert set(group["ci95"]) == {"count", "sum_amount", "avg_amount"}
        entry = await read_entry(
            world.gateway.engine, "calls", int(headers["Dsgw-Record-Id"].split("/")[1])
        )
        assert entry is not None
        record = json.loads(entry.payload)
        assert record["decision"] == "allow" and record["mode"] == "aggregate-dp"
        assert record["parameters"]["privacy"]["epsilon"] == "2"
        assert record["parameters"]["privacy"]["epsilon_spent"] == str(2 * (call + 1))
    status, problem, headers = await world.data(
        token, "social-insurance", "aggregate-dp", body, scenario="insurance-dp"
    )
    assert status == 429 and problem["type"] == "/problems/privacy-budget-exhausted"
    assert int(headers["Retry-After"]) > 0 and problem["epsilon_spent"] == 6
    entry = await read_entry(
        world.gateway.engine, "calls", int(headers["Dsgw-Record-Id"].split("/")[1])
    )
    assert entry is not None
    record = json.loads(entry.payload)
    assert record["decision"] == "deny" and record["reason"] == "privacy-budget-exhausted"
    assert "privacy" not in record["parameters"]
    # The exact mode is not granted by this scenario: DP is the only way in.
    status, problem, _ = await world.data(
        token, "social-insurance", "aggregate", body, scenario="insurance-dp"
    )
    assert status == 403 and problem["type"] == "/problems/out-of-scope"
