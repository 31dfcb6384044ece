"""Data products, their export check and filing, listings, trades and settlements.

Raw public data is never traded, only products (ZW art. 24): a product declares what it
draws on (within its merchant's agreement) and how each output is derived, and is refused
when an output would be a source field as it is, or a sensitive field in a reversible form,
or when the whole product is a plain query of a dataset. A product leaves the platform
only after the operator's compliance check and the authority's filing (ZW art. 23, 28);
only a filed product can be listed on the exchange.

    draft --operator: check passed--> checked --authority: filed--> filed --exchange--> listed
      \\--operator: check failed (reasons)--> rejected            listed --> delisted
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Final

from gateway.catalog.checks import check_id, expect_keys
from gateway.catalog.models import Dataset
from gateway.errors import ConflictError, ValidationError
from gateway.governance.models import DatasetGrant

__all__ = [
    "Delivery",
    "Derivation",
    "Product",
    "ProductDefinition",
    "ProductStatus",
    "Trade",
    "parse_money",
]


class ProductStatus(StrEnum):
    DRAFT = "draft"
    CHECKED = "checked"
    REJECTED = "rejected"
    FILED = "filed"
    LISTED = "listed"
    DELISTED = "delisted"


class Delivery(StrEnum):
    API = "api"
    REPORT = "report"
    MODEL_OUTPUT = "model-output"


class Derivation(StrEnum):
    """How an output is computed from its inputs. ``key`` echoes an identifier the buyer
    supplied; ``band`` coarsens a value into ranges; the others compute new values."""

    KEY = "key"
    BAND = "band"
    FLAG = "flag"
    COUNT = "count"
    AGGREGATE = "aggregate"
    VERIFICATION = "verification"
    SCORE = "score"
    MODEL = "model"


# Derivations that turn values into something new and cannot be undone: they may draw on
# sensitive fields. A key or a band keeps the value (or most of it) readable.
IRREVERSIBLE = frozenset(
    {
        Derivation.FLAG,
        Derivation.COUNT,
        Derivation.AGGREGATE,
        Derivation.VERIFICATION,
        Derivation.SCORE,
        Derivation.MODEL,
    }
)
PASSTHROUGH = frozenset({Derivation.KEY, Derivation.BAND})


CENT: Final = Decimal("0.01")
MAX_AMOUNT: Final = Decimal("1e13")


def parse_money(what: str, value: object) -> Decimal:
    """A non-negative amount in yuan with at most 2 decimals, given as a string or an int
    (never a float: binary fractions are not money)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValidationError(f'{what} must be a decimal string such as "12.50"')
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValidationError(f"{what} {value!r} is not a number") from None
    if not amount.is_finite() or amount < 0 or amount != amount.quantize(CENT):
        raise ValidationError(f"{what} must be a non-negative amount with at most 2 decimals")
    if amount >= MAX_AMOUNT:
        raise ValidationError(f"{what} is too large")
    return amount.quantize(CENT)


@dataclass(frozen=True, slots=True)
class Output:
    name: str
    derivation: Derivation
    sources: tuple[tuple[str, str], ...]  # (dataset, field)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "derivation": self.derivation.value,
            "from": [f"{d}.{f}" for d, f in self.sources],
        }


