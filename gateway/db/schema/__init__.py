"""The gateway's own tables, on one declarative base with named constraints.

Alembic migrations under ``gateway/migrations`` create exactly these tables; a test compares
the two so they cannot drift. The tables are defined by area in this package's modules;
import them from here, so that every table is on ``Base.metadata`` whichever one is used.
"""

from __future__ import annotations

from gateway.db.schema.base import Base
from gateway.db.schema.chain import AnchorRegistryRow, AnchorRow, AnchorTransactionRow
from gateway.db.schema.credentials import AssertionJtiRow, ClientRow, TokenRow
from gateway.db.schema.governance import AgreementRow, DatasetRow, MerchantRow, ScenarioRow
from gateway.db.schema.ledger import CheckpointRow, LogEntryRow, TraceRow, TreeNodeRow
from gateway.db.schema.privacy import AnsweredCellRow, PrivacySpendRow, VerifyNegativeRow
from gateway.db.schema.products import ProductRow, SettlementRow, TradeRow
from gateway.db.schema.supervision import (
    AlertRow,
    MeasureRow,
    MonitorCursorRow,
    ObjectionRow,
    RatingFormRow,
    RatingRow,
    WorkdayScheduleRow,
)
from gateway.db.schema.workflows import ExclusionRow, OnboardingRow, ReviewRow, UseApplicationRow

__all__ = [
    "AgreementRow",
    "AlertRow",
    "AnchorRegistryRow",
    "AnchorRow",
    "AnchorTransactionRow",
    "AnsweredCellRow",
    "AssertionJtiRow",
    "Base",
    "CheckpointRow",
    "ClientRow",
    "DatasetRow",
    "ExclusionRow",
    "LogEntryRow",
    "MeasureRow",
    "MerchantRow",
    "MonitorCursorRow",
    "ObjectionRow",
    "OnboardingRow",
    "PrivacySpendRow",
    "ProductRow",
    "RatingFormRow",
    "RatingRow",
    "ReviewRow",
    "ScenarioRow",
    "SettlementRow",
    "TokenRow",
    "TraceRow",
    "TradeRow",
    "TreeNodeRow",
    "UseApplicationRow",
    "VerifyNegativeRow",
    "WorkdayScheduleRow",
]
