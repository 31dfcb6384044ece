"""Merchants and scenarios ready to call, without the onboarding and application workflows:
factories for the setup many tests repeat (a second merchant, a second scenario), also used by
benchmarks that need many merchants on one scenario."""

from __future__ import annotations

import datetime as dt
from typing import Any

from gateway.cli.demo import DEMO_MERCHANT, demo_credit_code, demo_scenario
from gateway.governance.models import ScenarioStatus
from gateway.governance.service import LOCAL_ADMIN, GovernanceService, IssuedClient

__all__ = ["enrol_merchant", "limited_scenario", "publish_scenario"]


async def publish_scenario(
    gov: GovernanceService,
    definition: dict[str, Any],
    now: dt.datetime,
    *,
    days: int,
    merchant_id: str = DEMO_MERCHANT,
    shares: tuple[object, object, object] = ("40", "35", "25"),
    agreement_id: str | None = None,
) -> None:
    """Create the scenario ``definition``, publish it and grant ``merchant_id`` an agreement on
    it from an hour before ``now`` for ``days`` days: the second scenario that tests of quotas,
    hours, grants and privacy budgets set beside the demo one."""
    scenario_id = definition["id"]
    await gov.scenarios.create_scenario(LOCAL_ADMIN, definition)
    await gov.scenarios.set_scenario_status(LOCAL_ADMIN, scenario_id, ScenarioStatus.PUBLISHED)
    await gov.agreements.grant_agreement(
        LOCAL_ADMIN,
        merchant_id=merchant_id,
        scenario_id=scenario_id,
        starts_at=now - dt.timedelta(hours=1),
        ends_at=now + dt.timedelta(days=days),
        shares=shares,
        agreement_id=agreement_id,
    )


async def limited_scenario(
    gov: GovernanceService, scenario_id: str, quotas: dict[str, Any], now: dt.datetime
) -> None:
    """Publish a copy of the demo scenario with ``quotas`` and grant the demo merchant an
    agreement on it for 30 days: for tests of limits shared by several gateway nodes."""
    scenario = demo_scenario(now)
    scenario["id"] = scenario_id
    scenario["quotas"] = quotas
    await publish_scenario(gov, scenario, now, days=30)


async def enrol_merchant(
    gov: GovernanceService,
    merchant_id: str,
    name: str,
    scenario_id: str,
    now: dt.datetime,
    *,
    days: int,
    credit_code: str | None = None,
    agreement_id: str | None = None,
) -> IssuedClient:
    """Register ``merchant_id`` (with ``credit_code``, by default one made from its id), grant
    it an agreement on the whole scenario from an hour before ``now`` for ``days`` days, and
    issue its client credentials: a second merchant beside the demo one."""
    code = credit_code or demo_credit_code(merchant_id)
    await gov.merchants.register_merchant(LOCAL_ADMIN, merchant_id, name, code)
    await gov.agreements.grant_agreement(
        LOCAL_ADMIN,
        merchant_id=merchant_id,
        scenario_id=scenario_id,
        starts_at=now - dt.timedelta(hours=1),
        ends_at=now + dt.timedelta(days=days),
        shares=("40", "35", "25"),
        agreement_id=agreement_id,
    )
    issued = await gov.clients.issue_client(LOCAL_ADMIN, merchant_id=merchant_id)
    assert issued.secret
    return issued
