"""A tracing object keeps page plans per dataset, fields and masking: the pages it builds
must be those a fresh one builds, whatever it was asked before."""

from __future__ import annotations

import dataclasses
from typing import Any

from connectors import synthetic
from connectors.base import Condition
from gateway.catalog.models import Dataset
from gateway.cli.demo import demo_datasets
from gateway.dataplane.values import json_value
from gateway.privacy.masking import mask
from gateway.tracing.delivery import DeliveryTracing

KEY = b"k" * 32
FIELDS = ("credit_code", "name", "legal_rep_name", "registered_capital", "district", "status")


def _dataset() -> Dataset:
    return Dataset.from_dict(next(d for d in demo_datasets() if d["id"] == "enterprises"))


def _page(
    tracing: DeliveryTracing, dataset: Dataset, fields: tuple[str, ...], masked: set[str]
) -> Any:
    rows = [dict(r) for r in synthetic.generate("enterprises", 6, seed=4)]
    rules = {s.name: s.sensitive for s in dataset.fields if s.name in masked and s.sensitive}

    def render(row: Any) -> dict[str, Any]:
        return {
            n: mask(rules[n], row.get(n)) if n in rules else json_value(row.get(n)) for n in fields
        }

    return tracing.page(
        dataset,
        "m-alpha",
        fields,
        rows,
        render=render,
        masked=rules.keys(),
        conditions=[Condition("district", "eq", "岳麓区")],
        limit=5,
    )


def test_pages_do_not_depend_on_what_was_asked_before() -> None:
    dataset = _dataset()
    kept = DeliveryTracing(trace_key=KEY, mark_key=KEY, canary_rate=2)
    shapes = [
        (FIELDS, {"name", "legal_rep_name"}),
        (FIELDS, set()),  # credit_code and name in clear: other anchors, other hashes
        (FIELDS, {"credit_code", "name", "legal_rep_name"}),  # no anchor: no marks
        (FIELDS[1:], {"legal_rep_name"}),
    ]
    for fields, masked in shapes * 2:
        fresh = DeliveryTracing(trace_key=KEY, mark_key=KEY, canary_rate=2)
        assert _page(kept, dataset, fields, masked) == _page(fresh, dataset, fields, masked)


def test_a_changed_dataset_definition_is_planned_again() -> None:
    dataset = _dataset()
    kept = DeliveryTracing(trace_key=KEY, mark_key=KEY, canary_rate=2)
    marked = _page(kept, dataset, FIELDS, {"legal_rep_name"})
    assert marked.mark_id is not None
    unmarked = dataclasses.replace(
        dataset, fields=tuple(dataclasses.replace(f, mark=None) for f in dataset.fields)
    )
    page = _page(kept, unmarked, FIELDS, {"legal_rep_name"})
    assert page.mark_id is None
    fresh = DeliveryTracing(trace_key=KEY, mark_key=KEY, canary_rate=2)
    assert page == _page(fresh, unmarked, FIELDS, {"legal_rep_name"})
