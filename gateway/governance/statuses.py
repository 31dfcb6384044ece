"""The statuses of merchants, agreements and scenarios, and which moves between them are allowed.

Plain enums with no model around them, so that a command which only names a status (``dsgw
merchant suspend``) or lists things by status does not load the policy models.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "AGREEMENT_TRANSITIONS",
    "SCENARIO_TRANSITIONS",
    "AgreementStatus",
    "MerchantStatus",
    "ScenarioStatus",
]


class MerchantStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class AgreementStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    TERMINATED = "terminated"


AGREEMENT_TRANSITIONS: dict[AgreementStatus, frozenset[AgreementStatus]] = {
    AgreementStatus.ACTIVE: frozenset({AgreementStatus.SUSPENDED, AgreementStatus.TERMINATED}),
    AgreementStatus.SUSPENDED: frozenset({AgreementStatus.ACTIVE, AgreementStatus.TERMINATED}),
    AgreementStatus.TERMINATED: frozenset(),
}


class ScenarioStatus(StrEnum):
    DRAFT = "draft"
    PUBLISHED = "published"
    SUSPENDED = "suspended"
    RETIRED = "retired"


SCENARIO_TRANSITIONS: dict[ScenarioStatus, frozenset[ScenarioStatus]] = {
    ScenarioStatus.DRAFT: frozenset({ScenarioStatus.PUBLISHED, ScenarioStatus.RETIRED}),
    ScenarioStatus.PUBLISHED: frozenset({ScenarioStatus.SUSPENDED, ScenarioStatus.RETIRED}),
    ScenarioStatus.SUSPENDED: frozenset({ScenarioStatus.PUBLISHED, ScenarioStatus.RETIRED}),
    ScenarioStatus.RETIRED: frozenset(),
}
