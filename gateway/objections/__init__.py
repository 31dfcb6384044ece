"""Data-quality objections (ZW art. 11; GY's 数据异议反馈机制): filed by a merchant about data
it received, or by the operator; routed to the dataset's source department; answered within
working days; never deemed answered. :mod:`.models` has the rules, :mod:`.receipt` the check
that the filer received the data, :mod:`.service` the persisted workflow, :mod:`.tasks` the
task-list entries."""

from __future__ import annotations

from gateway.objections.models import (
    Answer,
    AnswerKind,
    Category,
    FilerKind,
    Objection,
    ObjectionFiling,
    ObjectionStatus,
    View,
)
from gateway.objections.receipt import ReceiptKeys
from gateway.objections.service import ObjectionService

__all__ = [
    "Answer",
    "AnswerKind",
    "Category",
    "FilerKind",
    "Objection",
    "ObjectionFiling",
    "ObjectionService",
    "ObjectionStatus",
    "ReceiptKeys",
    "View",
]
