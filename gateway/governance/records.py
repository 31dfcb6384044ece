"""The log as staff read it: every record, with the token ids its reader may not see withheld.

A token id ties together every call of its holder and is what revocation takes. The role
boundaries (:mod:`gateway.authorization.boundaries`) give the operator merchants' and
buyers' token ids only; the authority and the supervisor see all. Records name token ids in
three places: a call record's ``token_id`` (the token that made the call, or the one the
token endpoint issued), the ``path`` of a call to ``/admin/tokens/{jti}/revoke``, and a
``token.*`` governance record's ``jti`` (the token revoked).
Whose token it is comes from the ``tokens`` table, never from the record, so a record
cannot claim to be about a merchant.

A record with a withheld member no longer hashes to its leaf: listings say which members
they withheld, and the evidence bundle of such a record is refused to that reader (a
bundle is the record as logged or nothing).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.authorization.boundaries import Party, Reach, may_reach, party_of, require_reach
from gateway.authorization.roles import Action, Role
from gateway.db.schema import TokenRow
from gateway.errors import ForbiddenError, ValidationError
from gateway.governance.actor import Actor
from gateway.ledger.log import STREAMS, LogEntry, read_entries, read_entry

__all__ = ["RecordView", "check_bundle", "read_records"]


@dataclass(frozen=True, slots=True)
class RecordView:
    """One log entry as one reader may see it."""

    entry: LogEntry
    record: dict[str, Any]
    # Members of ``record`` set to null for this reader; empty when it is the record as
    # logged (and so still hashes to ``entry.leaf_hash``).
    withheld: tuple[str, ...] = ()


# The one route whose path names a token id (``POST /admin/tokens/{jti}/revoke``).
_REVOKE_PATH = re.compile(r"^/admin/tokens/([^/]+)/revoke$")


def _token_members(record: dict[str, Any]) -> dict[str, str]:
    """The members of ``record`` that hold a token id, with the id."""
    found = {}
    if isinstance(record.get("token_id"), str):
        found["token_id"] = record["token_id"]
    kind = record.get("kind")
    if isinstance(kind, str) and kind.startswith("token.") and isinstance(record.get("jti"), str):
        found["jti"] = record["jti"]
    path = record.get("path")
    if isinstance(path, str) and (match := _REVOKE_PATH.match(path)) is not None:
        found["path"] = unquote(match[1])
    return found


async def _holders(engine: AsyncEngine, jtis: set[str]) -> dict[str, Party]:
    """Whose each token is, from the ``tokens`` table; ids it does not hold are absent."""
    if not jtis:
        return {}
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(TokenRow.jti, TokenRow.role, TokenRow.merchant_id).where(
                    TokenRow.jti.in_(sorted(jtis))
                )
            )
        ).all()
    holders = {}
    for jti, role, merchant_id in rows:
        try:
            holders[str(jti)] = party_of(role=role, merchant_id=merchant_id)
        except ValueError:
            continue  # a role this version does not know: withheld from all but the widest
    return holders


def _sees_all(role: Role | None) -> bool:
    return all(may_reach(role, Reach.SEE_TOKEN_IDS, party) for party in Party)


async def _views(engine: AsyncEngine, actor: Actor, entries: list[LogEntry]) -> list[RecordView]:
    records = [json.loads(entry.payload) for entry in entries]
    if _sees_all(actor.role):
        return [RecordView(e, r) for e, r in zip(entries, records, strict=True)]
    members = [_token_members(r) for r in records]
    holders = await _holders(engine, {jti for m in members for jti in m.values()})
    views = []
    for entry, record, tokens in zip(entries, records, members, strict=True):
        hidden = tuple(
            sorted(
                name
                for name, jti in tokens.items()
                if jti not in holders
                or not may_reach(actor.role, Reach.SEE_TOKEN_IDS, holders[jti])
            )
        )
        if hidden:
            record = {**record, **dict.fromkeys(hidden)}
        views.append(RecordView(entry, record, hidden))
    return views


async def read_records(
    engine: AsyncEngine,
    actor: Actor,
    stream: str,
    *,
    merchant_id: str | None = None,
    limit: int = 50,
) -> list[RecordView]:
    """The newest ``limit`` records of ``stream`` (of one merchant if ``merchant_id``), as
    ``actor`` may see them. Raises :class:`ForbiddenError` for a role without
    ``calls.read`` and :class:`ValidationError` for a stream other than ``calls`` and
    ``governance``."""
    actor.may(Action.READ_CALLS)
    if stream not in ("calls", "governance"):
        raise ValidationError("stream must be calls or governance")
    entries = await read_entries(engine, stream, merchant_id=merchant_id, limit=limit)
    return await _views(engine, actor, entries)


async def check_bundle(engine: AsyncEngine, actor: Actor, stream: str, seq: int) -> None:
    """Raise :class:`ForbiddenError` unless ``actor`` may have the evidence bundle of
    ``stream``/``seq``: it may read the log and see every token id the record names. A
    missing record passes (the bundle builder says it is missing). Raises
    :class:`ValidationError` for a stream that does not exist."""
    actor.may(Action.READ_CALLS)
    if stream not in STREAMS:
        raise ValidationError(f"stream must be one of {', '.join(STREAMS)}")
    entry = await read_entry(engine, stream, seq)
    if entry is None or _sees_all(actor.role):
        return
    record = json.loads(entry.payload)
    tokens = _token_members(record)
    holders = await _holders(engine, set(tokens.values()))
    for jti in tokens.values():
        party = holders.get(jti)
        if party is None:  # only those who see every holder's token ids got past above
            raise ForbiddenError(
                f"record {stream}/{seq} names a token this gateway holds no holder for; "
                "its bundle is for the authority and the supervisor",
                boundary=Reach.SEE_TOKEN_IDS.value,
            )
        require_reach(actor.role, Reach.SEE_TOKEN_IDS, party, f"record {stream}/{seq}")
