"""A merchant ready to call, without the onboarding and application workflows: shared by
tests and benchmarks that need many merchants on one scenario."""

from __future__ import annotations

import datetime as dt

from gateway.cli.demo import demo_credit_code
from gateway.governance.service import LOCAL_ADMIN, GovernanceService, IssuedClient

__all__ = ["enrol_merchant"]


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
