"""Scenarios through their life: drafted, given a plan and an evaluation, published,
suspended, retired. Each step is a governance record (:mod:`gateway.governance.unit_of_work`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.authorization.roles import Action
from gateway.catalog.models import Dataset
from gateway.clock import DEFAULT_ZONE
from gateway.db.schema import DatasetRow, ScenarioRow
from gateway.errors import ConflictError, NotFoundError
from gateway.governance.actor import Actor
from gateway.governance.models import DocumentRef, Evaluation, Scenario, ScenarioStatus
from gateway.governance.unit_of_work import UnitOfWork, fetch_row

__all__ = ["ScenarioService", "check_grants"]


async def check_grants(conn: AsyncConnection, scenario: Scenario) -> None:
    """Refuse ``scenario`` unless every dataset it grants is in the catalog and may be
    granted as it says (checked again at publication and at each agreement, since catalog
    entries change). Raises :class:`NotFoundError` or the grant's own refusal."""
    for grant in scenario.grants:
        row = await fetch_row(conn, DatasetRow, DatasetRow.id == grant.dataset_id)
        if row is None:
            raise NotFoundError(
                f"scenario {scenario.id}: dataset {grant.dataset_id} is not in the catalog"
            )
        grant.check_against(Dataset.from_dict(row.definition))


class ScenarioService:
    """Creates scenarios and moves them through their statuses."""

    def __init__(self, uow: UnitOfWork, *, zone: dt.tzinfo = DEFAULT_ZONE) -> None:
        """``zone`` is the deployment's time zone: date-only periods are its days."""
        self._uow = uow
        self._zone = zone

    async def create_scenario(self, actor: Actor, data: Mapping[str, Any]) -> Scenario:
        """Store a new scenario as a draft, whatever status ``data`` names: a scenario is
        published only with its plan and a passing evaluation on record. Raises
        :class:`ConflictError` for a taken id, and the catalog's refusal of a grant."""
        actor.may(Action.MANAGE_SCENARIO)
        scenario = replace(Scenario.from_dict(data, self._zone), status=ScenarioStatus.DRAFT)

        async def apply(conn: AsyncConnection, now: dt.datetime) -> Scenario:
            if await conn.scalar(select(ScenarioRow.id).where(ScenarioRow.id == scenario.id)):
                raise ConflictError(f"scenario {scenario.id} already exists")
            await check_grants(conn, scenario)
            await conn.execute(
                insert(ScenarioRow).values(
                    id=scenario.id,
                    name=scenario.name,
                    status=scenario.status.value,
                    definition=scenario.to_dict(),
                    created_at=now,
                    updated_at=now,
                )
            )
            return scenario

        return await self._uow.change(
            actor, "scenario.created", {"scenario": scenario.to_dict()}, apply
        )

    async def set_scenario_status(
        self, actor: Actor, scenario_id: str, status: ScenarioStatus, reason: str = ""
    ) -> Scenario:
        """Move a scenario to ``status`` along the allowed transitions; publishing checks
        the plan, the evaluation and the catalog again, since the draft may be old."""
        actor.may(
            Action.SUSPEND_SCENARIO
            if status is ScenarioStatus.SUSPENDED
            else Action.MANAGE_SCENARIO
        )

        async def apply(conn: AsyncConnection, now: dt.datetime) -> Scenario:
            row = await fetch_row(conn, ScenarioRow, ScenarioRow.id == scenario_id)
            if row is None:
                raise NotFoundError(f"scenario {scenario_id} does not exist")
            current = replace(Scenario.from_dict(row.definition), status=ScenarioStatus(row.status))
            current.check_transition(status)
            if status is ScenarioStatus.PUBLISHED:
                current.check_publishable()
                # Catalog rules may have changed since the draft was written.
                await check_grants(conn, current)
            updated = replace(current, status=status)
            await conn.execute(
                update(ScenarioRow)
                .where(ScenarioRow.id == scenario_id)
                .values(status=status.value, definition=updated.to_dict(), updated_at=now)
            )
            return updated

        return await self._uow.change(
            actor,
            f"scenario.{status.value}",
            {"scenario_id": scenario_id, "status": status.value, "reason": reason},
            apply,
        )

    async def record_scenario_plan(
        self, actor: Actor, scenario_id: str, plan: Mapping[str, Any]
    ) -> Scenario:
        """Attach the scenario's plan (title, reference, SHA-256 of the document)."""
        document = DocumentRef.from_dict("plan", plan)
        return await self._amend_draft(
            actor,
            scenario_id,
            "scenario.plan",
            {"plan": document.to_dict()},
            lambda current: replace(current, plan=document),
        )

    async def record_scenario_evaluation(
        self, actor: Actor, scenario_id: str, evaluation: Mapping[str, Any]
    ) -> Scenario:
        """Record the scenario's evaluation; only a passing one allows publication."""
        record = Evaluation.from_dict(evaluation)
        return await self._amend_draft(
            actor,
            scenario_id,
            "scenario.evaluation",
            {"evaluation": record.to_dict()},
            lambda current: replace(current, evaluation=record),
        )

    async def _amend_draft(
        self,
        actor: Actor,
        scenario_id: str,
        kind: str,
        body: Mapping[str, Any],
        amend: Callable[[Scenario], Scenario],
    ) -> Scenario:
        actor.may(Action.MANAGE_SCENARIO)

        async def apply(conn: AsyncConnection, now: dt.datetime) -> Scenario:
            row = await fetch_row(conn, ScenarioRow, ScenarioRow.id == scenario_id)
            if row is None:
                raise NotFoundError(f"scenario {scenario_id} does not exist")
            current = replace(Scenario.from_dict(row.definition), status=ScenarioStatus(row.status))
            if current.status is not ScenarioStatus.DRAFT:
                raise ConflictError(
                    f"scenario {scenario_id} is {current.status.value}: its plan and evaluation "
                    "are fixed once published (one scenario, one plan, one evaluation)"
                )
            updated = amend(current)
            await conn.execute(
                update(ScenarioRow)
                .where(ScenarioRow.id == scenario_id)
                .values(definition=updated.to_dict(), updated_at=now)
            )
            return updated

        return await self._uow.change(actor, kind, {"scenario_id": scenario_id, **body}, apply)
