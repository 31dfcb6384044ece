"""Verification budgets stop the enumeration of a sensitive claim (issue 17, docs/privacy.md).

The issue's attack on the demo: knowing a company's credit code and its legal
representative's region and birth date, walk the 1,000 sequence numbers of the resident id
(check digit computed) through ``verify`` in random order until the answer is yes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
from zoneinfo import ZoneInfo

import pytest

from connectors import synthetic
from gateway.db.engines import engine_for
from gateway.errors import CatalogError, ValidationError, VerificationBudgetExhaustedError
from gateway.governance.models import DatasetGrant
from gateway.identifiers import resident_id_check_char
from gateway.ledger.log import read_entries
from gateway.monitoring.calls import CallEvent, CallWindows
from gateway.monitoring.models import Detection
from gateway.monitoring.rules import Enumeration, RuleContext, Thresholds
from gateway.privacy.verify_budget import VerifyBudget, VerifyBudgets
from gateway.workdays import default_calendar
from gateway.workflows.applications import Requirement
from tests.support.world import ROWS, World

SHANGHAI = ZoneInfo("Asia/Shanghai")
SLUG = "verification-budget-exhausted"


def candidates(true_id: str, *, seed: int, late: int) -> list[str]:
    """Every resident id sharing ``true_id``'s region and birth date (its 1,000 sequence
    numbers, check digit computed), shuffled, with the true one at position ``late``."""
    prefix = true_id[:14]
    ids = [prefix + f"{n:03d}" for n in range(1000)]
    ids = [body + resident_id_check_char(body) for body in ids]
    assert true_id in ids  # the walk would reach it
    random.Random(seed).shuffle(ids)
    ids.remove(true_id)
    ids.insert(late, true_id)
    return ids


def verify_body(company: dict[str, object], rep_id: str) -> dict[str, object]:
    return {"values": {"credit_code": company["credit_code"], "legal_rep_id": rep_id}}


async def test_budget_stops_the_resident_id_walk(world: World) -> None:
    token = await world.token()
    companies = list(synthetic.generate("enterprises", ROWS, seed=7))
    target, other, third = companies[0], companies[1], companies[2]
    true_id = str(target["legal_rep_id"])
    walk = candidates(true_id, seed=17, late=8)

    # A positive answer costs nothing: the merchant may confirm a true id any number of times.
    for _ in range(3):
        status, body, _ = await world.data(
            token, "enterprises", "verify", verify_body(target, true_id)
        )
        assert (status, body["match"]) == (200, True)

    answers: list[tuple[int, dict[str, object]]] = []
    retry_after = None
    for rep_id in walk[:12]:
        status, body, headers = await world.data(
            token, "enterprises", "verify", verify_body(target, rep_id)
        )
        answers.append((status, body))
        if status == 429:
            retry_after = headers.get("Retry-After")
    assert [s for s, _ in answers] == [200] * 5 + [429] * 7
    assert all(b["match"] is False for _, b in answers[:5])
    refused = answers[5][1]
    assert refused["type"].endswith("/" + SLUG)
    assert (refused["negatives"], refused["bound"]) == (5, 5)
    # Retry at the window's end: the end of today in Beijing time.
    now = world.clock.now()
    local_midnight = dt.datetime.combine(
        now.astimezone(SHANGHAI).date() + dt.timedelta(days=1), dt.time(0), tzinfo=SHANGHAI
    )
    assert refused["window_end"] == local_midnight.astimezone(dt.UTC).isoformat()
    assert retry_after is not None
    assert abs(int(retry_after) - (local_midnight - now).total_seconds()) <= 2
    # The true id was the ninth guess: refused like the others, never confirmed.
    assert all(true_id not in json.dumps(b) for _, b in answers)
    assert walk[8] == true_id and answers[8][0] == 429

    # Another subject of the same agreement is unaffected.
    status, body, _ = await world.data(token, "enterprises", "verify", verify_body(other, walk[0]))
    assert (status, body["match"]) == (200, False)

    # The refusals are recorded with their figures.
    entries = await read_entries(world.gateway.engine, "calls", merchant_id=world.merchant_id)
    records = [json.loads(e.payload) for e in entries]
    refusals = [r for r in records if r["reason"] == SLUG]
    assert len(refusals) == 7
    figures = refusals[0]["parameters"]["verify_budget"]
    assert figures["negatives"] == 5 and figures["bound"] == 5
    assert figures["window_end"] == refused["window_end"]
    assert len(figures["subject"]) == 64 and true_id not in json.dumps(records)
    answered = [
        r for r in records if r["decision"] == "allow" and "verify_budget" in r["parameters"]
    ]
    assert {r["parameters"]["verify_budget"]["subject"] for r in answered} >= {figures["subject"]}
    assert sorted(
        r["parameters"]["verify_budget"]["negatives"]
        for r in answered
        if r["parameters"]["verify_budget"]["subject"] == figures["subject"]
    ) == [0, 0, 0, 1, 2, 3, 4, 5]

    # Concurrency: 20 wrong guesses at once about a third subject; exactly the bound answered.
    guesses = candidates(str(third["legal_rep_id"]), seed=3, late=999)[:20]
    results = await asyncio.gather(
        *(world.data(token, "enterprises", "verify", verify_body(third, g)) for g in guesses)
    )
    assert sorted(s for s, _, _ in results) == [200] * 5 + [429] * 15

    # The count lives in the store: another process (another engine) sees it exhausted.
    engine = engine_for(world.gateway.settings)
    try:
        with pytest.raises(VerificationBudgetExhaustedError):
            await VerifyBudgets(engine, SHANGHAI).check(
                VerifyBudget(), "agr-demo", "enterprises", figures["subject"], now
            )
    finally:
        await engine.dispose()

    # The monitor raises the enumeration alert with the figures.
    run = await world.gateway.monitor.run_once()
    alerts = [c.alert for c in run.changes if c.alert.rule == "enumeration"]
    assert alerts, [c.alert.title for c in run.changes]
    budget_alerts = [a for a in alerts if a.key.endswith("|verify-budget")]
    assert len(budget_alerts) == 1
    evidence = budget_alerts[0].evidence
    found = evidence.get("figures", evidence)
    assert found["pattern"] == "verification-budget"
    assert found["negatives"] == 5 and found["bound"] == 5
    assert found["refused"] >= 7 and found["dataset"] == "enterprises"
    assert budget_alerts[0].merchant_id == world.merchant_id


async def test_high_bound_still_alerts_and_budget_model(world: World) -> None:
    """A generous budget does not hide the walk: the rule fires at ``verify_negatives``."""
    thresholds = Thresholds(verify_negatives=10)
    now = world.clock.now()
    start, end = VerifyBudget(1000, 24).window(now, SHANGHAI)

    def event(seq: int, negatives: int) -> CallEvent:
        return CallEvent(
            seq=seq,
            at=now,
            kind="data",
            merchant_id="m1",
            client_id="c1",
            scenario_id="s1",
            dataset_id="enterprises",
            mode="verify",
            decision="allow",
            status=200,
            reason=None,
            remote=None,
            parameters={
                "verify_budget": {
                    "subject": "ab" * 32,
                    "negatives": negatives,
                    "bound": 1000,
                    "window_start": start.isoformat(),
                    "window_end": end.isoformat(),
                    "negative": True,
                }
            },
        )

    async def detect(batch: list[CallEvent]) -> list[Detection]:
        ctx = RuleContext(
            batch=batch,
            windows=CallWindows(world.gateway.engine, end=10**9),
            snapshot=await world.gateway.policy.current(),
            is_working_day=default_calendar().is_working_day,
            thresholds=thresholds,
        )
        return [d for d in await Enumeration().evaluate(ctx) if d.key.endswith("verify-budget")]

    assert await detect([event(i, i) for i in range(1, 10)]) == []
    fired = await detect([event(i, i) for i in range(1, 11)])
    assert len(fired) == 1
    assert fired[0].figures["pattern"] == "negative-verifies"
    assert fired[0].figures["negatives"] == 10 and fired[0].figures["bound"] == 1000

    # Windows are fixed, aligned on the deployment zone's wall clock.
    local = now.astimezone(SHANGHAI)
    assert start == dt.datetime.combine(local.date(), dt.time(0), tzinfo=SHANGHAI)
    six = VerifyBudget(5, 6).window(now, SHANGHAI)
    assert six[0].astimezone(SHANGHAI).hour == local.hour - local.hour % 6
    assert six[1] - six[0] == dt.timedelta(hours=6)
    three_days = VerifyBudget(5, 72).window(now, SHANGHAI)
    assert three_days[0].astimezone(SHANGHAI).time() == dt.time(0)

    # The grant's budget: round trip, bad values refused, only with verify.
    raw = {
        "dataset": "enterprises",
        "modes": ["verify"],
        "verify_fields": ["credit_code", "legal_rep_id"],
        "verify_budget": {"negatives_per_subject": 3, "window_hours": 12},
    }
    grant = DatasetGrant.from_dict(raw)
    assert grant.verify_budget == VerifyBudget(3, 12)
    assert DatasetGrant.from_dict(grant.to_dict()) == grant
    assert "verify_budget" not in DatasetGrant.from_dict(raw | {"verify_budget": None}).to_dict()
    for bad in (
        {"negatives_per_subject": 0},
        {"negatives_per_subject": True},
        {"window_hours": 5},
        {"window_hours": 25},
        {"per_subject": 3},
        [],
    ):
        with pytest.raises(ValidationError):
            DatasetGrant.from_dict(raw | {"verify_budget": bad})
    snapshot = await world.gateway.policy.current()
    query_only = DatasetGrant.from_dict(
        {
            "dataset": "enterprises",
            "modes": ["query"],
            "fields": ["credit_code"],
            "filter_fields": ["credit_code"],
            "verify_budget": {"negatives_per_subject": 3},
        }
    )
    with pytest.raises((ValidationError, CatalogError), match="verify_budget"):
        query_only.check_against(snapshot.datasets["enterprises"])

    # An agreement's scope keeps the budget where it keeps verify, and only there.
    both = DatasetGrant.from_dict(
        raw
        | {"modes": ["verify", "query"], "fields": ["credit_code"]}
        | {"filter_fields": ["credit_code"]}
    )
    enterprises = snapshot.datasets["enterprises"]
    for modes, kept in ((["verify"], VerifyBudget(3, 12)), (["query"], None)):
        requirement = Requirement.from_dict(
            {"dataset": "enterprises", "modes": modes, "fields": ["credit_code", "legal_rep_id"]}
        )
        assert requirement.narrow(both, enterprises).verify_budget == kept
