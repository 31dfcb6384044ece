"""Data-quality objections, persisted: filed, routed, answered, acknowledged, overdue.

Every step is one transaction with its record in the ``governance`` stream (through
:meth:`UnitOfWork.change`), checkpointed and anchored like every other. The records
name the objection, the dataset, the department and the answer; the filer's free text and
the subject key enter them only as digests (the text by SHA-256, the key keyed like a
sensitive call parameter), so the anchored log holds no personal data an objection may
carry while still committing to it.

The deadline is counted like every other (``calendar.deadline``: the end of the N-th
working day after filing, Beijing time). Past it an unanswered objection is recorded once
as overdue (``objection.overdue``) and stays open until answered: never deemed resolved.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Mapping
from typing import Any

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.authorization.roles import Action, Role
from gateway.db.schema import ObjectionRow
from gateway.errors import ForbiddenError, NotFoundError, ValidationError
from gateway.governance.actor import Actor
from gateway.governance.unit_of_work import Unchanged
from gateway.ledger.records import keyed_digest
from gateway.objections.models import (
    Answer,
    AnswerKind,
    Category,
    FilerKind,
    Objection,
    ObjectionFiling,
    ObjectionStatus,
    documents_dicts,
)
from gateway.objections.reading import (
    ObjectionReader,
)
from gateway.objections.receipt import check_received
from gateway.workflows.reading import is_provisional

__all__ = ["ObjectionService"]


def _sha256(text: str) -> str | None:
    return hashlib.sha256(text.encode("utf-8")).hexdigest() if text else None


class ObjectionService(ObjectionReader):
    # -- who sees what --------------------------------------------------------------------

    # -- reading --------------------------------------------------------------------------

    # -- filing ---------------------------------------------------------------------------

    async def file(
        self, actor: Actor, data: Mapping[str, Any], *, merchant_id: str | None = None
    ) -> Objection:
        """File an objection and route it to the dataset's source department, due in the
        configured number of working days.

        A merchant (``actor.merchant_id``) names the call record that delivered the data to
        it; the local administrator may record a merchant's objection received on paper
        with ``merchant_id``, under the same checks. Otherwise the filer is the operator,
        who may name any merchant's record, or none. Raises :class:`NotReceivedError` when
        the record did not deliver the data, :class:`ValidationError` for a bad filing."""
        filer_merchant = actor.merchant_id
        if merchant_id is not None:
            if actor.role is not None or actor.merchant_id is not None or actor.system:
                raise ForbiddenError("only the local administrator files for a merchant")
            filer_merchant = merchant_id
        if filer_merchant is None:
            actor.may(Action.FILE_OBJECTION)
        if not isinstance(data, Mapping):
            raise ValidationError("an objection must be a JSON object")
        filing = ObjectionFiling.from_dict(data)
        if filer_merchant is not None and filing.record_seq is None:
            raise ValidationError(
                "a merchant's objection names the call record that delivered the data "
                "(record: its Dsgw-Record-Id, e.g. calls/42)",
                field="record",
            )
        objection_id = f"obj-{secrets.token_hex(6)}"
        kind = FilerKind.MERCHANT if filer_merchant is not None else FilerKind.OPERATOR
        # Completed by ``apply`` with what only the store knows (department, deadline, the
        # subject check): ``change`` makes the record from it after ``apply`` has run.
        body = _filed_body(objection_id, kind, filing, self._keys.param_key)

        async def apply(conn: AsyncConnection, now: dt.datetime) -> Objection:
            dataset = await self._dataset(conn, filing.dataset_id)
            if filing.field not in dataset.field_names:
                raise ValidationError(
                    f"dataset {dataset.id} has no field {filing.field}", field="field"
                )
            details: dict[str, Any] = {
                "description": filing.description,
                "evidence": filing.evidence,
                "documents": documents_dicts(filing.documents),
            }
            checked, canary, owner = False, False, filer_merchant
            if filing.record_seq is not None:
                receipt = await check_received(
                    conn,
                    filing.record_seq,
                    merchant_id=filer_merchant,
                    dataset=dataset,
                    field=filing.field,
                    subject_key=filing.subject_key,
                    missing=filing.category is Category.MISSING,
                    keys=self._keys,
                )
                checked, canary, owner = (
                    receipt.subject_checked,
                    receipt.canary,
                    receipt.merchant_id,
                )
                details["record"] = {
                    "recorded_at": receipt.recorded_at.isoformat(),
                    "mode": receipt.mode,
                }
            objection = Objection(
                id=objection_id,
                filer_kind=kind,
                # The merchant whose use the objection is about: the filer, or for the
                # operator's objection about a named record, that record's merchant.
                merchant_id=owner if kind is FilerKind.MERCHANT else None,
                filed_by=actor.id,
                record_seq=filing.record_seq,
                dataset_id=dataset.id,
                department=dataset.provider,
                field=filing.field,
                subject_key=filing.subject_key,
                subject_checked=checked,
                category=filing.category,
                details=details,
                canary=canary,
                status=ObjectionStatus.OPEN,
                filed_at=now,
                due_at=(due := self._calendar.deadline(now, self._working_days)),
                provisional=is_provisional(self._calendar, now, due),
            )
            await conn.execute(
                insert(ObjectionRow).values(
                    id=objection.id,
                    filer_kind=kind.value,
                    merchant_id=objection.merchant_id,
                    filed_by=actor.id,
                    record_seq=filing.record_seq,
                    dataset_id=dataset.id,
                    department=dataset.provider,
                    field=filing.field,
                    subject_key=filing.subject_key,
                    subject_checked=checked,
                    category=filing.category.value,
                    details=details,
                    canary=canary,
                    status=ObjectionStatus.OPEN.value,
                    filed_at=now,
                    due_at=objection.due_at,
                    reasons=[],
                    updated_at=now,
                )
            )
            body.update(
                department=dataset.provider,
                due_at=objection.due_at,
                subject_checked=checked,
                answering_party=objection.answering_party,
                merchant_id=owner,
            )
            return objection

        return await self._uow.change(actor, "objection.filed", body, apply)

    # -- answering ------------------------------------------------------------------------

    def _answerer(self, actor: Actor, objection: Objection, department: str | None) -> None:
        """The department it was routed to answers (the operator for a canary row's); the
        local administrator may record any answer, naming the department if it likes."""
        actor.may(Action.ANSWER_OBJECTION)
        if actor.role is None:
            if department not in (None, objection.department):
                raise ValidationError(
                    f"objection {objection.id} was routed to {objection.department}, "
                    f"not {department}"
                )
            return
        if actor.role is Role.OPERATOR:
            if not objection.canary:
                raise ForbiddenError(
                    f"objection {objection.id} is answered by {objection.department}, "
                    "not by the operator",
                    action=Action.ANSWER_OBJECTION.value,
                )
            return
        if actor.role is Role.SOURCE and not actor.department:
            raise ForbiddenError(
                "this source client is bound to no department; issue it with --department"
            )
        if self.view_for(actor, objection) is None:
            raise NotFoundError(f"objection {objection.id} does not exist")

    async def answer(
        self,
        actor: Actor,
        objection_id: str,
        data: Mapping[str, Any],
        *,
        department: str | None = None,
    ) -> Objection:
        """The department's answer, in time or late (a late answer is still an answer,
        and is counted as late). Accepted, rejected with reasons, or corrected with the
        version or date of the fix; an accepted objection may later be corrected."""
        if not isinstance(data, Mapping):
            raise ValidationError("an answer must be a JSON object")
        today = self._clock.now().astimezone(self._calendar.zone).date()
        answer = Answer.from_dict(data, today=today)
        # Completed by ``apply`` (see :meth:`file`).
        body: dict[str, Any] = {
            "objection_id": objection_id,
            "answer": answer.kind.value,
            "reasons": list(answer.reasons),
            "correction": answer.correction(),
        }

        async def apply(conn: AsyncConnection, now: dt.datetime) -> Objection:
            objection = await self._load(conn, objection_id)
            self._answerer(actor, objection, department)
            objection.check_answerable(answer.kind)
            values: dict[str, Any] = {"status": answer.kind.value, "updated_at": now}
            first = objection.status is ObjectionStatus.OPEN
            if first:
                values |= {
                    "answer": answer.kind.value,
                    "answered_at": now,
                    "answered_by": actor.id,
                    "reasons": list(answer.reasons),
                }
            elif answer.reasons:
                values["reasons"] = [*objection.reasons, *answer.reasons]
            if answer.kind is AnswerKind.CORRECTED:
                values |= {"correction": answer.correction(), "corrected_at": now}
            # The filer is told of every answer: a new one awaits its acknowledgement.
            values["acknowledged_at"] = None
            await conn.execute(
                update(ObjectionRow).where(ObjectionRow.id == objection_id).values(values)
            )
            body.update(
                department=objection.department,
                first_answer=first,
                in_time=(now < objection.due_at) if first else objection.in_time,
                due_at=objection.due_at,
            )
            return await self._load(conn, objection_id)

        return await self._uow.change(actor, f"objection.{answer.kind.value}", body, apply)

    async def acknowledge(self, actor: Actor, objection_id: str) -> Objection:
        """The filer has read the answer; its task goes away until the next answer."""

        async def apply(conn: AsyncConnection, now: dt.datetime) -> Objection:
            objection = await self._load(conn, objection_id)
            if actor.merchant_id is not None:
                if objection.merchant_id != actor.merchant_id:
                    raise NotFoundError(f"objection {objection_id} does not exist")
                if objection.filer_kind is not FilerKind.MERCHANT:
                    raise NotFoundError(f"objection {objection_id} does not exist")
            elif actor.role is not None and actor.role is not Role.OPERATOR:
                raise ForbiddenError("only the filer acknowledges an answer")
            elif actor.role is Role.OPERATOR and objection.filer_kind is not FilerKind.OPERATOR:
                raise ForbiddenError("the merchant that filed it acknowledges the answer")
            if objection.status is ObjectionStatus.OPEN:
                raise ValidationError(f"objection {objection_id} has no answer yet")
            if objection.acknowledged_at is not None:
                raise Unchanged(objection)
            await conn.execute(
                update(ObjectionRow)
                .where(ObjectionRow.id == objection_id)
                .values(acknowledged_at=now, updated_at=now)
            )
            return await self._load(conn, objection_id)

        return await self._uow.change(
            actor, "objection.acknowledged", {"objection_id": objection_id}, apply
        )

    # -- deadlines ------------------------------------------------------------------------

    def start_sweeper(self, interval: float = 60.0) -> None:
        """Record overdue objections in the background, so the record appears on time even
        when nobody looks."""
        self._sweeper.start(interval)

    async def stop_sweeper(self) -> None:
        await self._sweeper.stop()


def _filed_body(
    objection_id: str, kind: FilerKind, filing: ObjectionFiling, param_key: bytes
) -> dict[str, Any]:
    """The ``objection.filed`` record's body as far as the filing tells; the free text and
    the subject key enter it as digests."""
    return {
        "objection_id": objection_id,
        "filer": kind.value,
        "record": f"calls/{filing.record_seq}" if filing.record_seq is not None else None,
        "dataset": filing.dataset_id,
        "field": filing.field,
        "category": filing.category.value,
        "subject_key_digest": (
            keyed_digest(param_key, filing.subject_key) if filing.subject_key else None
        ),
        "description_sha256": _sha256(filing.description),
        "evidence_sha256": _sha256(filing.evidence),
        "documents": documents_dicts(filing.documents),
    }
