"""Scenarios, merchants, agreements and clients: who may use which data, and how.

"One scenario, one authorization; no scenario, no authorization" (LZ24 §二.2): every grant of
data is a :class:`DatasetGrant` inside a published :class:`Scenario`, reached only through an
active :class:`Agreement` between a merchant and that scenario.

The models live in one module per concern (:mod:`.grants`, :mod:`.budgets`,
:mod:`.scenario`, :mod:`.parties`, :mod:`.times`); this package names them all, so callers
import from ``gateway.governance.models`` whichever module holds a model.
"""

from gateway.governance.models.budgets import DELTA_UNIT, EPSILON_UNIT, PrivacyBudget, units_text
from gateway.governance.models.grants import MODE_NAMES, DatasetGrant, Mode
from gateway.governance.models.parties import (
    MAX_AGREEMENT_YEARS,
    Agreement,
    AgreementStatus,
    Client,
    Merchant,
    MerchantStatus,
    check_period,
)
from gateway.governance.models.scenario import (
    DocumentRef,
    Evaluation,
    EvaluationConclusion,
    Quotas,
    Scenario,
    ScenarioHours,
    ScenarioStatus,
)
from gateway.governance.models.times import (
    RENEWAL_NOTICE_MONTHS,
    add_months,
    add_years,
    parse_time_value,
    renewal_from,
)

__all__ = [
    "DELTA_UNIT",
    "EPSILON_UNIT",
    "MAX_AGREEMENT_YEARS",
    "MODE_NAMES",
    "RENEWAL_NOTICE_MONTHS",
    "Agreement",
    "AgreementStatus",
    "Client",
    "DatasetGrant",
    "DocumentRef",
    "Evaluation",
    "EvaluationConclusion",
    "Merchant",
    "MerchantStatus",
    "Mode",
    "PrivacyBudget",
    "Quotas",
    "Scenario",
    "ScenarioHours",
    "ScenarioStatus",
    "add_months",
    "add_years",
    "check_period",
    "parse_time_value",
    "renewal_from",
    "units_text",
]
