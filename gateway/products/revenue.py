"""Revenue of settled trades, split by each agreement between owner, operator and processor
(CS23 art. 21; ZW art. 25).

Rounding rule, stated once: for each trade, each party first gets its exact share rounded
down to the cent; the cents left over (at most two) go one each to the parties with the
largest remainders, ties broken in the fixed order owner, operator, processor. Every trade
therefore splits into exactly its amount, and every statement total is the exact sum of its
lines: nothing is created or lost by rounding, and the same input always gives the same
cents.

The owner's share goes to the city or the district budget, by the project's level (the
scenario's ``level``): the statement names that budget as the party.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any

__all__ = ["PARTIES", "RevenueLine", "Statement", "split", "statements"]

CENT = Decimal("0.01")
PARTIES = ("owner", "operator", "processor")


def split(amount: Decimal, shares: tuple[Decimal, Decimal, Decimal]) -> tuple[Decimal, ...]:
    """``amount`` (yuan, 2 decimals) split by percentage ``shares`` summing to 100, per the
    module's rounding rule."""
    if sum(shares) != 100:
        raise ValueError(f"shares must sum to 100, got {sum(shares)}")
    exact = [amount * share / 100 for share in shares]
    floors = [value.quantize(CENT, rounding=ROUND_DOWN) for value in exact]
    leftover = int((amount - sum(floors)) / CENT)
    order = sorted(range(3), key=lambda i: (-(exact[i] - floors[i]), i))
    for i in order[:leftover]:
        floors[i] += CENT
    return tuple(floors)


@dataclass(frozen=True, slots=True)
class RevenueLine:
    trade_id: str
    product_id: str
    agreement_id: str
    amount: Decimal
    share: Decimal
    allocated: Decimal

    def to_dict(self) -> dict[str, str]:
        return {
            "trade_id": self.trade_id,
            "product_id": self.product_id,
            "agreement_id": self.agreement_id,
            "trade_amount": str(self.amount),
            "share_percent": str(self.share),
            "allocated": str(self.allocated),
        }


@dataclass(slots=True)
class Statement:
    period: str
    role: str
    party: str
    lines: list[RevenueLine] = field(default_factory=list)

    @property
    def total(self) -> Decimal:
        return sum((line.allocated for line in self.lines), Decimal("0.00"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "period": self.period,
            "role": self.role,
            "party": self.party,
            "total": str(self.total),
            "lines": [line.to_dict() for line in self.lines],
        }


@dataclass(frozen=True, slots=True)
class SettledTrade:
    trade_id: str
    product_id: str
    agreement_id: str
    amount: Decimal
    shares: tuple[Decimal, Decimal, Decimal]
    owner_budget: str
    processor: str


def statements(
    period: str, trades: Iterable[SettledTrade], operator: str = "operator"
) -> list[Statement]:
    """One statement per party for ``period``: each owner budget, the operator and each
    processor (merchant), with a line per trade."""
    by_party: dict[tuple[str, str], Statement] = {}
    for trade in sorted(trades, key=lambda t: t.trade_id):
        allocations = split(trade.amount, trade.shares)
        parties = (trade.owner_budget, operator, trade.processor)
        for role, party, share, allocated in zip(
            PARTIES, parties, trade.shares, allocations, strict=True
        ):
            statement = by_party.setdefault((role, party), Statement(period, role, party))
            statement.lines.append(
                RevenueLine(
                    trade.trade_id,
                    trade.product_id,
                    trade.agreement_id,
                    trade.amount,
                    share,
                    allocated,
                )
            )
    order = {role: i for i, role in enumerate(PARTIES)}
    return sorted(by_party.values(), key=lambda s: (order[s.role], s.party))


def owner_budget(scenario: Mapping[str, Any]) -> str:
    """The budget the owner's share goes to: the city's, or a district's for a
    district-level project."""
    if scenario.get("level") == "district":
        return f"{scenario.get('district') or 'district'} budget (district level)"
    return "city budget (city level)"
