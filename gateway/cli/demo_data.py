"""What the demo deployment is made of: its datasets, scenario, merchant and product.

Plain data and the credit codes derived from a seed, apart from :mod:`gateway.cli.demo`
(which runs the demo), so that the tests that build the demo's catalog read it here without
the demo's HTTP client and services; and :func:`register_demo_world`, the one sequence of
governance steps that turns that data into a working deployment, shared by ``dsgw demo`` and
the benchmarks.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from connectors import synthetic
from gateway.governance.actor import LOCAL_ADMIN
from gateway.governance.models import ScenarioStatus
from gateway.identifiers import USCC_ALPHABET, uscc_check_char

if TYPE_CHECKING:
    from gateway.runtime import Gateway

__all__ = [
    "DEMO_MERCHANT",
    "DEMO_PRODUCT",
    "DEMO_SCENARIO",
    "REGISTRY",
    "VEHICLES",
    "DemoWorld",
    "demo_credit_code",
    "demo_datasets",
    "demo_product",
    "demo_scenario",
    "register_demo_world",
]


DEMO_SCENARIO = "enterprise-credit"
DEMO_MERCHANT = "xingchen-credit"
REGISTRY = "sources/registry.sqlite3"
VEHICLES = "sources/vehicles.csv"

SENSITIVE = {
    "legal_rep_name": "name",
    "legal_rep_id": "resident_id",
    "legal_rep_mobile": "mobile",
    "address": "address",
    "person_id": "resident_id",
    "person_name": "name",
    "owner_name": "name",
    "owner_id": "resident_id",
}

DESCRIPTIONS = {
    "enterprises": (
        "企业登记信息",
        "市场监督管理局",
        "Enterprise registry: registration, legal representative, capital, status.",
    ),
    "social_insurance": (
        "社保缴费记录",
        "人力资源和社会保障局",
        "Monthly social-insurance contributions per insured person and employer.",
    ),
    "vehicles": ("机动车登记信息", "公安局交通警察支队", "Motor vehicle registrations."),
}


# Fields that tolerate a leak-tracing mark (docs/tracing.md): capital is published rounded
# to 0.01 万元, and the address mask hides the street's length anyway.
MARKS = {
    "enterprises": {"registered_capital": "digit:2", "address": "mask"},
}

# Clamping bounds for differentially private sums (docs/privacy.md): one insured person's
# total in one answer cell, in yuan (at most 4 months of contributions on a 22,000 base).
BOUNDS = {
    "social_insurance": {"amount": ["0", "30000"], "base": ["0", "100000"]},
}


# Quasi-identifiers (docs/privacy.md): no one is named by them, but combined they single
# out enterprises, vehicle owners or insured persons; the scenario check warns on grants
# combining them.
QUASI_IDENTIFIERS = {
    "enterprises": {"district", "industry", "established", "registered_capital"},
    "vehicles": {"district", "vehicle_type", "brand", "registered"},
    "social_insurance": {"district", "employer_credit_code", "base"},
}


def _fields(name: str) -> list[dict[str, Any]]:
    out = []
    for field, type_ in synthetic.SCHEMAS[name].items():
        spec: dict[str, Any] = {"name": field, "type": type_}
        if field in SENSITIVE:
            spec["sensitive"] = SENSITIVE[field]
        if field in MARKS.get(name, {}):
            spec["mark"] = MARKS[name][field]
        if field in BOUNDS.get(name, {}):
            spec["bounds"] = BOUNDS[name][field]
        if field in QUASI_IDENTIFIERS.get(name, set()):
            spec["quasi_identifier"] = True
        out.append(spec)
    return out


def demo_datasets() -> list[dict[str, Any]]:
    datasets = []
    for name, source in (
        ("enterprises", {"kind": "sql", "url": f"sqlite:///{REGISTRY}", "table": "enterprises"}),
        (
            "social_insurance",
            {"kind": "sql", "url": f"sqlite:///{REGISTRY}", "table": "social_insurance"},
        ),
        ("vehicles", {"kind": "csv", "path": VEHICLES}),
    ):
        title, provider, summary = DESCRIPTIONS[name]
        datasets.append(
            {
                "id": name.replace("_", "-"),
                "name": title,
                "provider": provider,
                "summary": summary,
                "fields": _fields(name),
                "update_frequency": "daily",
                "classification": 3 if name != "enterprises" else 2,
                "open_attribute": "conditional",
                "key_fields": list(synthetic.KEY_FIELDS[name]),
                "subject_field": synthetic.SUBJECT_FIELDS[name],
                "source": source,
            }
            # Enterprise answers may carry per-recipient canary rows (docs/tracing.md).
            | ({"canaries": True} if name == "enterprises" else {})
        )
    # Household registration is classed not open: the catalog knows it, nobody may use it.
    datasets.append(
        {
            "id": "household-registry",
            "name": "户籍人口信息",
            "provider": "公安局",
            "summary": "Household registration. Not open (CS21 art. 22).",
            "fields": [
                {"name": "person_id", "type": "string", "sensitive": "resident_id"},
                {"name": "district", "type": "string"},
            ],
            "classification": 4,
            "open_attribute": "not_open",
            "key_fields": ["person_id"],
            "subject_field": "person_id",
            "source": {"kind": "sql", "url": f"sqlite:///{REGISTRY}", "table": "household"},
        }
    )
    return datasets


def demo_scenario(now: dt.datetime) -> dict[str, Any]:
    return {
        "id": DEMO_SCENARIO,
        "name": "企业信贷风控",
        "domain": "finance",
        "purpose": "Verify borrower enterprises and assess their operating status for "
        "small-business lending.",
        "valid_from": (now - dt.timedelta(days=1)).date().isoformat(),
        "valid_until": (now + dt.timedelta(days=730)).date().isoformat(),
        "quotas": {"rate_per_minute": 600, "daily_calls": 100_000},
        # One scenario, one plan, one evaluation (CS23 art. 17): both are on record before
        # the scenario is published.
        "plan": {
            "title": "企业信贷风控场景运营方案",
            "reference": "DEMO-PLAN-2026-001",
            "sha256": hashlib.sha256(b"demo plan: enterprise credit risk").hexdigest(),
        },
        "evaluation": {
            "evaluator": "长沙市数据资源局评估组",
            "conclusion": "pass",
            "evaluated_on": (now - dt.timedelta(days=2)).date().isoformat(),
            "report": {
                "title": "企业信贷风控场景评估报告",
                "reference": "DEMO-EVAL-2026-001",
                "sha256": hashlib.sha256(b"demo evaluation report").hexdigest(),
            },
        },
        "grants": [
            {
                "dataset": "enterprises",
                "modes": ["verify", "query", "aggregate"],
                "verify_fields": ["credit_code", "name", "legal_rep_name", "legal_rep_id"],
                "reveal_mismatch": True,
                "fields": [
                    "credit_code",
                    "name",
                    "legal_rep_name",
                    "registered_capital",
                    "established",
                    "district",
                    "industry",
                    "status",
                ],
                "filter_fields": ["credit_code", "district", "industry", "status"],
                "required_filters": ["credit_code", "district"],
                "group_by": ["district", "industry", "status"],
                "measure_fields": ["registered_capital"],
                "row_cap": 50,
            },
            {
                "dataset": "social-insurance",
                "modes": ["aggregate"],
                "filter_fields": ["employer_credit_code", "month", "insurance_type"],
                "group_by": ["district", "insurance_type", "employer_credit_code"],
                "measure_fields": ["amount", "base"],
            },
        ],
    }


def demo_credit_code(seed: str) -> str:
    """A well-formed credit code (Changsha, enterprise) derived from ``seed``."""
    digest = hashlib.sha256(seed.encode()).digest()
    body = "91430100" + "".join(USCC_ALPHABET[b % len(USCC_ALPHABET)] for b in digest[:9])
    return body + uscc_check_char(body)


DEMO_PRODUCT = "enterprise-vitality"


def demo_product() -> dict[str, Any]:
    """A report product on the demo scenario: district-level counts, never raw rows."""
    return {
        "id": DEMO_PRODUCT,
        "name": "区域企业活跃度报告",
        "description": "Monthly counts of active enterprises per district and industry.",
        "scenario": DEMO_SCENARIO,
        "delivery": "report",
        "inputs": [{"dataset": "enterprises", "fields": ["district", "industry", "status"]}],
        "outputs": [
            {"name": "district", "derivation": "key", "from": ["enterprises.district"]},
            {
                "name": "active_enterprises",
                "derivation": "count",
                "from": ["enterprises.status", "enterprises.industry"],
            },
        ],
        "unit_price": "800.00",
        "unit": "report",
    }


@dataclass(frozen=True, slots=True)
class DemoWorld:
    """The demo merchant's fresh client credentials and the agreement its tokens carry."""

    client_id: str
    client_secret: str
    agreement_id: str


