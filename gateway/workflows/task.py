"""One task: what a party has to do next, by when. Its own module so that every domain
with work to hand out (the workflows, objections, the yearly evaluation) builds the same
thing and :mod:`gateway.workflows.tasks` can gather them without import cycles."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

__all__ = ["Task", "make_task"]


@dataclass(frozen=True, slots=True)
class Task:
    role: str
    kind: str
    subject: str
    title: str
    due_at: dt.datetime | None
    overdue: bool
    # due_at counted without next year's holiday schedule (docs/workdays.md).
    provisional: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "kind": self.kind,
            "subject": self.subject,
            "title": self.title,
            "due_at": self.due_at.isoformat() if self.due_at else None,
            "overdue": self.overdue,
            "provisional": self.provisional,
        }


def make_task(
    role: str,
    kind: str,
    subject: str,
    title: str,
    due: dt.datetime | None,
    now: dt.datetime,
    *,
    provisional: bool = False,
) -> Task:
    """A task, overdue when its deadline (the first instant too late) has come."""
    return Task(role, kind, subject, title, due, due is not None and now >= due, provisional)
