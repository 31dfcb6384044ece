"""What each party has to do next, with its deadline: the workflows seen as a to-do list.

Tasks are derived from the workflow state each time, never stored, so they cannot drift
from it. Each role sees its own: the operator answers onboarding applications and checks
compliance; a source department reviews; the authority concludes agreements and completes
scenarios; a merchant renews agreements that end within 3 months (CS23 art. 22); a source
department answers the data-quality objections routed to it and every filer reads the
answers to its own (:mod:`gateway.objections.tasks`); raters rate the operator for the
yearly evaluation (:mod:`gateway.evaluation.tasks`); the supervisor sees every task that is
overdue.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.authorization.roles import Role
from gateway.db.schema import AgreementRow, ScenarioRow
from gateway.evaluation.tasks import rating_tasks
from gateway.governance.actor import Actor
from gateway.governance.models import AgreementStatus, Scenario, ScenarioStatus, renewal_from
from gateway.objections.tasks import objection_tasks
from gateway.workflows.applications import ApplicationStatus, ReviewStatus
from gateway.workflows.onboarding import OnboardingStatus
from gateway.workflows.service import WorkflowService
from gateway.workflows.task import Task, make_task
from gateway.workflows.use import UseApplicationService

__all__ = ["Task", "tasks_for"]


async def tasks_for(
    actor: Actor,
    engine: AsyncEngine,
    workflows: WorkflowService,
    applications: UseApplicationService,
    now: dt.datetime,
) -> list[Task]:
    """The tasks ``actor`` should see, soonest deadline first. The local administrator
    (no role) sees everyone's."""
    everyone = actor.role is None and actor.merchant_id is None
    found: list[Task] = []
    operator = everyone or actor.role in (Role.OPERATOR, Role.SUPERVISOR)
    authority = everyone or actor.role in (Role.AUTHORITY, Role.SUPERVISOR)
    if operator:
        for item in await workflows.find_onboarding(OnboardingStatus.SUBMITTED):
            found.append(
                make_task(
                    "operator",
                    "onboarding",
                    item.id,
                    f"answer the onboarding application of {item.name} ({item.credit_code})"
                    + (" - on the exclusion list" if item.exclusion_hits else ""),
                    item.due_at,
                    now,
                    provisional=item.provisional,
                )
            )
    for application in await applications.list(actor):
        if operator and application.status is ApplicationStatus.COMPLIANCE_CHECK:
            found.append(
                make_task(
                    "operator",
                    "compliance-check",
                    application.id,
                    f"check the compliance of {application.merchant_id}'s application for "
                    f"scenario {application.scenario_id}",
                    application.compliance_due_at,
                    now,
                    provisional=application.provisional,
                )
            )
        if application.status is ApplicationStatus.DEPARTMENT_REVIEW:
            for review in application.reviews:
                mine = (
                    everyone
                    or actor.role is Role.SUPERVISOR
                    or (actor.role is Role.SOURCE and review.department == actor.department)
                )
                if mine and review.status is ReviewStatus.PENDING:
                    found.append(
                        make_task(
                            f"source: {review.department}",
                            "review",
                            application.id,
                            f"review {application.merchant_id}'s application for "
                            f"{', '.join(review.datasets)} (scenario {application.scenario_id})"
                            + (" - extended" if review.extended_until else ""),
                            review.effective_due,
                            now,
                            provisional=review.provisional,
                        )
                    )
        if authority and application.status is ApplicationStatus.APPROVED:
            found.append(
                make_task(
                    "authority",
                    "agreement",
                    application.id,
                    f"conclude the agreement for {application.merchant_id}'s approved "
                    f"application (scenario {application.scenario_id})",
                    None,
                    now,
                )
            )

    async with engine.connect() as conn:
        if authority:
            for row in (await conn.execute(select(ScenarioRow.__table__))).all():
                if row.status != ScenarioStatus.DRAFT.value:
                    continue
                scenario = Scenario.from_dict(row.definition)
                missing = [
                    name
                    for name, value in (
                        ("plan", scenario.plan),
                        ("evaluation", scenario.evaluation),
                    )
                    if value is None
                ]
                found.append(
                    make_task(
                        "authority",
                        "scenario",
                        scenario.id,
                        f"complete scenario {scenario.id}: "
                        + (f"record its {' and '.join(missing)}" if missing else "publish it"),
                        None,
                        now,
                    )
                )
        agreements = (
            await conn.execute(
                select(AgreementRow.__table__).where(
                    AgreementRow.status == AgreementStatus.ACTIVE.value
                )
            )
        ).all()
    for row in agreements:
        ends_at = row.ends_at if row.ends_at.tzinfo else row.ends_at.replace(tzinfo=dt.UTC)
        if not renewal_from(ends_at) <= now < ends_at:
            continue
        if (
            everyone
            or actor.role in (Role.OPERATOR, Role.SUPERVISOR)
            or (actor.merchant_id == row.merchant_id)
        ):
            found.append(
                make_task(
                    "merchant" if actor.merchant_id else "operator",
                    "renewal",
                    row.id,
                    f"agreement {row.id} of {row.merchant_id} for scenario {row.scenario_id} "
                    f"ends on {ends_at.date().isoformat()}: re-apply now to continue",
                    ends_at,
                    now,
                )
            )
    found.extend(await objection_tasks(actor, engine, now, workflows.deadlines))
    found.extend(await rating_tasks(actor, engine, now, workflows.deadlines.zone))
    if actor.role is Role.SUPERVISOR:
        found = [task for task in found if task.overdue]
    far = dt.datetime.max.replace(tzinfo=dt.UTC)
    return sorted(found, key=lambda t: (t.due_at or far, t.kind, t.subject))