async def register_demo_world(
    gateway: Gateway,
    *,
    quotas: Mapping[str, int] | None = None,
    agreement_id: str | None = None,
    terms: Mapping[str, Any] | None = None,
    sources: Mapping[str, Mapping[str, Any]] | None = None,
) -> DemoWorld:
    """Register the demo catalog, publish the demo scenario, register the demo merchant,
    grant it the scenario for a year, and issue the merchant a new client.

    Steps already done in this store are skipped (datasets are re-registered in place), so
    ``dsgw demo`` can run again on its data directory; each call issues a new client.
    ``quotas`` replaces the scenario's quotas (benchmarks lift the rate limit out of the
    way); ``agreement_id`` and ``terms`` go to the agreement; ``sources`` replaces the
    source of the datasets it names (a benchmark serving from PostgreSQL). Raises the governance
    services' :class:`~gateway.errors.DsgwError` when a step is refused.
    """
    gov = gateway.governance
    now = gateway.clock.now()
    # What this store held before: each step below is skipped, or replaces, accordingly.
    snapshot = await gov.snapshot()
    for data in demo_datasets():
        if sources and data["id"] in sources:
            data["source"] = dict(sources[data["id"]])
        # A new entry is recorded as registered, one already there as updated.
        await gov.catalog.register_dataset(
            LOCAL_ADMIN, data, replace_existing=data["id"] in snapshot.datasets
        )
    if DEMO_SCENARIO not in snapshot.scenarios:
        scenario = demo_scenario(now)
        if quotas is not None:
            scenario["quotas"] = dict(quotas)
        await gov.scenarios.create_scenario(LOCAL_ADMIN, scenario)
        await gov.scenarios.set_scenario_status(
            LOCAL_ADMIN, DEMO_SCENARIO, ScenarioStatus.PUBLISHED
        )
    if DEMO_MERCHANT not in snapshot.merchants:
        await gov.merchants.register_merchant(
            LOCAL_ADMIN, DEMO_MERCHANT, "长沙星辰征信服务有限公司", demo_credit_code("XC")
        )
    agreement = snapshot.agreement_for(DEMO_MERCHANT, DEMO_SCENARIO, now)
    if agreement is None:
        agreement = await gov.agreements.grant_agreement(
            LOCAL_ADMIN,
            merchant_id=DEMO_MERCHANT,
            scenario_id=DEMO_SCENARIO,
            starts_at=now - dt.timedelta(hours=1),
            ends_at=now + dt.timedelta(days=365),
            shares=("40", "35", "25"),
            terms=terms,
            agreement_id=agreement_id,
        )
    issued = await gov.clients.issue_client(LOCAL_ADMIN, merchant_id=DEMO_MERCHANT)
    if issued.secret is None:  # issue_client makes a secret unless asked not to
        raise AssertionError("issue_client returned no secret")
    return DemoWorld(issued.client.client_id, issued.secret, agreement.id)
