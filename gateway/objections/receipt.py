"""Whether the filer really received the data an objection is about.

A merchant may object only to data the gateway delivered to it: the named call record must
be its own (the same words whether it is another merchant's or does not exist), an answered
data call (verify, query or aggregate: refusals deliver nothing), of the named dataset, and
must have delivered the named field. For a subject key the check goes as far as it can
without telling the merchant anything it did not receive:

- a ``verify`` call asked about the subject whose key it sent; the record keeps the key (a
  sensitive one as a keyed digest), so the key named now must be the one sent then;
- a ``query`` answer's rows are in the delivery index (:mod:`gateway.tracing.index`), one
  keyed hash per identifying field delivered in clear; the key must be among them, or be
  the equality filter of an answer that delivered rows. Where every identifying field was
  delivered masked, nothing was indexed and the key is taken as given (``subject_checked``
  false), since the merchant saw no key it could be checked against;
- an ``aggregate`` answer is about groups, never one subject: no subject key;
- a ``missing`` objection is about a subject the answer did *not* deliver: the key must be
  one the call asked about (its verify key or equality filter).

A subject that is one of the filer's tracing canary rows (:mod:`gateway.tracing.canaries`)
is reported as such, so the objection can be kept from the department, whose answer ("no
such subject") would reveal which rows are canaries.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.catalog.models import Dataset
from gateway.clock import utc
from gateway.db.schema import LogEntryRow, TraceRow
from gateway.errors import NotReceivedError, ValidationError
from gateway.ledger.records import keyed_digest
from gateway.tracing.index import identity_hash
from gateway.tracing.normalize import normalize

__all__ = ["Receipt", "ReceiptKeys", "check_received"]


@dataclass(frozen=True, slots=True)
class ReceiptKeys:
    """The keystore sub-keys the data plane used: for the delivery index and for the
    digests of sensitive parameters in call records."""

    trace_key: bytes
    param_key: bytes


@dataclass(frozen=True, slots=True)
class Receipt:
    """What the named call record shows: a delivery, to whom, when, in which mode, and
    what the subject check found."""

    seq: int
    merchant_id: str
    recorded_at: dt.datetime
    mode: str
    subject_checked: bool
    canary: bool


async def check_received(
    conn: AsyncConnection,
    seq: int,
    *,
    merchant_id: str | None,
    dataset: Dataset,
    field: str,
    subject_key: str | None,
    missing: bool,
    keys: ReceiptKeys,
) -> Receipt:
    """The receipt of call record ``calls/{seq}`` for an objection about ``dataset`` and
    ``field`` (and ``subject_key``), filed by ``merchant_id`` (None: the operator, who may
    name anyone's record). Raises :class:`NotReceivedError` when the record did not deliver
    it, :class:`ValidationError` for a subject key on an aggregate."""
    where = f"call record calls/{seq}"
    row = (
        await conn.execute(
            select(LogEntryRow.kind, LogEntryRow.payload, LogEntryRow.recorded_at).where(
                LogEntryRow.stream == "calls", LogEntryRow.seq == seq
            )
        )
    ).first()
    payload = _payload(row.payload) if row is not None else {}
    owner = payload.get("merchant")
    if row is None or (merchant_id is not None and owner != merchant_id):
        # Another merchant's record is as invisible as a missing one.
        who = "you" if merchant_id is not None else "a merchant"
        raise NotReceivedError(f"{where} is not an answer the gateway delivered to {who}")
    if row.kind != "data" or not isinstance(owner, str):
        raise NotReceivedError(
            f"{where} is not a data call: only verify, query and aggregate answers deliver data"
        )
    if payload.get("decision") != "allow":
        reason = payload.get("reason") or payload.get("decision")
        raise NotReceivedError(f"{where} was refused ({reason}): it delivered no data")
    if payload.get("dataset") != dataset.id:
        raise NotReceivedError(
            f"{where} delivered dataset {payload.get('dataset')}, not {dataset.id}"
        )
    fields = [f for f in payload.get("fields") or [] if isinstance(f, str)]
    if field not in fields:
        raise NotReceivedError(
            f"{where} did not deliver field {field}; it delivered {', '.join(fields) or 'none'}"
        )
    mode = str(payload.get("mode"))
    checked, canary = False, False
    if subject_key is not None:
        checked, canary = await _subject(
            conn, seq, payload, mode, fields, dataset, subject_key, missing, keys
        )
    return Receipt(seq, owner, utc(row.recorded_at), mode, checked, canary)


def _payload(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


async def _subject(
    conn: AsyncConnection,
    seq: int,
    payload: Mapping[str, Any],
    mode: str,
    fields: list[str],
    dataset: Dataset,
    subject_key: str,
    missing: bool,
    keys: ReceiptKeys,
) -> tuple[bool, bool]:
    """(checked, canary) for ``subject_key``; raises when the record shows it was not
    delivered (or, for ``missing``, not asked about)."""
    where = f"call record calls/{seq}"
    if mode in ("aggregate", "aggregate-dp"):
        raise ValidationError(
            "an aggregate answer is about groups, never one subject: leave subject_key out",
            field="subject_key",
        )
    text = normalize(subject_key)
    if not text:
        raise ValidationError("subject_key is empty once normalised", field="subject_key")
    identifying = dataset.identifying_fields
    parameters = payload.get("parameters")
    asked = _asked_about(
        parameters if isinstance(parameters, Mapping) else {}, dataset, subject_key, keys
    )
    if missing or mode == "verify":
        if not asked:
            raise NotReceivedError(f"subject_key is not a subject {where} asked about")
        return True, False
    hashes = {
        identity_hash(keys.trace_key, dataset.id, name, text): name
        for name in identifying
        if name in fields
    }
    found: set[int] = set()
    if hashes:
        found = set(
            await conn.scalars(
                select(TraceRow.hash).where(TraceRow.seq == seq, TraceRow.hash.in_(list(hashes)))
            )
        )
    if found:
        canaries = {c for c in payload.get("canaries") or [] if isinstance(c, str)}
        return True, any(f"{h:016x}" in canaries for h in found)
    if asked and int(payload.get("rows") or 0) > 0:
        return True, False  # an equality filter on the key: every row delivered was its
    indexed = [name for name in hashes.values() if dataset.field(name).sensitive is None]
    if indexed:
        raise NotReceivedError(f"subject_key is not among the rows {where} delivered to you")
    return False, False  # delivered masked, so never indexed: taken as given


def _asked_about(
    parameters: Mapping[str, Any], dataset: Dataset, subject_key: str, keys: ReceiptKeys
) -> bool:
    """Whether the call's parameters name ``subject_key`` as the value (or the equality
    filter) of an identifying field, comparing digests for sensitive fields."""
    for name in dataset.identifying_fields:
        if name not in parameters:
            continue
        stored = parameters[name]
        if isinstance(stored, Mapping):
            stored = stored.get("eq")
        if not isinstance(stored, str):
            continue
        if dataset.field(name).sensitive is not None:
            if stored in (
                keyed_digest(keys.param_key, subject_key),
                keyed_digest(keys.param_key, subject_key.strip()),
            ):
                return True
        elif normalize(stored) == normalize(subject_key):
            return True
    return False