@dataclass(frozen=True, slots=True)
class ProductDefinition:
    """What the merchant registers."""

    id: str
    name: str
    description: str
    scenario_id: str
    delivery: Delivery
    inputs: tuple[tuple[str, tuple[str, ...]], ...]  # (dataset, fields)
    outputs: tuple[Output, ...]
    unit_price: Decimal
    unit: str
    # Where the processor's service answers deliveries of an ``api`` product; the gateway
    # stands in front of it, counts each delivery against the buyer's trade and passes on
    # the declared outputs only.
    endpoint: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProductDefinition:
        expect_keys(
            "product",
            data,
            {"id", "name", "scenario", "delivery", "inputs", "outputs", "unit_price"},
            {"description", "unit", "endpoint"},
        )
        product_id = check_id("product", data["id"])

        def text(key: str, limit: int, default: str | None = None) -> str:
            value = data.get(key, default)
            if not isinstance(value, str) or not value.strip() or len(value) > limit:
                raise ValidationError(f"product {product_id}: {key} must be 1-{limit} characters")
            return value.strip()

        try:
            delivery = Delivery(data["delivery"])
        except ValueError:
            raise ValidationError(
                f"product {product_id}: delivery must be api, report or model-output"
            ) from None
        raw_inputs = data["inputs"]
        if not isinstance(raw_inputs, list) or not raw_inputs:
            raise ValidationError(f"product {product_id}: inputs must be a non-empty list")
        inputs = []
        for item in raw_inputs:
            if not isinstance(item, Mapping):
                raise ValidationError(f"product {product_id}: each input is an object")
            expect_keys("product input", item, {"dataset", "fields"})
            fields = item["fields"]
            if (
                not isinstance(fields, list)
                or not fields
                or not all(isinstance(f, str) for f in fields)
            ):
                raise ValidationError(f"product {product_id}: input fields must be names")
            inputs.append((check_id("dataset", item["dataset"]), tuple(fields)))
        if len({d for d, _ in inputs}) != len(inputs):
            raise ValidationError(f"product {product_id}: a dataset is listed twice in inputs")
        raw_outputs = data["outputs"]
        if not isinstance(raw_outputs, list) or not raw_outputs:
            raise ValidationError(f"product {product_id}: outputs must be a non-empty list")
        outputs = []
        for item in raw_outputs:
            if not isinstance(item, Mapping):
                raise ValidationError(f"product {product_id}: each output is an object")
            expect_keys("product output", item, {"name", "derivation", "from"})
            try:
                derivation = Derivation(item["derivation"])
            except ValueError:
                raise ValidationError(
                    f"product {product_id}: output {item.get('name')!r}: derivation must be "
                    f"one of {', '.join(d.value for d in Derivation)} (a copy of source data "
                    "is not a product)"
                ) from None
            sources = []
            for ref in item["from"] if isinstance(item["from"], list) else [None]:
                if not isinstance(ref, str) or ref.count(".") != 1:
                    raise ValidationError(
                        f"product {product_id}: output sources are written dataset.field"
                    )
                dataset_id, field = ref.split(".")
                sources.append((dataset_id, field))
            if not sources:
                raise ValidationError(f"product {product_id}: each output names its sources")
            name = item["name"]
            if not isinstance(name, str) or not name or len(name) > 64:
                raise ValidationError(f"product {product_id}: output names are 1-64 characters")
            outputs.append(Output(name, derivation, tuple(sources)))
        unit = text("unit", 32, "call")
        endpoint = data.get("endpoint")
        if delivery is Delivery.API:
            if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
                raise ValidationError(
                    f"product {product_id}: an api product names the http(s) endpoint of the "
                    "service that computes it"
                )
            if len(endpoint) > 500:
                raise ValidationError(f"product {product_id}: endpoint is too long")
        elif endpoint is not None:
            raise ValidationError(f"product {product_id}: only an api product has an endpoint")
        return cls(
            id=product_id,
            name=text("name", 200),
            description=text("description", 4000, data.get("name")),
            scenario_id=check_id("scenario", data["scenario"]),
            delivery=delivery,
            inputs=tuple(inputs),
            outputs=tuple(outputs),
            unit_price=parse_money(f"product {product_id}: unit_price", data["unit_price"]),
            unit=unit,
            endpoint=endpoint,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "scenario": self.scenario_id,
            "delivery": self.delivery.value,
            "inputs": [{"dataset": d, "fields": list(f)} for d, f in self.inputs],
            "outputs": [o.to_dict() for o in self.outputs],
            "unit_price": str(self.unit_price),
            "unit": self.unit,
            "endpoint": self.endpoint,
        }

    def check_not_raw(
        self, scope: Mapping[str, DatasetGrant], datasets: Mapping[str, Dataset]
    ) -> None:
        """Refuse raw public data as a product: inputs outside the agreement's scope, an
        output drawing on an undeclared input, a sensitive field in a reversible output, a
        product made only of echoed or banded fields (a plain query of a dataset)."""
        declared: set[tuple[str, str]] = set()
        for dataset_id, fields in self.inputs:
            grant = scope.get(dataset_id)
            if grant is None:
                raise ValidationError(
                    f"product {self.id}: its agreement does not cover dataset {dataset_id}"
                )
            granted = {
                *grant.fields,
                *grant.verify_fields,
                *grant.filter_fields,
                *grant.group_by,
                *grant.measure_fields,
            }
            outside = sorted(set(fields) - granted)
            if outside:
                raise ValidationError(
                    f"product {self.id}: the agreement does not grant {dataset_id} field(s) "
                    f"{', '.join(outside)}"
                )
            declared.update((dataset_id, f) for f in fields)
        for output in self.outputs:
            for dataset_id, field in output.sources:
                if (dataset_id, field) not in declared:
                    raise ValidationError(
                        f"product {self.id}: output {output.name} draws on "
                        f"{dataset_id}.{field}, which is not among the inputs"
                    )
                if output.derivation in PASSTHROUGH:
                    spec = datasets[dataset_id].field(field)
                    if spec.sensitive is not None:
                        raise ValidationError(
                            f"product {self.id}: output {output.name} would deliver the "
                            f"sensitive field {dataset_id}.{field} readable "
                            f"({output.derivation.value}); personal and enterprise data leave "
                            "only in an irreversible form"
                        )
        if all(o.derivation in PASSTHROUGH for o in self.outputs):
            raise ValidationError(
                f"product {self.id} only echoes or bands source fields: a plain query of a "
                "dataset is raw public data, which is never a product (ZW art. 24)"
            )


@dataclass(frozen=True, slots=True)
class Product:
    definition: ProductDefinition
    merchant_id: str
    agreement_id: str
    status: ProductStatus
    created_at: dt.datetime
    check_reasons: tuple[str, ...] = ()
    filing_number: str | None = None
    listing_id: str | None = None

    @property
    def id(self) -> str:
        return self.definition.id

    def require(self, *statuses: ProductStatus, action: str) -> None:
        if self.status not in statuses:
            raise ConflictError(
                f"product {self.id} is {self.status.value}: to {action} it must be "
                + " or ".join(s.value for s in statuses)
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.definition.to_dict(),
            "merchant_id": self.merchant_id,
            "agreement_id": self.agreement_id,
            "status": self.status.value,
            "created_at": self.created_at.isoformat(),
            "check_reasons": list(self.check_reasons),
            "filing_number": self.filing_number,
            "listing_id": self.listing_id,
        }


@dataclass(frozen=True, slots=True)
class Trade:
    """A trade as the exchange reported it, and how much of it was delivered."""

    exchange_trade_id: str
    product_id: str
    buyer_code: str
    buyer_name: str
    quantity: int
    unit_price: Decimal
    amount: Decimal
    traded_at: dt.datetime
    used: int = 0
    settlement_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "exchange_trade_id": self.exchange_trade_id,
            "product_id": self.product_id,
            "buyer_code": self.buyer_code,
            "buyer_name": self.buyer_name,
            "quantity": self.quantity,
            "unit_price": str(self.unit_price),
            "amount": str(self.amount),
            "traded_at": self.traded_at.isoformat(),
            "used": self.used,
            "settlement_id": self.settlement_id,
        }
