"""Quasi-identifier marks in the catalog and the scenario check (issue 17, docs/privacy.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from typing import Any

import pytest

from connectors import synthetic
from gateway.authorization.roles import Role
from gateway.catalog.models import FieldSpec
from gateway.cli.demo import demo_scenario
from gateway.errors import ValidationError
from gateway.governance.models import Scenario
from gateway.privacy.quasi import check_scenario, singling_out
from tests.support.world import ROWS, World


def scenario_doc(world: World, scenario_id: str, grant: dict[str, Any]) -> dict[str, Any]:
    base = demo_scenario(world.clock.now())
    return base | {"id": scenario_id, "grants": [{"dataset": "enterprises"} | grant]}


def expected(fields: tuple[str, ...], k: int) -> tuple[int, int, int]:
    """Subjects, unique subjects and subjects in groups under ``k``, straight from the
    synthetic rows (independently of the connectors and of the checker)."""
    groups: dict[tuple[object, ...], set[str]] = defaultdict(set)
    for row in synthetic.generate("enterprises", ROWS, seed=7):
        groups[tuple(row[f] for f in fields)].add(str(row["credit_code"]))
    sizes = [len(s) for s in groups.values()]
    return sum(sizes), sum(1 for n in sizes if n == 1), sum(n for n in sizes if n < k)


def test_field_spec_round_trip_and_statistics() -> None:
    raw = {"name": "district", "type": "string", "quasi_identifier": True}
    spec = FieldSpec.from_dict(raw)
    assert spec.quasi_identifier and spec.to_dict() == raw
    plain = FieldSpec.from_dict({"name": "status", "type": "string"})
    assert not plain.quasi_identifier and "quasi_identifier" not in plain.to_dict()
    with pytest.raises(ValidationError, match="quasi_identifier"):
        FieldSpec.from_dict(raw | {"quasi_identifier": "yes"})
    assert singling_out([1, 1, 3, 12, 1], 10) == (18, 3, 6)
    assert singling_out([], 10) == (0, 0, 0)


async def test_scenario_check_measures_combinations(world: World) -> None:
    snapshot = await world.gateway.policy.current()
    public = snapshot.datasets["enterprises"].public_dict()
    marked = {f["name"] for f in public["fields"] if f.get("quasi_identifier")}
    assert marked == {"district", "industry", "established", "registered_capital"}

    k = world.gateway.settings.aggregate.min_subjects
    admin = await world.staff_token(Role.AUTHORITY)
    risky = scenario_doc(
        world,
        "qi-risky",
        {
            "modes": ["query"],
            "fields": ["status", "district", "established"],
            "filter_fields": ["industry"],
        },
    )
    response = await world.client.post(
        "/admin/scenarios", json=risky, headers={"Authorization": f"Bearer {admin}"}
    )
    body = await response.json()
    assert response.status == 201, body
    assert len(body["warnings"]) == 1
    warning = body["warnings"][0]
    subjects, unique, small = expected(("district", "established", "industry"), k)
    assert unique > 0  # the synthetic data does single enterprises out on this combination
    assert (warning["subjects"], warning["unique"], warning["small"]) == (subjects, unique, small)
    assert warning["fields"] == ["district", "established", "industry"]
    assert warning["mode"] == "query" and warning["measured"] is True
    assert (
        f"grant enterprises: query returns district and established and filters on industry: "
        f"{unique:,} of {subjects:,} subjects are unique on that combination"
    ) in warning["message"]

    # A quasi-identifier returned beside an identifier; a verify combining two of them.
    beside = Scenario.from_dict(
        scenario_doc(
            world,
            "qi-beside",
            {
                "modes": ["query", "verify"],
                "fields": ["credit_code", "district"],
                "filter_fields": ["credit_code"],
                "verify_fields": ["credit_code", "industry", "registered_capital"],
            },
        )
    )
    found = await world.gateway.scenario_warnings(beside)
    assert [(w.exposure.mode.value, w.exposure.quasi) for w in found] == [
        ("query", ("district",)),
        ("verify", ("industry", "registered_capital")),
    ]
    assert found[0].unique == expected(("district",), k)[1] == 0
    assert "beside the identifier(s) credit_code" in found[0].message
    assert found[1].unique == expected(("industry", "registered_capital"), k)[1]
    # Without a reachable source the same warnings come, without figures.
    static = await check_scenario(beside, snapshot.datasets, min_subjects=k)
    assert [w.subjects for w in static] == [None, None]
    assert "could not be measured" in static[1].message

    # A safe scenario: no quasi-identifiers combined.
    safe = scenario_doc(
        world,
        "qi-safe",
        {
            "modes": ["query", "aggregate"],
            "fields": ["credit_code", "name", "status"],
            "filter_fields": ["credit_code"],
            "group_by": ["district"],
        },
    )
    response = await world.client.post(
        "/admin/scenarios", json=safe, headers={"Authorization": f"Bearer {admin}"}
    )
    body = await response.json()
    assert response.status == 201 and body["warnings"] == []

    if world.gateway.settings.database.url:
        return  # the command line below runs on the SQLite data directory only
    path = world.gateway.settings.data_dir / "draft.json"
    path.write_text(json.dumps(risky | {"id": "qi-draft"}, ensure_ascii=False), "utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSGW_")}
    env |= {"COLUMNS": "300", "DSGW_KEYSTORE_PASSPHRASE": "test passphrase"}
    base = [sys.executable, "-m", "gateway.cli", "--data-dir", str(path.parent)]
    for target in (str(path), "qi-risky"):
        result = subprocess.run(
            [*base, "scenario", "check", target],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "warning:" in result.stdout and f"{unique:,} of {subjects:,}" in result.stdout
    missing = subprocess.run(
        [*base, "scenario", "check", "no-such-scenario"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert missing.returncode == 3 and "neither a scenario document" in missing.stderr
