"""A merchant ready to call, without the onboarding and application workflows: shared by
tests and benchmarks that need many merchants on one scenario."""

from __future__ import annotations

import datetime as dt
from typing import Any

from gateway.cli.demo import DEMO_MERCHANT, demo_credit_code, demo_scenario
from gateway.governance.models import ScenarioStatus
from gateway.governance.service import LOCAL_ADMIN, GovernanceService, IssuedClient

__all__ = ["enrol_merchant", "limited_scenario"]


async def limited_scenario(
    gov: GovernanceService, scenario_id: str, quotas: dict[str, Any], now: dt.datetime
) -> None:
    """Publish a copy of the demo scenario with ``quotas`` and grant the demo merchant an
    agreement on it for 30 days: for tests of limits shared by several gateway nodes."""
    scenario = demo_scenario(now)
    scenario["id"] = scenario_id
    scenario["quotas"] = quotas
    await gov.create_scenario(LOCAL_ADMIN, scenario)
    await gov.set_scenario_status(LOCAL_ADMIN, scenario_id, ScenarioStatus.PUBLISHED)
    await gov.grant_agreement(
        LOCAL_ADMIN,
        merchant_id=DEMO_MERCHANT,
        scenario_id=scenario_id,
        starts_at=now - dt.timedelta(hours=1),
        ends_at=now + dt.timedelta(days=30),
        shares=("40", "35", "25"),
    )


async def enrol_merchant(
    gov: GovernanceService,
    merchant_id: str,
    name: str,
    scenario_id: str,
    now: dt.datetime,
    *,
    days: int,
) -> IssuedClient:
    """Register ``merchant_id``, grant it an agreement on the whole scenario from an hour
    before ``now`` for ``days`` days, and issue its client credentials."""
    await gov.register_merchant(LOCAL_ADMIN, merchant_id, name, demo_credit_code(merchant_id))
    await gov.grant_agreement(
        LOCAL_ADMIN,
        merchant_id=merchant_id,
        scenario_id=scenario_id,
        starts_at=now - dt.timedelta(hours=1),
        ends_at=now + dt.timedelta(days=days),
        shares=("40", "35", "25"),
    )
    issued = await gov.issue_client(LOCAL_ADMIN, merchant_id=merchant_id)
    assert issued.secret
    return issued
